import Foundation
import Gemma3TestSupport
import Testing
import Gemma3Infrastructure
import Gemma3Tokenizers
@testable import Gemma3Training

/// A stand-in tokenizer for the file-handling tests: one id per byte, end of text = 256.
/// Lets the tests read the documents back out of the token files exactly.
struct ByteTokenizer: DocumentTokenizer {
    var vocabularySize = 257
    var endOfTextTokenID: Int32 = 256
    func encodeOrdinary(utf8: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        for b in utf8 { out.append(Int32(b)) }
    }
}

/// The documents of a token file written with `ByteTokenizer`; fails if the file does not end with EOT.
func byteDocuments(_ url: URL) throws -> [String] {
    let file = try TokenFile(url: url)
    var docs: [String] = []
    var current: [UInt8] = []
    for t in file.withTokens(Array.init) {
        if t == 256 {
            docs.append(String(decoding: current, as: UTF8.self))
            current = []
        } else {
            current.append(UInt8(t))
        }
    }
    #expect(current.isEmpty, "\(url.lastPathComponent) must end with the end-of-text token")
    return docs
}

private let byteRecord = TokenizerRecord(name: "bytes", directory: "", files: [])

/// Runs prepare with the byte tokenizer and no progress output.
@discardableResult
private func prepareBytes(
    train: [URL], validation: ValidationSource, out: URL, chunkBytes: Int? = nil, overwrite: Bool = false,
    tokenizer: ByteTokenizer = ByteTokenizer()
) throws -> PreparationSummary {
    var o = PrepareOptions(trainFiles: train, validation: validation, outputDirectory: out)
    o.chunkBytes = chunkBytes
    o.overwrite = overwrite
    return try DataPreparation.run(o, tokenizer: tokenizer, tokenizerRecord: byteRecord)
}

/// Expects `body` to throw a one-line error whose text contains `fragment`.
private func expectOneLineError(containing fragment: String, _ body: () throws -> Void,
                                sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected an error containing \"\(fragment)\"", sourceLocation: sourceLocation)
    } catch {
        let text = "\(error)"
        #expect(text.contains(fragment), "error was: \(text)", sourceLocation: sourceLocation)
        #expect(!text.contains("\n"), "error must be one line: \(text)", sourceLocation: sourceLocation)
    }
}

@Suite struct PrepareTests {
    // MARK: Against tiktoken

    /// The issue's acceptance test: all of ../shared/data/tinystories, ids equal tiktoken's per
    /// document with 50256 after each, meta.json right. Small chunks put many chunk boundaries in play.
    @Test func tinyStoriesMatchesTiktoken() throws {
        let work = try TestPaths.temporaryDirectory("prepare-ts")
        defer { try? FileManager.default.removeItem(at: work) }
        let train = TestPaths.tinyStories.appendingPathComponent("train.txt")
        let valid = TestPaths.tinyStories.appendingPathComponent("valid.txt")
        let out = work.appendingPathComponent("out")
        var o = PrepareOptions(trainFiles: [train], validation: .files([valid]), outputDirectory: out)
            o.chunkBytes = 64 << 10
        let gpt2 = try GPT2Tokenizer(directory: TestPaths.gpt2)
        let s = try DataPreparation.run(o, tokenizer: gpt2, tokenizerRecord: .gpt2(directory: TestPaths.gpt2))
        // Story counts from ../shared/data/tinystories/SOURCES.md.
        #expect(s.meta.train.documents == 4042)
        #expect(s.meta.val.documents == 400)
        #expect(s.meta.vocabSize == 50257)
        #expect(directoryEntries(out) == ["meta.json", "train.bin", "val.bin"])

        let result = try TiktokenCheck.check(outputDirectory: out, train: [train], val: [valid], fraction: nil)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("OK"), "\(result.output)")

        // TokenFile reads what was written, and meta.json round-trips.
        let tokens = try TokenFile(url: out.appendingPathComponent("train.bin"))
        #expect(tokens.count == s.meta.train.tokens)
        #expect(tokens[tokens.count - 1] == 50256)
        let raw = try Data(contentsOf: out.appendingPathComponent("train.bin"))
        #expect(raw.count == tokens.count * 2)
        #expect(UInt16(raw[2]) | UInt16(raw[3]) << 8 == tokens[1])
        var window = [Int32](repeating: 0, count: 5)
        window.withUnsafeMutableBufferPointer { tokens.copyTokens(from: 0, count: 5, into: $0.baseAddress!) }
        #expect(window == (0..<5).map { Int32(tokens[$0]) })
        #expect(try DatasetMeta.load(directory: out) == s.meta)
    }

    /// JSON Lines input (escapes, surrogate pairs, extra and nested fields, CRLF, blank lines) and
    /// a validation fraction, checked against tiktoken and an independent re-implementation of the split.
    @Test func jsonLinesWithValidationFractionMatchesTiktoken() throws {
        let work = try TestPaths.temporaryDirectory("prepare-jsonl")
        defer { try? FileManager.default.removeItem(at: work) }
        let jsonl = work.appendingPathComponent("stories.jsonl")
        let made = try TiktokenCheck.makeJSONLines(from: TestPaths.tinyStories.appendingPathComponent("valid.txt"), to: jsonl)
        #expect(made.status == 0, "\(made.output)")
        let out = work.appendingPathComponent("out")
        var o = PrepareOptions(trainFiles: [jsonl], validation: .fraction(0.25), outputDirectory: out)
            o.chunkBytes = 16 << 10
        let gpt2 = try GPT2Tokenizer(directory: TestPaths.gpt2)
        let s = try DataPreparation.run(o, tokenizer: gpt2, tokenizerRecord: .gpt2(directory: TestPaths.gpt2))
        #expect(s.meta.train.documents + s.meta.val.documents == 401)  // 400 stories + the emoji record
        let share = Double(s.meta.val.documents) / 401
        #expect(share > 0.18 && share < 0.32, "val share \(share)")
        #expect(s.meta.valFraction == 0.25)
        let result = try TiktokenCheck.check(outputDirectory: out, train: [jsonl], val: [], fraction: 0.25)
        #expect(result.status == 0, "\(result.output)")
    }

    // MARK: Document rules (byte tokenizer)

    @Test func separatorRules() throws {
        let work = try TestPaths.temporaryDirectory("prepare-rules")
        defer { try? FileManager.default.removeItem(at: work) }
        let text = "\n  First story.\nSecond line.  \n<|endoftext|>\n"  // leading/trailing whitespace trimmed
            + "<|endoftext|>\n"                                           // empty document: skipped
            + " \t \n<|endoftext|>\r\n"                                   // whitespace only; CRLF separator
            + "Inline <|endoftext|> stays text\r\n<|endoftext|> not a separator\n <|endoftext|>\n<|endoftext|>\n"
            + "Last story without separator\n<|endoftext|>"              // separator at EOF, no newline
        let valText = "Only one\n\n"
        let train = work.appendingPathComponent("train.txt"), val = work.appendingPathComponent("val.txt")
        try Data(text.utf8).write(to: train)
        try Data(valText.utf8).write(to: val)
        let out = work.appendingPathComponent("out")
        let s = try prepareBytes(train: [train], validation: .files([val]), out: out)
        let expected = [
            "First story.\nSecond line.",
            "Inline <|endoftext|> stays text\r\n<|endoftext|> not a separator\n <|endoftext|>",
            "Last story without separator",
        ]
        #expect(try byteDocuments(out.appendingPathComponent("train.bin")) == expected)
        #expect(try byteDocuments(out.appendingPathComponent("val.bin")) == ["Only one"])
        #expect(s.meta.train.documents == 3)
        #expect(s.meta.train.bytes == expected.map(\.utf8.count).reduce(0, +))
        #expect(s.meta.train.tokens == s.meta.train.bytes + 3)
        #expect(s.meta.train.sources.first?.sha256 == SHA256Hasher.hex(of: Data(text.utf8)))
    }

    /// Many small chunks and a document bigger than a chunk give the same documents as the rules say.
    @Test func chunkBoundariesKeepDocumentsWholeAndInOrder() throws {
        let work = try TestPaths.temporaryDirectory("prepare-chunks")
        defer { try? FileManager.default.removeItem(at: work) }
        var docs = (0..<3000).map { "Story number \($0): " + String(repeating: "la ", count: $0 % 50) + "end." }
        docs[1234] = String(repeating: "A very long story. ", count: 2000)  // ~38 kB, larger than a chunk
        let text = docs.map { $0 + "\n<|endoftext|>\n" }.joined()
        let train = work.appendingPathComponent("train.txt")
        try Data(text.utf8).write(to: train)
        let small = work.appendingPathComponent("small"), large = work.appendingPathComponent("large")
        try prepareBytes(train: [train], validation: .fraction(0.1), out: small, chunkBytes: 4096)
        try prepareBytes(train: [train], validation: .fraction(0.1), out: large, chunkBytes: 64 << 20)
        let trimmed = docs.map { $0.trimmingCharacters(in: .whitespaces) }
        let smallTrain = try byteDocuments(small.appendingPathComponent("train.bin"))
        let smallVal = try byteDocuments(small.appendingPathComponent("val.bin"))
        #expect(smallTrain.count + smallVal.count == docs.count)
        #expect(Set(smallTrain).isDisjoint(with: smallVal))
        // Each split keeps input order.
        let position = Dictionary(uniqueKeysWithValues: trimmed.enumerated().map { ($1, $0) })
        #expect(smallTrain.map { position[$0]! } == smallTrain.map { position[$0]! }.sorted())
        #expect(smallVal.map { position[$0]! } == smallVal.map { position[$0]! }.sorted())
        #expect(try byteDocuments(large.appendingPathComponent("train.bin")) == smallTrain)
        #expect(try byteDocuments(large.appendingPathComponent("val.bin")) == smallVal)
    }

    // MARK: Bad input leaves nothing behind

    @Test func invalidUTF8NamesFileAndOffset() throws {
        let work = try TestPaths.temporaryDirectory("prepare-utf8")
        defer { try? FileManager.default.removeItem(at: work) }
        var bytes = [UInt8]((0..<2000).map { "Story \($0) is fine.\n<|endoftext|>\n" }.joined().utf8)
        let bad = bytes.count - 700  // well past the first chunks
        bytes[bad] = 0xC3
        bytes[bad + 1] = 0x28  // not a continuation byte
        let train = work.appendingPathComponent("train.txt")
        try Data(bytes).write(to: train)
        let out = work.appendingPathComponent("out")
        expectOneLineError(containing: "\(train.path): invalid UTF-8 at byte offset \(bad)") {
            try prepareBytes(train: [train], validation: .fraction(0.5), out: out, chunkBytes: 4096)
        }
        #expect(!FileManager.default.fileExists(atPath: out.path), "no output directory may be left")
    }

    @Test func missingEmptyAndDocumentlessFilesFail() throws {
        let work = try TestPaths.temporaryDirectory("prepare-missing")
        defer { try? FileManager.default.removeItem(at: work) }
        let good = work.appendingPathComponent("good.txt")
        try Data("A story.\n<|endoftext|>\n".utf8).write(to: good)
        let empty = work.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        let blank = work.appendingPathComponent("blank.txt")
        try Data("\n<|endoftext|>\n  \n<|endoftext|>\n".utf8).write(to: blank)
        let missing = work.appendingPathComponent("missing.txt")
        let out = work.appendingPathComponent("out")
        expectOneLineError(containing: "\(missing.path): no such file") {
            try prepareBytes(train: [good], validation: .files([missing]), out: out)
        }
        expectOneLineError(containing: "\(empty.path) is empty") {
            try prepareBytes(train: [empty], validation: .files([good]), out: out)
        }
        expectOneLineError(containing: "\(blank.path) contains no documents") {
            try prepareBytes(train: [good], validation: .files([blank]), out: out)
        }
        expectOneLineError(containing: "val split would be empty") {
            try prepareBytes(train: [good], validation: .fraction(1e-9), out: out)
        }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        // An existing output directory stays, without temporary files.
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        expectOneLineError(containing: "is empty") {
            try prepareBytes(train: [empty], validation: .files([good]), out: out)
        }
        #expect(directoryEntries(out).isEmpty)
    }

    @Test func refusesToOverwriteWithoutForce() throws {
        let work = try TestPaths.temporaryDirectory("prepare-force")
        defer { try? FileManager.default.removeItem(at: work) }
        let a = work.appendingPathComponent("a.txt"), b = work.appendingPathComponent("b.txt")
        try Data("Alpha.\n<|endoftext|>\n".utf8).write(to: a)
        try Data("Beta.\n<|endoftext|>\n".utf8).write(to: b)
        let out = work.appendingPathComponent("out")
        try prepareBytes(train: [a], validation: .files([b]), out: out)
        expectOneLineError(containing: "train.bin already exists; pass --force") {
            try prepareBytes(train: [b], validation: .files([a]), out: out)
        }
        #expect(try byteDocuments(out.appendingPathComponent("train.bin")) == ["Alpha."])
        // A failing run with overwrite allowed keeps the previous outputs intact.
        let empty = work.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        #expect(throws: (any Error).self) { try prepareBytes(train: [empty], validation: .files([a]), out: out, overwrite: true) }
        #expect(try byteDocuments(out.appendingPathComponent("train.bin")) == ["Alpha."])
        try prepareBytes(train: [b], validation: .files([a]), out: out, overwrite: true)
        #expect(try byteDocuments(out.appendingPathComponent("train.bin")) == ["Beta."])
        #expect(directoryEntries(out) == ["meta.json", "train.bin", "val.bin"])
    }

    @Test func vocabularyAboveUInt16Fails() throws {
        let work = try TestPaths.temporaryDirectory("prepare-vocab")
        defer { try? FileManager.default.removeItem(at: work) }
        let a = work.appendingPathComponent("a.txt")
        try Data("Alpha.\n".utf8).write(to: a)
        let out = work.appendingPathComponent("out")
        expectOneLineError(containing: "70000 tokens") {
            try prepareBytes(train: [a], validation: .files([a]), out: out,
                             tokenizer: ByteTokenizer(vocabularySize: 70000, endOfTextTokenID: 256))
        }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        // 65536 ids (0...65535) still fit.
        try prepareBytes(train: [a], validation: .files([a]), out: out,
                         tokenizer: ByteTokenizer(vocabularySize: 65536, endOfTextTokenID: 65535))
        let file = try TokenFile(url: out.appendingPathComponent("train.bin"))
        #expect(file[file.count - 1] == 65535)
    }

    @Test func jsonLinesErrorsNameTheLine() throws {
        let work = try TestPaths.temporaryDirectory("prepare-jsonerr")
        defer { try? FileManager.default.removeItem(at: work) }
        let good = (0..<3000).map { "{\"text\": \"Story \($0).\"}\n" }.joined()
        let cases: [(String, String)] = [
            ("{\"title\": \"no text\"}", "record has no \"text\" field"),
            ("{\"text\": 42}", "\"text\" is not a string"),
            ("{\"text\": \"unterminated}", "unterminated string"),
            ("{\"text\": \"lone \\ud800 surrogate\"}", "unpaired UTF-16 surrogate"),
            ("[{\"text\": \"array\"}]", "a JSON array"),
            ("{\"text\": \"ok\"} trailing", "unexpected data"),
        ]
        for (k, (bad, message)) in cases.enumerated() {
            let file = work.appendingPathComponent("in\(k).jsonl")
            try Data((good + bad + "\n" + good).utf8).write(to: file)
            let out = work.appendingPathComponent("out\(k)")
            expectOneLineError(containing: "\(file.path):3001: \(message)") {
                try prepareBytes(train: [file], validation: .fraction(0.5), out: out, chunkBytes: 4096)
            }
            #expect(!FileManager.default.fileExists(atPath: out.path))
        }
    }

    @Test func tokenFileRejectsOddSizesAndReadsLittleEndian() throws {
        let work = try TestPaths.temporaryDirectory("tokenfile")
        defer { try? FileManager.default.removeItem(at: work) }
        let odd = work.appendingPathComponent("odd.bin")
        try Data([1, 2, 3]).write(to: odd)
        expectOneLineError(containing: "not a whole number of uint16 tokens") { _ = try TokenFile(url: odd) }
        expectOneLineError(containing: "no such file") { _ = try TokenFile(url: work.appendingPathComponent("none.bin")) }
        let ok = work.appendingPathComponent("ok.bin")
        try Data([0x01, 0x02, 0xFF, 0xFF, 0x56, 0xC4]).write(to: ok)
        let f = try TokenFile(url: ok)
        #expect(f.count == 3)
        #expect(f.withTokens(Array.init) == [0x0201, 0xFFFF, 0xC456])
        #expect(f.maximumToken() == 0xFFFF)
        let empty = work.appendingPathComponent("empty.bin")
        try Data().write(to: empty)
        #expect(try TokenFile(url: empty).count == 0)
    }
}
