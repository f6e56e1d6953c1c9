import Foundation
import Testing
import Gemma3Formats
import Gemma3Kernels
@testable import Gemma3Model
import Gemma3Tokenizers

/// A synthetic vocabulary in the real Gemma 3 layout: control tokens, user-defined whitespace runs
/// and a tag, 256 byte tokens, then normal pieces whose scores strictly decrease with the id (as
/// Gemma 3's do: score = 494 − id), merged pieces listed in the order SentencePiece merges them.
struct OrderedGemmaVocabulary {
    var pieces: [String] = []
    var scores: [Float] = []
    var types: [Int32] = []

    mutating func add(_ piece: String, _ type: GemmaTokenizer.TokenType) {
        pieces.append(piece)
        types.append(type.rawValue)
        // Not simply −id: the tokenizer.json must not depend on the scores' values, only their order.
        scores.append(type == .normal ? 100 - 2 * Float(pieces.count) : type == .byte ? 0 : -1000)
    }

    init() {
        for p in ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<mask>"] { add(p, .control) }
        for p in ["\n", "\n\n", "  ", "   ", "\t", "<b>", "</b>"] { add(p, .userDefined) }
        for b in 0..<256 { add(String(format: "<0x%02X>", b), .byte) }
        // Merged pieces first (highest scores), as in Gemma's vocabulary, then single characters.
        for p in ["▁t", "he", "▁the", "in", "▁a", "er", "on", "re", "▁s", "at", "en", "an", "▁o", "▁w", "ll", "▁c",
                  "or", "nd", "▁and", "is", "ou", "▁h", "ing", "▁he", "llo", "▁hello", "é", "ca", "caf", "▁café",
                  "世界", "▁Th", "▁The", "ab", "bc", "abc", "\"\\", "{\"", "ä\u{301}", "🙂🙂"] {
            add(p, .normal)
        }
        for scalar in "▁abcdefghijklmnopqrstuvwxyzTHWé世界\"\\{}:,.!?🙂ä\u{301}".unicodeScalars {
            let p = String(scalar)
            if !pieces.contains(p) { add(p, .normal) }
        }
    }

    func tokenizer() throws -> GemmaTokenizer {
        try GemmaTokenizer(pieces: pieces, scores: scores, types: types, bosTokenID: 2, eosTokenID: 1)
    }
}

/// Texts for the synthetic vocabulary: merges, spaces, user-defined and control tokens, byte fallback,
/// JSON-escaped characters.
let conversionTexts: [String] = [
    "the hello and the cafe", " the  hello\n\nand   the\tend", "The café at the Hello world!",
    "abc bcab abcabc", "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n", "<b>bold</b> <mask> <bos>",
    "{\"key\": \"a\\\\b\"} ä\u{301} 🙂🙂🙂 € 世界", "\u{0}\u{1f}\u{7f}\r\n", "",
]

/// Logits after feeding `tokens` one by one (prefill then decode).
func logits(_ weights: InferenceWeights, _ tokens: [TokenID]) throws -> [Float] {
    let engine = try InferenceEngine(weights: weights, maxContext: 64)
    _ = try engine.prefill(Array(tokens.dropLast()))
    return Array(try engine.decode(tokens.last!))
}

func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    return zip(a, b).map { abs($0 - $1) }.max() ?? 0
}

/// Encodings of `texts` by two tokenizers, in both special-token modes, must be identical.
func expectSameEncodings(_ a: GemmaTokenizer, _ b: GemmaTokenizer, _ texts: [String], sourceLocation: SourceLocation = #_sourceLocation) -> Int {
    var compared = 0
    for text in texts {
        for special in [false, true] {
            let x = a.encode(text, parseSpecial: special), y = b.encode(text, parseSpecial: special)
            #expect(x == y, "\(text.debugDescription) special=\(special): \(x) vs \(y)", sourceLocation: sourceLocation)
            compared += 1
        }
    }
    return compared
}

@Suite("GGUF ⇄ Hugging Face directory conversion")
struct ConversionTests {
    @Test("tokenizer.json written from a Gemma tokenizer reads back identically and is detected as Gemma's")
    func tokenizerJSONRoundTrip() throws {
        let vocabulary = OrderedGemmaVocabulary()
        let original = try vocabulary.tokenizer()
        #expect(original.scoresDecreaseWithID)
        // The merges cover every split of a merged piece into two pieces, best piece first.
        let merges = original.mergePairs().map { (original.pieces[Int($0.left)], original.pieces[Int($0.right)]) }
        #expect(merges.first.map { [$0.0, $0.1] } == [Array("▁".utf8), Array("t".utf8)])
        #expect(merges.contains { $0 == (Array("▁t".utf8), Array("he".utf8)) })
        #expect(!merges.contains { $0.0 == Array("ä".utf8) + [0xCC] })   // never inside a character
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try GemmaConversion.writeTokenizer(original, directory: dir, maxLength: 128)
        let url = dir.appendingPathComponent("tokenizer.json")
        #expect(GemmaTokenizer.isGemmaTokenizerJSON(at: url))
        // Valid JSON for an independent parser too.
        let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let model = try #require(object["model"] as? [String: Any])
        #expect((model["vocab"] as? [String: Any])?.count == vocabulary.pieces.count)
        #expect((model["merges"] as? [[String]])?.count == merges.count)
        let back = try #require(try GemmaConversion.gemmaTokenizer(inDirectory: dir))
        #expect(back.pieces == original.pieces)
        #expect(back.types == original.types)
        #expect(back.bosTokenID == 2 && back.eosTokenID == 1 && back.addBOS)
        let compared = expectSameEncodings(original, back, conversionTexts + comparisonTexts)
        #expect(compared == 2 * (conversionTexts.count + comparisonTexts.count))
        #expect(try back.decodeToString(back.encode(conversionTexts[6])) == conversionTexts[6])

        // add_bos_token false in tokenizer_config.json is honoured.
        try Data("{\"add_bos_token\": false}".utf8).write(to: dir.appendingPathComponent("tokenizer_config.json"))
        #expect(try GemmaConversion.gemmaTokenizer(inDirectory: dir)?.encode("the") == original.encode("the", addBOS: false))

        // A vocabulary whose scores do not follow the ids is flagged (tokenizer.json ranks by id).
        #expect(try SmallVocabulary().tokenizer().scoresDecreaseWithID == false)
    }

    @Test("a GPT-2 (byte-level) tokenizer.json is not taken for Gemma's")
    func gpt2TokenizerJSONIsNotGemma() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let json = """
        {"version": "1.0", "added_tokens": [{"id": 2, "content": "<|endoftext|>", "special": true}],
         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}, "decoder": {"type": "ByteLevel"},
         "model": {"type": "BPE", "byte_fallback": false, "vocab": {"a": 0, "b": 1, "<|endoftext|>": 2}, "merges": []}}
        """
        try Data(json.utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        #expect(!GemmaTokenizer.isGemmaTokenizerJSON(at: dir.appendingPathComponent("tokenizer.json")))
        #expect(try GemmaConversion.gemmaTokenizer(inDirectory: dir) == nil)
        try FileManager.default.removeItem(at: dir.appendingPathComponent("tokenizer.json"))
        #expect(try GemmaConversion.gemmaTokenizer(inDirectory: dir) == nil)
    }

    @Test("GGUF → HF directory: HF names, norms without +1, config; logits equal the GGUF float path")
    func ggufToHuggingFace() throws {
        let vocabulary = OrderedGemmaVocabulary()
        let tokenizer = try vocabulary.tokenizer()
        let config = tinyConfig(vocab: vocabulary.pieces.count)
        let store = tinyStore(config, seed: 11)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokens = tokenizer.encode("the café <b>hello</b>\n\nand the end")
        #expect(tokens.count >= 8)
        // A quantized GGUF (Q8_0 matrices): the directory holds its dequantized values.
        let gguf = dir.appendingPathComponent("tiny.gguf")
        try GGUFGemma3.writer(config: config, parameters: store, matrixType: .q8_0, tokenizer: tokenizer).write(to: gguf)
        let file = try GGUFFile(url: gguf)
        let floatPath = try GGUFGemma3.parameters(from: file, config: try GGUFGemma3.config(from: file))
        let expected = try logits(try InferenceWeights(config: config, parameters: floatPath), tokens)
        let quantized = try logits(try GGUFGemma3.inferenceWeights(from: file, activations: .float), tokens)
        #expect(maxDifference(expected, quantized) <= 1e-4)

        for (dtype, tolerance) in [(SafeTensorsDType.f32, Float(0)), (.bf16, 0.1), (.f16, 0.02)] {
            let hf = dir.appendingPathComponent("hf-\(dtype.rawValue)")
            let summary = try GemmaConversion.convertGGUFToHuggingFace(file, directory: hf, dtype: dtype)
            #expect(summary.tokenizerWritten && summary.tokenizerExact && summary.parameterCount == store.layout.count)
            let names = Set(try SafeTensorsFile(url: hf.appendingPathComponent("model.safetensors")).tensors.map(\.name))
            #expect(names == Set(store.layout.tensors.map(\.name)))
            #expect(names.contains("model.layers.2.mlp.down_proj.weight") && !names.contains("lm_head.weight"))
            let (loadedConfig, loaded) = try HFCheckpoint.load(directory: hf)
            #expect(loadedConfig == (try GGUFGemma3.config(from: file)))
            // Norms: GGUF stores 1 + w, the directory w.
            let stored = try file.floats(tensor: "blk.1.attn_q_norm.weight")
            let plain = try #require(loaded["model.layers.1.self_attn.q_norm.weight"])
            #expect(zip(stored, plain).allSatisfy { abs(($0 - 1) - $1) <= (dtype == .f32 ? 0 : 1e-2) })
            let got = try logits(try InferenceWeights(config: loadedConfig, parameters: loaded), tokens)
            let err = maxDifference(got, expected)
            #expect(err <= tolerance, "\(dtype.rawValue): max |Δlogit| \(err)")
            let back = try #require(try GemmaConversion.gemmaTokenizer(inDirectory: hf))
            _ = expectSameEncodings(tokenizer, back, conversionTexts)
        }
        // transformers reads the config keys it needs.
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("hf-BF16/config.json"))) as? [String: Any])
        #expect(json["model_type"] as? String == "gemma3_text" && json["architectures"] as? [String] == ["Gemma3ForCausalLM"])
        #expect(json["dtype"] as? String == "bfloat16" && json["vocab_size"] as? Int == vocabulary.pieces.count)
    }

    @Test("HF directory → GGUF: weights, config and Gemma tokenizer carried over; logits equal")
    func huggingFaceToGGUF() throws {
        let vocabulary = OrderedGemmaVocabulary()
        let tokenizer = try vocabulary.tokenizer()
        let config = tinyConfig(vocab: vocabulary.pieces.count)
        let store = tinyStore(config, seed: 12)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let hf = dir.appendingPathComponent("hf")
        try HFCheckpoint.save(config: config, parameters: store, directory: hf, dtype: .f32)
        try GemmaConversion.writeTokenizer(tokenizer, directory: hf, maxLength: config.maxPositionEmbeddings)
        let tokens = tokenizer.encode("<start_of_turn>user\nthe hello<end_of_turn>", parseSpecial: true)
        let expected = try logits(try InferenceWeights(config: config, parameters: store), tokens)
        for (type, tolerance) in [(GGMLType.f32, Float(1e-5)), (.bf16, 0.1), (.q8_0, 0.1)] {
            let (writer, summary) = try GemmaConversion.ggufWriter(huggingFaceDirectory: hf, matrixType: type)
            #expect(summary.tokenizerWritten)
            let url = dir.appendingPathComponent("out-\(type.name).gguf")
            try writer.write(to: url)
            let file = try GGUFFile(url: url)
            #expect(file.tensor(named: "blk.0.attn_q.weight")?.type == type)
            #expect(file.tensor(named: "blk.0.attn_norm.weight")?.type == .f32)
            let c = try GGUFGemma3.config(from: file)
            #expect(c.layerTypes == config.layerTypes && c.numKeyValueHeads == config.numKeyValueHeads && c.vocabSize == config.vocabSize)
            let back = try GGUFGemma3.tokenizer(from: file)
            #expect(back.pieces == tokenizer.pieces && back.types == tokenizer.types)
            _ = expectSameEncodings(tokenizer, back, conversionTexts)
            let got = try logits(try GGUFGemma3.inferenceWeights(from: file, config: c, activations: .float), tokens)
            let err = maxDifference(got, expected)
            #expect(err <= tolerance, "\(type.name): max |Δlogit| \(err)")
        }
        // A directory with a GPT-2 tokenizer (or none) gives a GGUF without tokenizer metadata.
        try FileManager.default.removeItem(at: hf.appendingPathComponent("tokenizer.json"))
        let (plain, summary) = try GemmaConversion.ggufWriter(huggingFaceDirectory: hf)
        #expect(!summary.tokenizerWritten)
        let url = dir.appendingPathComponent("plain.gguf")
        try plain.write(to: url)
        #expect(try GGUFFile(url: url)["tokenizer.ggml.tokens"] == nil)
    }

    @Test("real Gemma 3 270M: converted directory tokenizes like llama-tokenize and generates like the GGUF float path")
    func realModel() throws {
        guard let path = realModelPath else {
            notice("real model not found (GEMMA3_GGUF or ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf; run `gemma3 download gemma3-270m`): skipped the real-model GGUF → HF conversion test")
            return
        }
        let file = try GGUFFile(path: path)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let summary = try GemmaConversion.convertGGUFToHuggingFace(file, directory: dir, dtype: .f32)
        #expect(summary.tokenizerExact && summary.parameterCount == 268_098_176)

        let gguf = try GGUFGemma3.tokenizer(from: file)
        let converted = try #require(try GemmaConversion.gemmaTokenizer(inDirectory: dir))
        #expect(converted.vocabularySize == 262_144 && converted.pieces == gguf.pieces && converted.types == gguf.types)
        #expect(expectSameEncodings(gguf, converted, comparisonTexts) == 2 * comparisonTexts.count)
        if let tool = llamaTool("llama-tokenize") {
            // llama.cpp itself, on the texts joined by the always-split user-defined token "<h6>".
            let separatorID = try #require(converted.id(of: "<h6>"))
            let textFile = dir.appendingPathComponent("texts.txt")
            try Data(comparisonTexts.joined(separator: "<h6>").utf8).write(to: textFile)
            for special in [false, true] {
                var args = ["-m", path, "-f", textFile.path, "--ids", "--no-escape", "--log-disable"]
                if !special { args.append("--no-parse-special") }
                let r = try run(tool, args)
                #expect(r.status == 0)
                let line = String(decoding: r.stdout, as: UTF8.self).split(separator: "\n").last(where: { $0.hasPrefix("[") }) ?? ""
                let theirs = line.dropFirst().dropLast().split(separator: ",").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
                let segments = theirs.dropFirst().split(separator: separatorID, omittingEmptySubsequences: false)
                #expect(segments.count == comparisonTexts.count)
                for (text, segment) in zip(comparisonTexts, segments) {
                    #expect(converted.encode(text, addBOS: false, parseSpecial: special) == Array(segment), "\(text.debugDescription)")
                }
            }
        } else {
            notice("llama-tokenize not found (LLAMA_CPP_DIR/build/bin): the converted tokenizer was compared with the GGUF tokenizer only")
        }

        // Greedy continuation of a short prompt: the directory's weights vs the GGUF float path.
        let (config, store) = try HFCheckpoint.load(directory: dir)
        let reference = try GGUFGemma3.parameters(from: file, config: try GGUFGemma3.config(from: file))
        let prompt = converted.encode("The capital of France is")
        var results: [[TokenID]] = []
        var firstLogits: [[Float]] = []
        for parameters in [store, reference] {
            let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: parameters), maxContext: 64)
            let r = try Generator(engine: engine, tokenizer: converted).generate(promptIds: prompt, options: GenerationOptions(maxNewTokens: 8))
            results.append(r.generatedIds)
            engine.reset()
            firstLogits.append(Array(try engine.prefill(prompt)))
        }
        #expect(results[0] == results[1] && results[0].count == 8)
        #expect(maxDifference(firstLogits[0], firstLogits[1]) == 0)
        let top = firstLogits[0].enumerated().sorted { $0.element > $1.element }.prefix(5)
        print("real model via HF directory: greedy \(results[0]) (\(try converted.decodeToString(results[0]).debugDescription)); top-5 logits after the prompt \(top.map { "\($0.offset): \($0.element)" })")
    }
}
