import Foundation
import Gemma3Tokenizers

/// Text the user hands the tool — arguments, stdin lines, `--file` — must be valid UTF-8, and is
/// refused with the byte offset of the first invalid sequence rather than repaired with U+FFFD
/// (which `CommandLine.arguments` and `readLine` do silently): a prompt is never changed behind
/// the user's back, whichever way it came in.
enum TextInput {
    /// The first command-line argument that is not valid UTF-8, as a one-line message.
    static func invalidArgument() -> String? {
        for i in 1..<Int(CommandLine.argc) {
            guard let arg = CommandLine.unsafeArgv[i] else { continue }
            let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(arg).assumingMemoryBound(to: UInt8.self), count: strlen(arg))
            if let offset = firstInvalidUTF8Offset(bytes) {
                return "argument \(i) is not valid UTF-8: invalid byte sequence at byte offset \(offset)"
            }
        }
        return nil
    }

    /// Lines of standard input (without their newline), each checked to be valid UTF-8.
    struct StandardInputLines {
        private var lineNumber = 0
        private var buffer: [UInt8] = []
        private var start = 0
        private var atEnd = false

        /// The next line, nil at the end of input; throws for a line that is not valid UTF-8.
        mutating func next() throws -> String? {
            while true {
                if let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                    defer { start = newline + 1 }
                    return try line(buffer[start..<newline])
                }
                if atEnd {
                    guard start < buffer.count else { return nil }
                    defer { start = buffer.count }
                    return try line(buffer[start...])
                }
                buffer.removeFirst(start)
                start = 0
                var chunk = [UInt8](repeating: 0, count: 65536)
                let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n <= 0 { atEnd = true } else { buffer += chunk[..<n] }
            }
        }

        private mutating func line(_ bytes: ArraySlice<UInt8>) throws -> String {
            lineNumber += 1
            var bytes = bytes
            if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
            if let offset = bytes.withUnsafeBufferPointer(firstInvalidUTF8Offset) {
                throw TextInputError("line \(lineNumber) of standard input is not valid UTF-8: invalid byte sequence at byte offset \(offset)")
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}

/// A one-line error about text input.
struct TextInputError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
