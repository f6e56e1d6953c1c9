import Foundation
import Gemma3Infrastructure
import Gemma3Tokenizers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a text corpus file stores its documents.
public enum CorpusFormat: String, Sendable, Codable {
    /// TinyStories `.txt`: documents separated by lines that are exactly `<|endoftext|>`
    /// (a trailing `\r` on that line is allowed).
    case endOfTextSeparated = "txt"
    /// JSON Lines: one JSON object per line with a string field `"text"`; blank lines are ignored.
    case jsonLines = "jsonl"

    /// `.jsonl`/`.json` extension or a first non-blank byte `{` means JSON Lines; anything else is text.
    public static func detect(url: URL, firstBytes: UnsafeRawBufferPointer) -> CorpusFormat {
        let ext = url.pathExtension.lowercased()
        if ext == "jsonl" || ext == "json" || ext == "ndjson" { return .jsonLines }
        for b in firstBytes {
            if b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { continue }
            return b == UInt8(ascii: "{") ? .jsonLines : .endOfTextSeparated
        }
        return .endOfTextSeparated
    }
}

/// The separator line of TinyStories text files.
let endOfTextMarker: [UInt8] = Array("<|endoftext|>".utf8)

@inline(__always) func isASCIIWhitespace(_ b: UInt8) -> Bool {
    b == 0x20 || (b >= 0x09 && b <= 0x0D)  // space, \t \n \v \f \r
}

/// Removes leading and trailing ASCII whitespace (space, \t, \n, \v, \f, \r) — the rule that turns the
/// text between two separators into a document. Unicode spaces (NBSP, U+3000, …) are kept.
@inline(__always) func trimmedRange(_ p: UnsafePointer<UInt8>, _ lo: Int, _ hi: Int) -> Range<Int> {
    var a = lo, b = hi
    while a < b && isASCIIWhitespace(p[a]) { a += 1 }
    while b > a && isASCIIWhitespace(p[b - 1]) { b -= 1 }
    return a..<b
}

// MARK: - Reading a corpus in chunks cut at document boundaries

/// Streams a corpus file as chunks of roughly `targetBytes`, each ending on a document boundary
/// (after a separator line, or after a newline for JSON Lines), so chunks can be tokenized
/// independently and in parallel. Memory stays bounded by the chunk size (or the largest document).
/// Also computes the file's SHA-256 on the way.
final class CorpusChunkReader {
    let url: URL
    let format: CorpusFormat
    let fileSize: Int64
    private let fd: Int32
    private let targetBytes: Int
    private var carry: [UInt8] = []
    private var carryOffset: Int64 = 0
    private var atEOF = false
    private var hasher = SHA256Hasher()
    private let readBuffer: UnsafeMutableRawBufferPointer

    /// Bytes read from the file so far.
    private(set) var bytesRead: Int64 = 0

    init(url: URL, targetBytes: Int, format: CorpusFormat? = nil) throws {
        self.url = url
        self.targetBytes = max(4096, targetBytes)
        fd = open(url.path, O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { throw FileIOError.notFound(url.path) }
            throw FileIOError.cannotOpen(url.path, errno)
        }
        var st = stat()
        fstat(fd, &st)
        fileSize = Int64(st.st_size)
        readBuffer = .allocate(byteCount: 1 << 20, alignment: 64)
        if let format {
            self.format = format
        } else {
            // Peek at the start to detect the format, then rewind.
            let n = pread(fd, readBuffer.baseAddress, 256, 0)
            self.format = CorpusFormat.detect(url: url, firstBytes: UnsafeRawBufferPointer(rebasing: readBuffer[0..<max(0, n)]))
        }
    }

    deinit {
        close(fd)
        readBuffer.deallocate()
    }

    /// Hex SHA-256 of the whole file; valid once `next()` has returned nil.
    private(set) var sha256Hex: String = ""

    /// The next chunk, the file offset of its first byte and whether it ends the file; nil after the end.
    func next() throws -> (bytes: [UInt8], fileOffset: Int64, isFinal: Bool)? {
        var buffer = carry
        carry = []
        var want = targetBytes
        while true {
            while buffer.count < want && !atEOF {
                let n = read(fd, readBuffer.baseAddress, min(readBuffer.count, want - buffer.count))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileIOError.readFailed(url.path, errno)
                }
                if n == 0 {
                    atEOF = true
                    sha256Hex = hasher.finalizeHex()
                    break
                }
                let piece = UnsafeRawBufferPointer(rebasing: readBuffer[0..<n])
                hasher.update(piece)
                buffer.append(contentsOf: piece)
                bytesRead += Int64(n)
            }
            let offset = carryOffset
            if atEOF {
                if buffer.isEmpty { return nil }
                carryOffset += Int64(buffer.count)
                return (buffer, offset, true)
            }
            if let cut = lastBoundary(buffer), cut > 0 {
                carry = Array(buffer[cut...])
                buffer.removeSubrange(cut...)
                carryOffset += Int64(cut)
                return (buffer, offset, false)
            }
            want = buffer.count * 2  // one huge document: read on until a boundary turns up
        }
    }

    /// Index just after the last document boundary in `b`, if any.
    private func lastBoundary(_ b: [UInt8]) -> Int? {
        b.withUnsafeBufferPointer { buf -> Int? in
            let p = buf.baseAddress!
            let n = buf.count
            switch format {
            case .jsonLines:
                var i = n - 1
                while i >= 0 {
                    if p[i] == 0x0A { return i + 1 }
                    i -= 1
                }
                return nil
            case .endOfTextSeparated:
                // Walk line starts backwards; a separator line needs its terminator inside the buffer.
                var i = n - 1
                while i >= 0 {
                    if i == 0 || p[i - 1] == 0x0A, let end = separatorLineEnd(p, n, i, atEOF: false) {
                        return end
                    }
                    i -= 1
                }
                return nil
            }
        }
    }
}

/// If a separator line `<|endoftext|>` starts at `i` (a line start), the index just after its line
/// terminator. At the end of the data the terminator may be missing when `atEOF` is true.
@inline(__always)
func separatorLineEnd(_ p: UnsafePointer<UInt8>, _ n: Int, _ i: Int, atEOF: Bool) -> Int? {
    let m = 13  // "<|endoftext|>".utf8.count
    guard i + m <= n, p[i] == UInt8(ascii: "<"), memcmp(p + i, endOfTextMarker, m) == 0 else { return nil }
    let j = i + m
    if j == n { return atEOF ? j : nil }
    if p[j] == 0x0A { return j + 1 }
    if p[j] == 0x0D {
        if j + 1 == n { return atEOF ? j + 1 : nil }
        if p[j + 1] == 0x0A { return j + 2 }
    }
    return nil
}

/// Calls `body` with the trimmed, non-empty documents of a text chunk, in order.
/// `isFinal`: the chunk ends the file (a separator without a line break may end it).
func forEachSeparatedDocument(
    _ chunk: UnsafeBufferPointer<UInt8>, isFinal: Bool, _ body: (UnsafeBufferPointer<UInt8>) throws -> Void
) rethrows {
    guard let p = chunk.baseAddress else { return }
    let n = chunk.count
    var docStart = 0
    var searchFrom = 0
    while searchFrom < n {
        // memchr for the '<' that starts a separator (memmem is not exported by Glibc's module map).
        guard let hit = memchr(p + searchFrom, Int32(UInt8(ascii: "<")), n - searchFrom) else { break }
        let q = UnsafeRawPointer(hit).assumingMemoryBound(to: UInt8.self) - p
        if q == 0 || p[q - 1] == 0x0A, let end = separatorLineEnd(p, n, q, atEOF: isFinal) {
            let r = trimmedRange(p, docStart, q)
            if !r.isEmpty { try body(UnsafeBufferPointer(rebasing: chunk[r])) }
            docStart = end
            searchFrom = end
        } else {
            searchFrom = q + 1
        }
    }
    let r = trimmedRange(p, docStart, n)
    if !r.isEmpty { try body(UnsafeBufferPointer(rebasing: chunk[r])) }
}

// MARK: - JSON Lines

/// A malformed JSON Lines record; `line` is 0-based within the chunk it was found in.
struct JSONLineError: Error {
    var line: Int
    var message: String
}

/// Calls `body` with the trimmed, non-empty `"text"` of every record of a JSON Lines chunk, in order.
/// `scratch` receives the decoded text (escape sequences resolved) and is reused between lines.
func forEachJSONLinesDocument(
    _ chunk: UnsafeBufferPointer<UInt8>, scratch: inout [UInt8], _ body: (UnsafeBufferPointer<UInt8>) -> Void
) throws(JSONLineError) {
    guard let p = chunk.baseAddress else { return }
    let n = chunk.count
    var lineStart = 0
    var lineIndex = 0
    while lineStart < n {
        var lineEnd = lineStart
        if let nl = memchr(p + lineStart, 0x0A, n - lineStart) {
            lineEnd = UnsafeRawPointer(nl).assumingMemoryBound(to: UInt8.self) - p
        } else {
            lineEnd = n
        }
        let line = UnsafeBufferPointer(rebasing: chunk[lineStart..<lineEnd])
        if !line.allSatisfy(isASCIIWhitespace) {
            scratch.removeAll(keepingCapacity: true)
            var parser = JSONRecordParser(line)
            do {
                try parser.parseTextField(into: &scratch)
            } catch {
                throw JSONLineError(line: lineIndex, message: error.message)
            }
            scratch.withUnsafeBufferPointer { s in
                let r = trimmedRange(s.baseAddress ?? p, 0, s.count)
                if !r.isEmpty { body(UnsafeBufferPointer(rebasing: s[r])) }
            }
        }
        lineStart = lineEnd + 1
        lineIndex += 1
    }
}

struct JSONSyntaxError: Error {
    var message: String
}

/// A small strict JSON reader for one JSON Lines record: it checks the whole object and decodes
/// only the `"text"` member's string (other members are validated and skipped).
struct JSONRecordParser {
    private let p: UnsafeBufferPointer<UInt8>
    private var i = 0

    init(_ line: UnsafeBufferPointer<UInt8>) { p = line }

    private static let textKey: [UInt8] = Array("text".utf8)

    mutating func parseTextField(into out: inout [UInt8]) throws(JSONSyntaxError) {
        var found = false
        var key: [UInt8] = []
        skipSpace()
        guard peek() == UInt8(ascii: "{") else {
            if peek() == UInt8(ascii: "[") {
                throw JSONSyntaxError(message: "a JSON array, not one object per line (JSON Lines expected)")
            }
            throw JSONSyntaxError(message: "expected a JSON object with a \"text\" field")
        }
        i += 1
        skipSpace()
        if peek() == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipSpace()
                guard peek() == UInt8(ascii: "\"") else { throw err("expected a member name") }
                key.removeAll(keepingCapacity: true)
                try parseString(into: &key)
                skipSpace()
                guard peek() == UInt8(ascii: ":") else { throw err("expected ':'") }
                i += 1
                skipSpace()
                if key == Self.textKey {
                    guard peek() == UInt8(ascii: "\"") else { throw err("\"text\" is not a string") }
                    out.removeAll(keepingCapacity: true)  // a repeated key: the last one wins, as in Python
                    try parseString(into: &out)
                    found = true
                } else {
                    try skipValue(depth: 0)
                }
                skipSpace()
                if peek() == UInt8(ascii: ",") { i += 1; continue }
                if peek() == UInt8(ascii: "}") { i += 1; break }
                throw err("expected ',' or '}'")
            }
        }
        skipSpace()
        guard i == p.count else { throw err("unexpected data after the JSON object") }
        guard found else { throw JSONSyntaxError(message: "record has no \"text\" field") }
    }

    private func err(_ m: String) -> JSONSyntaxError {
        JSONSyntaxError(message: "\(m) at column \(i + 1)")
    }

    @inline(__always) private func peek() -> UInt8 { i < p.count ? p[i] : 0 }

    @inline(__always) private mutating func skipSpace() {
        while i < p.count, p[i] == 0x20 || p[i] == 0x09 || p[i] == 0x0A || p[i] == 0x0D { i += 1 }
    }

    private mutating func parseString(into out: inout [UInt8]) throws(JSONSyntaxError) {
        i += 1  // opening quote
        while true {
            // Copy the run of plain bytes in one go.
            let runStart = i
            while i < p.count, p[i] != UInt8(ascii: "\""), p[i] != UInt8(ascii: "\\"), p[i] >= 0x20 { i += 1 }
            if i > runStart { out.append(contentsOf: UnsafeBufferPointer(rebasing: p[runStart..<i])) }
            guard i < p.count else { throw err("unterminated string") }
            let c = p[i]
            if c == UInt8(ascii: "\"") { i += 1; return }
            if c < 0x20 { throw err("control character in string") }
            // Backslash escape.
            guard i + 1 < p.count else { throw err("unterminated escape") }
            let e = p[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if scalar >= 0xD800 && scalar <= 0xDBFF {
                    guard i + 1 < p.count, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u") else {
                        throw err("unpaired UTF-16 surrogate escape (not representable in UTF-8)")
                    }
                    i += 2
                    let low = try hex4()
                    guard low >= 0xDC00 && low <= 0xDFFF else {
                        throw err("unpaired UTF-16 surrogate escape (not representable in UTF-8)")
                    }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                    throw err("unpaired UTF-16 surrogate escape (not representable in UTF-8)")
                }
                appendUTF8(scalar, to: &out)
            default:
                throw err("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
            }
        }
    }

    private mutating func hex4() throws(JSONSyntaxError) -> UInt32 {
        guard i + 4 <= p.count else { throw err("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = p[i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw err("bad hex digit in \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private func appendUTF8(_ s: UInt32, to out: inout [UInt8]) {
        if s < 0x80 {
            out.append(UInt8(s))
        } else if s < 0x800 {
            out.append(UInt8(0xC0 | (s >> 6)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        } else if s < 0x10000 {
            out.append(UInt8(0xE0 | (s >> 12)))
            out.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        } else {
            out.append(UInt8(0xF0 | (s >> 18)))
            out.append(UInt8(0x80 | ((s >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        }
    }

    private mutating func skipValue(depth: Int) throws(JSONSyntaxError) {
        guard depth < 256 else { throw err("nesting too deep") }
        skipSpace()
        let c = peek()
        switch c {
        case UInt8(ascii: "\""):
            var sink: [UInt8] = []
            try parseString(into: &sink)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let close = c == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            i += 1
            skipSpace()
            if peek() == close { i += 1; return }
            while true {
                skipSpace()
                if c == UInt8(ascii: "{") {
                    guard peek() == UInt8(ascii: "\"") else { throw err("expected a member name") }
                    var sink: [UInt8] = []
                    try parseString(into: &sink)
                    skipSpace()
                    guard peek() == UInt8(ascii: ":") else { throw err("expected ':'") }
                    i += 1
                }
                try skipValue(depth: depth + 1)
                skipSpace()
                if peek() == UInt8(ascii: ",") { i += 1; continue }
                if peek() == close { i += 1; return }
                throw err("expected ',' or '\(Character(Unicode.Scalar(close)))'")
            }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), 0x30...0x39:
            let start = i
            i += 1
            while i < p.count, (p[i] >= 0x30 && p[i] <= 0x39) || p[i] == UInt8(ascii: ".")
                || p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E")
                || p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i += 1 }
            if i == start + 1 && c == UInt8(ascii: "-") { throw err("bad number") }
        default:
            throw err("expected a JSON value")
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= p.count, memcmp(p.baseAddress! + i, word.utf8Start, n) == 0 else {
            throw err("expected a JSON value")
        }
        i += n
    }
}
