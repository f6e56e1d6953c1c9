import Foundation
import Testing
import Gemma3Formats
import Gemma3Kernels
import Gemma3Tokenizers
@testable import Gemma3Model

/// A model trained here (GPT-2 vocabulary) exported to GGUF carries its tokenizer as llama.cpp's
/// `gpt2` model, so llama.cpp runs it: same ids, same greedy continuation, same perplexity.
@Suite("GPT-2-vocabulary checkpoints as GGUF (gpt2 tokenizer)", .serialized)
struct GPT2ExportTests {
    static let shared = repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared")
    static let texts = [
        "Once upon a time, there was a little girl named Lily.",
        "She said: \"I can't wait!\"\n\nThe end.  Two  spaces, tabs\tand 123456 numbers.",
        "Café, naïve, 日本語, emoji 🙂 and a <|endoftext|> marker.",
        " leading space and trailing space ",
    ]

    /// A checkpoint directory as `gemma3 train` writes it (the golden tiny weights, vocabulary 50257,
    /// with GPT-2's vocab.json + merges.txt) and its F32 GGUF export.
    static func export() throws -> (directory: URL, gguf: URL) {
        let dir = try temporaryDirectory()
        let golden = shared.appendingPathComponent("golden/tiny")
        let config = try Gemma3Config.load(from: golden.appendingPathComponent("config.json"))
        let store = ParameterStore(config: config)
        try store.load(contentsOf: golden.appendingPathComponent("golden.safetensors"), allowUnexpected: true)
        let model = dir.appendingPathComponent("best")
        try HFCheckpoint.save(config: config, parameters: store, directory: model)
        for f in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: shared.appendingPathComponent("data/gpt2/" + f), to: model.appendingPathComponent(f))
        }
        let (writer, summary) = try GemmaConversion.ggufWriter(huggingFaceDirectory: model, matrixType: .f32)
        #expect(summary.tokenizerWritten)
        let gguf = dir.appendingPathComponent("model.gguf")
        try writer.write(to: gguf)
        return (model, gguf)
    }

    @Test("the GGUF's tokenizer and greedy continuation equal the checkpoint's")
    func roundTrip() throws {
        let (dir, gguf) = try Self.export()
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        let file = try GGUFFile(path: gguf.path)
        #expect(file["tokenizer.ggml.model"]?.stringValue == "gpt2")
        #expect(file["tokenizer.ggml.add_bos_token"]?.boolValue == false)
        #expect(file["tokenizer.ggml.eos_token_id"]?.intValue == 50256)
        // Exactly the tokens the GPT-2 tokenizer treats as special are control tokens (3): <|endoftext|>.
        let types = try file.ints("tokenizer.ggml.token_type")
        let checkpointTokenizer = try GPT2Tokenizer(directory: dir)
        #expect(types.indices.filter { types[$0] == 3 } == checkpointTokenizer.specialTokens.values.map(Int.init).sorted())
        #expect(types.count == 50257 && types.filter { $0 == 1 }.count == 50256)
        let fromGGUF = try LanguageModel.load(gguf.path)
        let fromDirectory = try LanguageModel.load(dir.path)
        #expect(fromGGUF.tokenizer is GPT2Tokenizer)
        #expect(fromGGUF.tokenizer.vocabularySize == 50257)
        #expect(fromGGUF.stopTokens.contains(50256))
        let reference = try GPT2Tokenizer(directory: Self.shared.appendingPathComponent("data/gpt2"))
        for text in Self.texts {
            #expect(fromGGUF.tokenizer.encode(text) == reference.encodeOrdinary(text), "\(text)")
            #expect(try reference.decodeToString(fromGGUF.tokenizer.encode(text)) == text)
        }
        let a = try fromGGUF.generate(Self.texts[0], maxNewTokens: 12)
        let b = try fromDirectory.generate(Self.texts[0], maxNewTokens: 12)
        #expect(a.generatedIds == b.generatedIds)
        #expect(a.generatedIds.count == 12 || a.stopReason == .stopToken)
    }

    @Test("llama.cpp tokenizes, continues and scores the exported model as we do (when its tools are present)")
    func llamaCppRunsTheExport() throws {
        let tokenize = llamaTool("llama-tokenize")
        guard tokenize != nil || dumpLogitsTool != nil else {
            notice("llama.cpp tools not found (LLAMA_CPP_DIR/build/bin): the GPT-2 GGUF export was checked by our loader only")
            return
        }
        let (dir, gguf) = try Self.export()
        defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
        let model = try LanguageModel.load(gguf.path)
        if let tool = tokenize {
            for text in Self.texts {
                let r = try run(tool, ["-m", gguf.path, "-p", text, "--ids", "--no-parse-special", "--log-disable"])
                #expect(r.status == 0, "llama-tokenize failed: \(String(decoding: r.stderr, as: UTF8.self).suffix(500))")
                let line = String(decoding: r.stdout, as: UTF8.self).split(separator: "\n").last(where: { $0.hasPrefix("[") }) ?? ""
                let theirs = line.dropFirst().dropLast().split(separator: ",").compactMap { TokenID($0.trimmingCharacters(in: .whitespaces)) }
                #expect(theirs == model.tokenizer.encode(text), "\(text)")
            }
        } else {
            notice("llama-tokenize not found: skipped the llama.cpp tokenizer comparison of the GPT-2 GGUF")
        }
        guard let dumper = dumpLogitsTool else {
            notice("llama-dump-logits not found: skipped the llama.cpp continuation and perplexity comparison of the GPT-2 GGUF")
            return
        }
        // llama.cpp's greedy continuation of 16 tokens, then the logits of every position.
        let prompt = model.tokenizer.encode(Self.texts[0] + " " + Self.texts[1])
        let work = dir.deletingLastPathComponent()
        let idsURL = work.appendingPathComponent("ids.txt"), outURL = work.appendingPathComponent("logits.f32")
        try Data(prompt.map(String.init).joined(separator: " ").utf8).write(to: idsURL)
        let n = 16
        let r = try run(dumper, [gguf.path, idsURL.path, outURL.path, "2", "\(n)"])
        try #require(r.status == 0, "\(dumper) failed: \(String(decoding: r.stderr, as: UTF8.self).suffix(800))")
        let continuation = String(decoding: r.stdout, as: UTF8.self).split(whereSeparator: \.isWhitespace).compactMap { TokenID($0) }
        try #require(continuation.count == n)
        let ours = try model.makeGenerator(context: prompt.count + n)
            .generate(promptIds: prompt, options: GenerationOptions(maxNewTokens: n, sampling: .greedy, stopTokenIds: []))
        #expect(ours.generatedIds == continuation)

        // Perplexity of prompt + continuation: the mean negative log-likelihood from llama.cpp's
        // logits against our engine's cross-entropy.
        let ids = prompt + continuation
        let V = model.config.vocabSize
        let data = try Data(contentsOf: outURL)
        try #require(data.count == ids.count * V * 4)
        var logits = [Float](repeating: 0, count: ids.count * V)
        _ = logits.withUnsafeMutableBytes { data.copyBytes(to: $0) }
        var theirs = 0.0
        for t in 0..<(ids.count - 1) {
            let row = logits[(t * V)..<((t + 1) * V)]
            let top = Double(row.max()!)
            let logSum = top + log(row.reduce(0.0) { $0 + exp(Double($1) - top) })
            theirs += logSum - Double(row[row.startIndex + Int(ids[t + 1])])
        }
        let (sum, count) = try model.makeEngine(context: ids.count).crossEntropySum(ids)
        #expect(count == ids.count - 1)
        let ourPerplexity = exp(sum / Double(count)), theirPerplexity = exp(theirs / Double(count))
        print("GPT-2 GGUF export: perplexity ours \(ourPerplexity), llama.cpp \(theirPerplexity)")
        #expect(abs(ourPerplexity - theirPerplexity) / theirPerplexity < 1e-3)
    }
}
