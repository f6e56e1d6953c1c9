import Foundation
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3TestSupport
import Gemma3Tokenizers
import Testing
@testable import Gemma3Model
@testable import Gemma3Training

/// Inputs from the issue-18 probe that used to be accepted silently or crash.
@Suite struct HostileInputTests {
    @Test("a token file that is not the one meta.json records (count or SHA-256) is refused")
    func mixedPreparedSetIsRefused() throws {
        let tmp = try TemporaryDirectory()
        let url = tmp.url.appendingPathComponent("train.bin")
        let tokens: [UInt16] = (0..<100).map { UInt16($0 * 7 % 50) }
        try writeTokens(tokens, to: url)
        var hasher = SHA256Hasher()
        tokens.withUnsafeBytes { hasher.update($0) }
        var record = SplitRecord(file: "train.bin", tokens: 100, documents: 1, bytes: 400, bytesPerToken: 4, sources: [],
                                 sha256: hasher.finalizeHex())
        try DatasetMeta.verify(try TokenFile(url: url), against: record, metaPath: "meta.json")
        // One token changed: same count, other checksum.
        var changed = tokens
        changed[50] ^= 1
        try writeTokens(changed, to: url)
        #expect(throws: FileIOError.self) { try DatasetMeta.verify(try TokenFile(url: url), against: record, metaPath: "meta.json") }
        // Without a recorded checksum (older meta.json) the count is still checked.
        record.sha256 = nil
        try DatasetMeta.verify(try TokenFile(url: url), against: record, metaPath: "meta.json")
        try writeTokens(Array(tokens.prefix(60)), to: url)
        #expect(throws: FileIOError.self) { try DatasetMeta.verify(try TokenFile(url: url), against: record, metaPath: "meta.json") }
    }

    @Test("temporaries of a killed writer are removed, a live writer's are kept")
    func staleTemporariesAreRemoved() throws {
        let tmp = try TemporaryDirectory()
        let destination = tmp.url.appendingPathComponent("train.bin")
        // A process id that is not running (the largest below pid_max that kill(2) reports as gone).
        var dead: Int32 = 4_000_000
        while kill(dead, 0) == 0 || errno != ESRCH { dead -= 1 }
        let stale = tmp.url.appendingPathComponent(".train.bin.tmp-\(dead)-1")
        let live = tmp.url.appendingPathComponent(".train.bin.tmp-\(getpid())-2")
        let other = tmp.url.appendingPathComponent(".val.bin.tmp-\(dead)-3")
        for f in [stale, live, other] { FileManager.default.createFile(atPath: f.path, contents: Data([1])) }
        #expect(AtomicFileWriter.removeStaleTemporaries(of: destination) == 1)
        #expect(!FileManager.default.fileExists(atPath: stale.path))
        #expect(FileManager.default.fileExists(atPath: live.path))
        #expect(FileManager.default.fileExists(atPath: other.path))
    }

    @Test("a Gemma vocabulary without byte pieces encodes unknown bytes as <unk>, and without <unk> is refused")
    func missingBytePieces() throws {
        let pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "b"]
        let scores: [Float] = [0, 0, 0, 0, -1, -2]
        let tokenizer = try GemmaTokenizer(pieces: pieces, scores: scores, types: [3, 3, 3, 2, 1, 1], bosTokenID: 2, eosTokenID: 1)
        let ids = tokenizer.encode("ab\u{e9}")
        #expect(ids.allSatisfy { $0 >= 0 && Int($0) < pieces.count }, "\(ids)")
        #expect(ids.contains(3), "\(ids)")
        #expect(throws: TokenizerError.self) {
            _ = try GemmaTokenizer(pieces: pieces, scores: scores, types: [3, 3, 3, 1, 1, 1], bosTokenID: 2, eosTokenID: 1)
        }
    }

    @Test("NaN weights: generation and evaluation end with an error instead of NaN losses or empty text")
    func nonFiniteWeights() throws {
        let config = try tinyConfig()
        let store = ParameterStore(config: config)
        var rng = SplitMix64(seed: 3)
        for t in store.layout.tensors { rng.fillNormal(store.view(t), std: t.isMatrix ? 0.05 : 0.1) }
        store.pointer[store.count / 2] = .nan
        let tokens: [UInt16] = (0..<64).map { UInt16($0 * 13 % config.vocabSize) }
        #expect(throws: GenerationError.self) {
            _ = try tokens.withUnsafeBufferPointer { try Evaluation.evaluate(config: config, parameters: store, tokens: $0, context: 16) }
        }
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store, dtype: .f32), maxContext: 64)
        #expect(throws: GenerationError.nonFiniteLogits) {
            _ = try Generator(engine: engine, tokenizer: nil).generate(promptIds: [1, 2, 3], options: GenerationOptions(maxNewTokens: 4))
        }
    }

    @Test("an argument that is not valid UTF-8 is one line on stderr and exit 64, not a silent U+FFFD")
    func invalidUTF8Argument() throws {
        let r = try runProcess("/bin/sh", ["-c", #""$0" tokenize "$(printf 'a\377b')""#, try gemma3Executable().path])
        let err = String(decoding: r.stderr, as: UTF8.self)
        #expect(r.status == 64, "\(err)")
        #expect(err.contains("argument 2 is not valid UTF-8") && err.split(separator: "\n").count == 1, "\(err)")
        #expect(r.stdout.isEmpty)
    }
}
