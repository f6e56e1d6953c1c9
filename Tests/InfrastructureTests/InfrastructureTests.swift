import Foundation
import Gemma3Infrastructure
import Testing

@Suite struct InfrastructureTests {
    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-infra-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test func jsonStringLiteralIsReadBackByJSONSerialization() throws {
        let samples = ["", "plain", "quote \" and backslash \\", "tab\tnewline\ncr\r", "\u{01}\u{1F}\u{08}\u{0C}", "é 😀 /slash"]
        for s in samples {
            let literal = jsonStringLiteral(s)
            let decoded = try JSONSerialization.jsonObject(with: Data("[\(literal)]".utf8)) as? [String]
            #expect(decoded == [s], "\(literal)")
        }
        #expect(jsonStringLiteral("a\"b") == #""a\"b""#)
    }

    @Test func medianAndDuration() {
        #expect(median([3, 1, 2]) == 2)
        #expect(median([4, 1, 3, 2]) == 2.5)
        #expect(median([]).isNaN)
        #expect(formatDuration(0) == "0:00")
        #expect(formatDuration(65.4) == "1:05")
        #expect(formatDuration(3 * 3600 + 62) == "3:01:02")
        #expect(formatDuration(.nan) == "?" && formatDuration(-1) == "?" && formatDuration(.infinity) == "?")
    }

    @Test func atomicWriterLeavesTheDestinationUntouchedUntilCommit() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.bin")
        try AtomicFileWriter.write(Data("old".utf8), to: target)
        let writer = try AtomicFileWriter(destination: target)
        try writer.write(Data("new".utf8))
        #expect(try Data(contentsOf: target) == Data("old".utf8))
        try writer.commit()
        #expect(try Data(contentsOf: target) == Data("new".utf8))
        // A throwing body aborts: the old file stays, no temporary file is left.
        struct Stop: Error {}
        #expect(throws: Stop.self) { try AtomicFileWriter.write(to: target) { try $0.write(Data("x".utf8)); throw Stop() } }
        #expect(try Data(contentsOf: target) == Data("new".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["out.bin"])
    }

    @Test func removeAllDeletesRegisteredFilesAndEmptyDirectories() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let outputs = dir.appendingPathComponent("outputs")
        try FileManager.default.createDirectory(at: outputs, withIntermediateDirectories: true)
        TemporaryFiles.registerDirectory(outputs.path)
        let writer = try AtomicFileWriter(destination: outputs.appendingPathComponent("a.bin"))
        try writer.write(Data(count: 10))
        #expect(FileManager.default.fileExists(atPath: writer.temporaryURL.path))
        TemporaryFiles.removeAll()
        #expect(!FileManager.default.fileExists(atPath: writer.temporaryURL.path))
        #expect(!FileManager.default.fileExists(atPath: outputs.path))
        writer.abort()
    }

    @Test func sha256OfAFileEqualsTheOneCallDigest() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bytes = Data((0..<(5 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })  // more than one read
        let url = dir.appendingPathComponent("f")
        try bytes.write(to: url)
        #expect(try SHA256Hasher.hex(ofFile: url) == SHA256Hasher.hex(of: bytes))
        #expect(throws: FileIOError.self) { try SHA256Hasher.hex(ofFile: dir.appendingPathComponent("missing")) }
    }
}
