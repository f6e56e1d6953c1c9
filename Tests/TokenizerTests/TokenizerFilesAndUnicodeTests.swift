import Foundation
import Testing
import Gemma3Infrastructure
@testable import Gemma3Tokenizers

/// GPT-2's byte-to-unicode alphabet, written out independently of the library: printable bytes
/// stand for themselves, the others (in byte order) for U+0100, U+0101, ...
let byteLevelCharacters: [Unicode.Scalar] = {
    var characters: [Unicode.Scalar] = []
    var extra: UInt32 = 0
    for b in 0 ..< 256 {
        if (0x21 ... 0x7E).contains(b) || (0xA1 ... 0xAC).contains(b) || (0xAE ... 0xFF).contains(b) {
            characters.append(Unicode.Scalar(UInt32(b))!)
        } else {
            characters.append(Unicode.Scalar(256 + extra)!)
            extra += 1
        }
    }
    return characters
}()

func byteLevelCharacter(_ b: UInt8) -> Unicode.Scalar { byteLevelCharacters[Int(b)] }

func byteLevelString(_ bytes: [UInt8]) -> String {
    var scalars = String.UnicodeScalarView()
    for b in bytes { scalars.append(byteLevelCharacter(b)) }
    return String(scalars)
}

func temporaryDirectory(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Runs a python3 script (argv[1] = input file) and returns its stdout; the test fails if python3 is missing.
func runPython(_ script: String, input: Data) throws -> Data {
    let directory = try temporaryDirectory("py")
    defer { try? FileManager.default.removeItem(at: directory) }
    let inputURL = directory.appendingPathComponent("input.bin")
    try input.write(to: inputURL)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script, inputURL.path]
    let stdout = Pipe()
    process.standardOutput = stdout
    try process.run()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    if process.terminationStatus != 0 {
        throw Tiktoken.Unavailable(description: "python3 failed (exit \(process.terminationStatus)); python3 is required for these tests")
    }
    return output
}

@Suite("Tokenizer files, Unicode classes, streaming, UTF-8, checksums")
struct TokenizerFilesAndUnicodeTests {
    /// The pre-tokenizer's \p{L}, \p{N} and \s must be the Rust regex crate's (tiktoken's). With a
    /// custom vocabulary whose only merges glue "a", "1" or "!" to any byte, the ids show whether
    /// each scalar c joined the letter, number or other run around it in "a c a 1 c 1 ! c !",
    /// or stood alone (whitespace). Covers every scalar of planes 0-3 and 14.
    @Test("the letter/number/whitespace classes of every scalar in planes 0-3 and 14 agree with tiktoken")
    func unicodeClassesMatchTiktoken() throws {
        var vocabulary: [(token: String, id: Int)] = (0 ..< 256).map { (byteLevelString([UInt8($0)]), $0) }
        var merges: [(String, String)] = []
        var ranks: [[UInt8]: Int] = [:]
        for b in 0 ..< 256 { ranks[[UInt8(b)]] = b }
        for glue in [UInt8(ascii: "a"), UInt8(ascii: "1"), UInt8(ascii: "!")] {
            for b in 0 ..< 256 {
                for pair in [[glue, UInt8(b)], [UInt8(b), glue]] where ranks[pair] == nil {
                    let id = 256 + merges.count
                    ranks[pair] = id
                    merges.append((byteLevelString([pair[0]]), byteLevelString([pair[1]])))
                    vocabulary.append((byteLevelString(pair), id))
                }
            }
        }
        let custom = try GPT2Tokenizer(vocabulary: vocabulary, merges: merges)

        let ranges: [ClosedRange<UInt32>] = [0 ... 0xD7FF, 0xE000 ... 0x3FFFF, 0xE0000 ... 0xE0FFF]
        var blocks: [(UInt32, UInt32, String)] = []
        for range in ranges {
            var start = range.lowerBound
            while start <= range.upperBound {
                let end = min(range.upperBound, start + 4095)
                var text = String.UnicodeScalarView()
                for v in start ... end {
                    let c = Unicode.Scalar(v)!
                    text.append(contentsOf: ["a", c, "a", "1", c, "1", "!", c, "!"] as [Unicode.Scalar])
                }
                blocks.append((start, end, String(text)))
                start = end + 1
            }
        }
        let reference = try Tiktoken.encode(blocks.map { TiktokenJob(text: $0.2) }, ranks: ranks)
        var mismatched: [String] = []
        for (k, block) in blocks.enumerated() where custom.encodeOrdinary(block.2) != reference[k] {
            mismatched.append(String(format: "U+%04X...U+%04X", block.0, block.1))
        }
        #expect(mismatched.isEmpty, "scalar classes differ from tiktoken's regex in \(mismatched)")
        #expect(blocks.count > 60)
    }

    @Test("vocabulary entries that no merge makes are never BPE output; <|endoftext|> is added when missing")
    func unmergeableEntries() throws {
        // "ab" is in the vocabulary but no rule makes it (like <|endoftext|> in GPT-2's files);
        // "ac" and "acb" are made by rules.
        var vocabulary: [(token: String, id: Int)] = (0 ..< 256).map { (byteLevelString([UInt8($0)]), $0) }
        vocabulary += [("ab", 256), ("ac", 257), ("acb", 258)]
        let custom = try GPT2Tokenizer(vocabulary: vocabulary, merges: [("a", "c"), ("ac", "b")])
        let ranks: [[UInt8]: Int] = Dictionary(uniqueKeysWithValues: (0 ..< 256).map { ([UInt8($0)], $0) })
            .merging([[0x61, 0x63]: 257, [0x61, 0x63, 0x62]: 258]) { a, _ in a }
        let texts = ["ab", "ab ac abac acb", "cab acab", "aab", "b ab", String(repeating: "ab", count: 40) + "acb"]
        let reference = try Tiktoken.encode(texts.map { TiktokenJob(text: $0) }, ranks: ranks)
        for (text, expected) in zip(texts, reference) {
            #expect(custom.encodeOrdinary(text) == expected, "\(text)")
            #expect(!custom.encodeOrdinary(text).contains(256))
        }
        #expect(custom.specialTokens["ab"] == 256)
        #expect(custom.tokenBytes(256) == Array("ab".utf8))
        // No <|endoftext|> in the files: it is added as 50256, as tiktoken's gpt2 does.
        #expect(custom.specialTokens[GPT2Tokenizer.endOfTextString] == GPT2Tokenizer.endOfTextID)
        #expect(custom.vocabularySize == 50257)
        #expect(custom.tokenBytes(1000) == nil)
        #expect(throws: TokenizerError.self) { try custom.decode([1000]) }
        #expect(custom.encode("x<|endoftext|>", allowSpecial: true).last == GPT2Tokenizer.endOfTextID)
    }

    @Test("vocab.json+merges.txt, encoder.json+vocab.bpe and tokenizer.json load to identical tokenizers")
    func fileLayoutsAgree() throws {
        let fm = FileManager.default
        let root = try temporaryDirectory("gpt2-layouts")
        defer { try? fm.removeItem(at: root) }
        func layout(_ name: String, _ files: [(String, String)]) throws -> URL {
            let directory = root.appendingPathComponent(name)
            try fm.createDirectory(at: directory, withIntermediateDirectories: true)
            for (source, destination) in files {
                try fm.copyItem(at: SharedData.gpt2.appendingPathComponent(source), to: directory.appendingPathComponent(destination))
            }
            return directory
        }
        let huggingFace = try layout("hf", [("vocab.json", "vocab.json"), ("merges.txt", "merges.txt")])
        let openAI = try layout("openai", [("encoder.json", "encoder.json"), ("vocab.bpe", "vocab.bpe")])

        // tokenizer.json from vocab.json + merges.txt, with Foundation's JSON writer, merges both as
        // "a b" strings (older tokenizers) and as ["a", "b"] pairs (newer).
        let vocabulary = try JSONSerialization.jsonObject(with: Data(contentsOf: SharedData.gpt2.appendingPathComponent("vocab.json")))
        let mergeLines = try String(contentsOf: SharedData.gpt2.appendingPathComponent("merges.txt"), encoding: .utf8)
            .split(separator: "\n").dropFirst().map(String.init)
        #expect(mergeLines.count == 50000)
        var tokenizerJSONDirectories: [URL] = []
        for (name, merges) in [("tj-strings", mergeLines as Any), ("tj-pairs", mergeLines.map { $0.split(separator: " ").map(String.init) } as Any)] {
            let directory = root.appendingPathComponent(name)
            try fm.createDirectory(at: directory, withIntermediateDirectories: true)
            let document: [String: Any] = [
                "version": "1.0",
                "added_tokens": [["id": 50256, "content": "<|endoftext|>", "special": true, "single_word": false,
                                  "lstrip": false, "rstrip": false, "normalized": true]],
                "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true],
                "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "vocab": vocabulary, "merges": merges],
            ]
            try JSONSerialization.data(withJSONObject: document).write(to: directory.appendingPathComponent("tokenizer.json"))
            tokenizerJSONDirectories.append(directory)
        }

        let tokenizers = try ([huggingFace, openAI] + tokenizerJSONDirectories).map { try GPT2Tokenizer(directory: $0) }
        let first = tokenizers[0]
        let sample = try String(contentsOf: SharedData.tinyStories.appendingPathComponent("valid.txt"), encoding: .utf8)
            + adversarialTexts.joined(separator: " ")
        let expected = first.encode(sample, allowSpecial: true)
        #expect(expected.contains(GPT2Tokenizer.endOfTextID))
        for tokenizer in tokenizers.dropFirst() {
            #expect(tokenizer.vocabularySize == first.vocabularySize)
            #expect(tokenizer.specialTokens == first.specialTokens)
            #expect(tokenizer.encode(sample, allowSpecial: true) == expected)
            #expect(tokenizer.encodeOrdinary(sample) == first.encodeOrdinary(sample))
            let sameBytes = (0 ..< Int32(first.vocabularySize)).allSatisfy { tokenizer.tokenBytes($0) == first.tokenBytes($0) }
            #expect(sameBytes)
        }
    }

    @Test("missing or malformed tokenizer files give clear errors")
    func badTokenizerFiles() throws {
        let missing = URL(fileURLWithPath: "/nonexistent/gpt2-\(UUID().uuidString)")
        do {
            _ = try GPT2Tokenizer(directory: missing)
            Issue.record("loading a missing directory did not throw")
        } catch let error as TokenizerError {
            #expect(error == .missingFiles(directory: missing.path))
            #expect(error.description.contains("gemma3 download gpt2-tokenizer"))
            #expect(error.description.contains("--tokenizer"))
        }
        let fm = FileManager.default
        let directory = try temporaryDirectory("gpt2-bad")
        defer { try? fm.removeItem(at: directory) }
        let vocabulary = try Data(contentsOf: SharedData.gpt2.appendingPathComponent("vocab.json"))
        let merges = try Data(contentsOf: SharedData.gpt2.appendingPathComponent("merges.txt"))
        // Truncated vocabulary.
        try vocabulary.prefix(vocabulary.count / 2).write(to: directory.appendingPathComponent("vocab.json"))
        try merges.write(to: directory.appendingPathComponent("merges.txt"))
        #expect {
            try GPT2Tokenizer(directory: directory)
        } throws: { error in
            guard case TokenizerError.malformedFile(_, let reason) = error else { return false }
            return reason.contains("JSON")
        }
        #expect(throws: TokenizerError.self) { try GPT2Tokenizer.verifyChecksums(directory: directory) }
        // A merge whose result is not in the vocabulary.
        try vocabulary.write(to: directory.appendingPathComponent("vocab.json"))
        try (merges + Data("zq xj\n".utf8)).write(to: directory.appendingPathComponent("merges.txt"))
        #expect {
            try GPT2Tokenizer(directory: directory)
        } throws: { error in
            guard case TokenizerError.malformedFile(_, let reason) = error else { return false }
            return reason.contains("missing from the vocabulary")
        }
        // A line that is not a merge.
        try (merges + Data("onlyone\n".utf8)).write(to: directory.appendingPathComponent("merges.txt"))
        #expect(throws: TokenizerError.self) { try GPT2Tokenizer(directory: directory) }
    }

    @Test("the streaming decoder never emits a broken character")
    func streamingDecoder() throws {
        let gpt2 = try loadShared()
        let text = "Emoji 👩‍👩‍👧‍👦 and 👨🏽‍💻, flags 🇫🇷🇩🇪, CJK 日本語のテキスト 漢字 𠀀𠀁, Hindi हिन्दी, Thai ภาษาไทย, done."
        let ids = gpt2.encodeOrdinary(text)
        var decoder = StreamingUTF8Decoder()
        var output = ""
        var heldBack = 0
        for id in ids {
            let piece = decoder.push(gpt2.tokenBytes(id)!)
            #expect(!piece.contains("\u{FFFD}"), "a broken character was emitted")
            if decoder.pendingByteCount > 0 { heldBack += 1 }
            output += piece
        }
        output += decoder.finish()
        #expect(output == text)
        #expect(heldBack > 10, "the text should have characters that span tokens")

        // Arbitrary bytes in arbitrary pieces: the same text as decoding everything at once.
        var rng = SplitMix64(seed: 5)
        let alphabet: [UInt8] = [0x41, 0x20, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF]
        for _ in 0 ..< 2000 {
            let bytes = (0 ..< Int.random(in: 0 ... 24, using: &rng)).map { _ in
                Bool.random(using: &rng) ? alphabet.randomElement(using: &rng)! : UInt8.random(in: 0 ... 255, using: &rng)
            }
            var decoder = StreamingUTF8Decoder()
            var streamed = ""
            var k = 0
            while k < bytes.count {
                let n = Int.random(in: 1 ... 4, using: &rng)
                streamed += decoder.push(Array(bytes[k ..< min(bytes.count, k + n)]))
                k += n
            }
            streamed += decoder.finish()
            #expect(streamed == String(decoding: bytes, as: UTF8.self), "\(bytes)")
        }
    }

    @Test("UTF-8 validation reports the same first invalid offset as Python's strict decoder")
    func utf8ValidationMatchesPython() throws {
        var rng = SplitMix64(seed: 11)
        var cases: [[UInt8]] = [[], [0x41], [0xC0, 0x80], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
                                [0xF0, 0x9F, 0x98], Array("ok 😀".utf8) + [0xFF], [0x80], Array(repeating: 0x61, count: 37) + [0xE2, 0x82]]
        let interesting: [UInt8] = [0x00, 0x41, 0x7F, 0x80, 0xBF, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0x9F, 0xA0, 0x90, 0x8F]
        for _ in 0 ..< 3000 {
            var bytes = Array("valid text ü 中 😀 ".utf8.prefix(Int.random(in: 0 ... 24, using: &rng)))
            for _ in 0 ..< Int.random(in: 0 ... 6, using: &rng) {
                bytes.insert(interesting.randomElement(using: &rng)!, at: Int.random(in: 0 ... bytes.count, using: &rng))
            }
            cases.append(bytes)
        }
        var input = Data()
        for bytes in cases {
            var n = UInt32(bytes.count).littleEndian
            input.append(Data(bytes: &n, count: 4))
            input.append(contentsOf: bytes)
        }
        let script = """
        import sys, json, struct
        data = open(sys.argv[1], "rb").read()
        out, k = [], 0
        while k < len(data):
            n = struct.unpack_from("<I", data, k)[0]; b = data[k + 4:k + 4 + n]; k += 4 + n
            try:
                b.decode("utf-8"); out.append(-1)
            except UnicodeDecodeError as e:
                out.append(e.start)
        print(json.dumps(out))
        """
        let expected = try JSONSerialization.jsonObject(with: runPython(script, input: input)) as! [Int]
        #expect(expected.count == cases.count)
        for (bytes, offset) in zip(cases, expected) {
            let ours = bytes.withUnsafeBufferPointer(firstInvalidUTF8Offset) ?? -1
            #expect(ours == offset, "\(bytes)")
            if offset >= 0 {
                #expect(throws: TokenizerError.invalidUTF8(offset: offset)) { try bytes.withUnsafeBufferPointer { try validateUTF8($0) } }
            }
        }
        #expect(TokenizerError.invalidUTF8(offset: 7).description.contains("byte offset 7"))
    }

    @Test("checksums: the official files verify, SHA-256 matches Python's hashlib, a changed byte is caught")
    func checksums() throws {
        // The known hashes are the ones in ../shared/data/gpt2/SHA256SUMS.
        let sums = try String(contentsOf: SharedData.gpt2.appendingPathComponent("SHA256SUMS"), encoding: .utf8)
        for line in sums.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            #expect(GPT2Tokenizer.knownSHA256[String(parts[1])] == String(parts[0]))
        }
        #expect(try GPT2Tokenizer.verifyChecksums(directory: SharedData.gpt2).sorted() == ["encoder.json", "merges.txt", "vocab.bpe", "vocab.json"])

        var rng = SplitMix64(seed: 3)
        let sizes = Array(0 ... 130) + [1000, 4096, 65_537, 1_000_003]
        let messages = sizes.map { n in (0 ..< n).map { _ in UInt8.random(in: 0 ... 255, using: &rng) } }
        var input = Data()
        for bytes in messages {
            var n = UInt32(bytes.count).littleEndian
            input.append(Data(bytes: &n, count: 4))
            input.append(contentsOf: bytes)
        }
        let script = """
        import sys, json, struct, hashlib
        data = open(sys.argv[1], "rb").read()
        out, k = [], 0
        while k < len(data):
            n = struct.unpack_from("<I", data, k)[0]; out.append(hashlib.sha256(data[k + 4:k + 4 + n]).hexdigest()); k += 4 + n
        print(json.dumps(out))
        """
        let expected = try JSONSerialization.jsonObject(with: runPython(script, input: input)) as! [String]
        for (bytes, digest) in zip(messages, expected) {
            #expect(SHA256Hasher.hex(of: bytes) == digest, "\(bytes.count) bytes")
            // Streaming in uneven pieces gives the same digest.
            var hasher = SHA256Hasher()
            var k = 0
            while k < bytes.count {
                let n = min(bytes.count - k, 1 + (k * 7919) % 200)
                hasher.update(Array(bytes[k ..< k + n]))
                k += n
            }
            #expect(hasher.finalizeHex() == digest)
        }

        let directory = try temporaryDirectory("gpt2-checksum")
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.copyItem(at: SharedData.gpt2.appendingPathComponent("vocab.json"), to: directory.appendingPathComponent("vocab.json"))
        var merges = try Data(contentsOf: SharedData.gpt2.appendingPathComponent("merges.txt"))
        merges[merges.count / 2] ^= 0x01
        try merges.write(to: directory.appendingPathComponent("merges.txt"))
        #expect {
            try GPT2Tokenizer.verifyChecksums(directory: directory)
        } throws: { error in
            guard case TokenizerError.checksumMismatch(let path, _, _) = error else { return false }
            return path.hasSuffix("merges.txt")
        }
    }

    @Test("the JSON reader handles escapes and reports syntax errors with an offset")
    func jsonReader() throws {
        let text = #"{"a": [1, -2.5e3, true, false, null], "b\"\\\/\n\u00e9\ud83d\ude00": {"c": "\u0120x"}}"#
        let bytes = Array(text.utf8)
        let value = try bytes.withUnsafeBufferPointer { try JSONReader.parse($0) }
        guard case .object(let members) = value else { Issue.record("not an object"); return }
        #expect(members.map(\.key) == ["a", "b\"\\/\né😀"])
        guard case .string(let s)? = value["b\"\\/\né😀"]?["c"] else { Issue.record("missing c"); return }
        #expect(s == "Ġx")
        for bad in ["{\"a\": }", "[1, 2", "{\"a\" 1}", "\"unterminated", "[1] x", "{\"a\": tru}"] {
            #expect(throws: JSONSyntaxError.self) { try Array(bad.utf8).withUnsafeBufferPointer { try JSONReader.parse($0) } }
        }
    }
}
