import Foundation
import Testing
import Gemma3Kernels
import Gemma3Formats
@testable import Gemma3Model

@Suite struct EngineExactnessTests {
    /// Greedy decoding with the KV cache, step by step, against the training model's forward over
    /// the whole sequence (no cache): every step's logits agree, and every greedy token is the
    /// argmax of the uncached logits, so both produce the same tokens.
    func checkGreedyAgainstRecompute(config: Gemma3Config, seed: UInt64, promptLength: Int, newTokens: Int, chunk: Int) throws {
        let store = randomStore(config, seed: seed)
        let weights = try InferenceWeights(config: config, parameters: store)
        let engine = try InferenceEngine(weights: weights, maxContext: 512, prefillChunk: chunk)
        var rng = SplitMix64(seed: seed + 1)
        let prompt = (0..<promptLength).map { _ in TokenID(rng.next() % UInt64(config.vocabSize)) }
        var sequence = prompt
        var stepLogits: [[Float]] = []
        var logits = try engine.prefill(prompt)
        for step in 0..<newTokens {
            stepLogits.append(Array(logits))
            let token = TokenID(Sampler.argmax(UnsafeBufferPointer(logits)))
            sequence.append(token)
            if step + 1 < newTokens { logits = try engine.decode(token) }
        }
        let reference = try referenceLogits(config, store, Array(sequence.dropLast()))
        let V = config.vocabSize
        var worst: Float = 0
        for step in 0..<newTokens {
            let position = promptLength - 1 + step
            let ref = reference[(position * V)..<((position + 1) * V)]
            worst = max(worst, stepLogits[step].withUnsafeBufferPointer { maxAbsDifference($0, ref) })
            #expect(TokenID(argmax(ref)) == sequence[promptLength + step], "step \(step): cached greedy token differs from recompute")
        }
        #expect(worst < 1e-4, "max |Δ logits| cache vs recompute = \(worst)")
        #expect(engine.position == promptLength + newTokens - 1)
    }

    @Test func shortPromptManyRingWraps() throws {
        // window 5, 120 decode steps: the sliding rings wrap 24 times.
        try checkGreedyAgainstRecompute(config: smallConfig(window: 5), seed: 11, promptLength: 3, newTokens: 120, chunk: 64)
    }

    @Test func promptLongerThanTheWindowInSeveralChunks() throws {
        // 29-token prompt, window 6, chunks of 4: chunks straddle the ring boundary.
        try checkGreedyAgainstRecompute(config: smallConfig(window: 6), seed: 12, promptLength: 29, newTokens: 60, chunk: 4)
    }

    @Test func untiedHeadAndWindowOfOne() throws {
        try checkGreedyAgainstRecompute(config: smallConfig(window: 1, tied: false), seed: 13, promptLength: 9, newTokens: 40, chunk: 3)
    }

    @Test func multiQueryPrefillOverSeveralQueryBlocks() throws {
        // One KV head for four query heads (as in Gemma 3 270M): 270 positions in one pass are five
        // query blocks per head, with the sliding mask; then chunks of 7 straddling the ring boundary.
        try checkGreedyAgainstRecompute(config: smallConfig(window: 4, kvHeads: 1), seed: 15, promptLength: 270, newTokens: 20, chunk: 512)
        try checkGreedyAgainstRecompute(config: smallConfig(window: 6, kvHeads: 1), seed: 16, promptLength: 29, newTokens: 20, chunk: 7)
    }

    @Test func promptLongerThanTheWindowInOnePass() throws {
        // 300 positions: decode attention over the full layer is split in parts and merged.
        try checkGreedyAgainstRecompute(config: smallConfig(window: 4), seed: 14, promptLength: 270, newTokens: 30, chunk: 512)
    }

    /// The engine's summed cross-entropy over `tokens` equals the training forward's mean loss.
    func checkEngineLossAgainstTrainingForward(_ config: Gemma3Config, seed: UInt64, tokens: [TokenID], maxContext: Int, chunk: Int) throws {
        let store = randomStore(config, seed: seed)
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store), maxContext: maxContext, prefillChunk: chunk)
        let (sum, count) = try engine.crossEntropySum(tokens)
        #expect(count == tokens.count - 1)
        let model = try Gemma3TrainingModel(config: config, batchSize: 1, sequenceLength: tokens.count - 1, parameters: store, training: false)
        let loss = try model.forward(inputs: tokens.dropLast().map { Int32($0) }, targets: tokens.dropFirst().map { Int32($0) })
        #expect(abs(sum / Double(count) - Double(loss)) < 1e-5, "tied \(config.tieWordEmbeddings): \(sum / Double(count)) vs \(loss)")
    }

    @Test func evaluationLossMatchesTheTrainingForward() throws {
        let config = smallConfig(window: 5)
        try checkEngineLossAgainstTrainingForward(config, seed: 21, tokens: (0..<41).map { TokenID(($0 * 37 + 11) % config.vocabSize) },
                                                  maxContext: 64, chunk: 16)
    }

    @Test func evaluationLossOverAVocabularyOfSeveralHeadPanels() throws {
        // 9000 tokens: the LM head is walked in three panels (4096, 4096, 808 rows), untied and tied,
        // with targets in every panel; the training forward computes the full-row log-softmax.
        for tied in [false, true] {
            let config = smallConfig(window: 5, tied: tied, vocab: 9000)
            try checkEngineLossAgainstTrainingForward(config, seed: tied ? 23 : 22, tokens: (0..<70).map { TokenID(($0 * 4099 + 13) % config.vocabSize) },
                                                      maxContext: 80, chunk: 32)
        }
    }

    @Test func evaluationWithBOSWindowsPredictsEveryToken() throws {
        let config = smallConfig(window: 5)
        let store = randomStore(config, seed: 24)
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store), maxContext: 17, prefillChunk: 8)
        let bos: TokenID = 2
        let tokens = (0..<37).map { TokenID(($0 * 29 + 5) % config.vocabSize) }
        let result = try Evaluation.evaluate(engine: engine, tokens: tokens, context: 16, bos: bos)
        #expect(result.predictedTokens == 37)
        #expect(result.windows == 3)
        // The same windows by hand: [bos] + 16, [bos] + 16, [bos] + 5, each through the training forward.
        var expected = 0.0
        for start in stride(from: 0, to: 37, by: 16) {
            let window = [bos] + tokens[start..<min(start + 16, 37)]
            let model = try Gemma3TrainingModel(config: config, batchSize: 1, sequenceLength: window.count - 1, parameters: store, training: false)
            let loss = try model.forward(inputs: window.dropLast().map { Int32($0) }, targets: window.dropFirst().map { Int32($0) })
            expected += Double(loss) * Double(window.count - 1)
        }
        #expect(abs(result.lossSum - expected) < 1e-4 * Double(37))
        // Without BOS: windows of T + 1 from 0, T, 2T, … (every token but the first predicted).
        let plain = try Evaluation.evaluate(engine: engine, tokens: tokens, context: 16)
        #expect(plain.predictedTokens == 36)
        #expect(throws: GenerationError.self) { try Evaluation.evaluate(engine: engine, tokens: tokens, context: 17, bos: bos) }
    }

    @Test func bf16EngineEqualsF32EngineOnRoundedWeights() throws {
        let config = smallConfig(window: 5)
        let store = randomStore(config, seed: 31)
        let rounded = ParameterStore(config: config)
        rounded.copy(from: store)
        for t in store.layout.tensors where t.isMatrix {
            let v = rounded.view(t)
            for i in 0..<v.count { v[i] = NumberFormats.bf16ToFloat(NumberFormats.floatToBF16(v[i])) }
        }
        let bf16 = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store, dtype: .bf16), maxContext: 128)
        let f32 = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: rounded), maxContext: 128)
        #expect(bf16.weights.decodeBytesPerToken * 2 < f32.weights.decodeBytesPerToken + 4 * config.hiddenSize)
        let prompt: [TokenID] = [5, 17, 2, 88, 40, 3, 9]
        var a = Array(try bf16.prefill(prompt)), b = Array(try f32.prefill(prompt))
        for step in 0..<20 {
            var worst: Float = 0
            for i in 0..<a.count { worst = max(worst, abs(a[i] - b[i])) }
            #expect(worst < 1e-4, "step \(step)")
            let t = TokenID(argmax(b[...]))
            a = Array(try bf16.decode(t)); b = Array(try f32.decode(t))
        }
    }

    @Test func contextOverflowAndBadTokensAreErrors() throws {
        let config = smallConfig()
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: randomStore(config, seed: 1)), maxContext: 8)
        #expect(throws: GenerationError.self) { try engine.prefill(Array(repeating: 1, count: 9)) }
        #expect(throws: GenerationError.self) { try engine.prefill([]) }
        #expect(throws: GenerationError.self) { try engine.prefill([TokenID(config.vocabSize)]) }
        _ = try engine.prefill(Array(repeating: 1, count: 8))
        #expect(throws: GenerationError.self) { try engine.decode(1) }
        #expect(throws: GenerationError.self) {
            try InferenceEngine(weights: engine.weights, maxContext: config.maxPositionEmbeddings + 1)
        }
    }
}

@Suite struct GoldenInferenceTests {
    func load() throws -> (Gemma3Config, ParameterStore, SafeTensorsFile) {
        let dir = sharedGolden.appendingPathComponent("tiny")
        let config = try Gemma3Config.load(from: dir.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("golden.safetensors"))
        let store = ParameterStore(config: config)
        try store.load(from: file, allowUnexpected: true)
        return (config, store, file)
    }

    /// transformers' `generate(input_ids[0, :5], max_new_tokens=16, do_sample=False)` with its cache.
    @Test func greedyIdsMatchTransformers() throws {
        let (config, store, file) = try load()
        let inputs = try file.integers("input_ids")
        let expected = try file.integers("greedy_ids")
        #expect(expected.count == 21)
        for dtype in [WeightDType.f32] {
            for chunk in [512, 2] {
                let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store, dtype: dtype), maxContext: 64, prefillChunk: chunk)
                let generator = Generator(engine: engine, tokenizer: ByteTokenizer())
                let result = try generator.generate(promptIds: inputs[0..<5].map { TokenID($0) }, options: GenerationOptions(maxNewTokens: 16))
                #expect((result.promptIds + result.generatedIds).map(Int.init) == expected, "chunk \(chunk)")
            }
        }
    }

    /// Feeding both golden sequences one token at a time (the decode path, window 8 over 24
    /// positions) reproduces transformers' logits at every position; so does chunked prefill.
    @Test func decodeStepLogitsMatchTransformers() throws {
        let (config, store, file) = try load()
        let inputs = try file.integers("input_ids")
        let golden = try file.floats("logits")
        let T = 24, V = config.vocabSize
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store), maxContext: T, prefillChunk: 5)
        var worst: Float = 0
        for b in 0..<2 {
            engine.reset()
            for t in 0..<T {
                let logits = try engine.decode(TokenID(inputs[b * T + t]))
                worst = max(worst, maxAbsDifference(UnsafeBufferPointer(logits), golden[((b * T + t) * V)..<((b * T + t + 1) * V)]))
            }
            engine.reset()
            for end in [3, 9, 17, 24] {  // prefill chunks of 5 over prefixes of several lengths
                engine.reset()
                let logits = try engine.prefill(inputs[(b * T)..<(b * T + end)].map { TokenID($0) })
                worst = max(worst, maxAbsDifference(UnsafeBufferPointer(logits), golden[((b * T + end - 1) * V)..<((b * T + end) * V)]))
            }
        }
        #expect(worst < 1e-4, "max |Δ logits| vs transformers = \(worst)")
    }

    @Test func evaluationLossMatchesTransformers() throws {
        let (config, store, file) = try load()
        let inputs = try file.integers("input_ids")
        let loss = try file.floats("loss")[0]
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store), maxContext: 24, prefillChunk: 7)
        var sum = 0.0, count = 0
        for b in 0..<2 {
            let r = try engine.crossEntropySum(inputs[(b * 24)..<(b * 24 + 24)].map { TokenID($0) })
            sum += r.sum
            count += r.count
        }
        #expect(count == 46)
        #expect(abs(sum / Double(count) - Double(loss)) < 1e-5)
    }
}

/// A tokenizer whose every token is the same few bytes, to test streaming without a vocabulary.
struct ByteTokenizer: TextTokenizer {
    var bytes: [UInt8] = [0x61]
    var vocabularySize: Int { 256 }
    var endOfTextID: TokenID { 0 }
    func encode(_ text: String) -> [TokenID] { text.utf8.map { TokenID($0) } }
    func bytes(of token: TokenID) -> [UInt8]? { bytes }
    func text(of ids: [TokenID]) throws -> String { String(decoding: ids.flatMap { _ in bytes }, as: UTF8.self) }
}

@Suite struct GenerationTests {
    func generator(window: Int = 5) throws -> Generator {
        let config = smallConfig(window: window, vocab: 300)
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: randomStore(config, seed: 5)), maxContext: 256)
        return Generator(engine: engine, tokenizer: ByteTokenizer())
    }

    @Test func streamedPiecesNeverSplitACharacter() throws {
        // Every token is AC E2 82: the stream is a stray continuation byte, then "€" (E2 82 AC)
        // straddling every token boundary, then an unfinished "€".
        let g = try generator()
        g.engine.reset()
        let gen = Generator(engine: g.engine, tokenizer: ByteTokenizer(bytes: [0xAC, 0xE2, 0x82]))
        var pieces: [String] = []
        let result = try gen.generate(promptIds: [1, 2, 3], options: GenerationOptions(maxNewTokens: 10)) { pieces.append($0) }
        #expect(result.generatedIds.count == 10)
        #expect(pieces.joined() == result.text)
        #expect(result.text == "\u{FFFD}" + String(repeating: "€", count: 9) + "\u{FFFD}")
        #expect(pieces.dropFirst().dropLast().allSatisfy { !$0.unicodeScalars.contains("\u{FFFD}") })
    }

    @Test func stopStringsCutTheTextAndStopTokensEndGeneration() throws {
        let g = Generator(engine: try generator().engine, tokenizer: ByteTokenizer(bytes: Array("ab".utf8)))
        var shown = ""
        let r = try g.generate(promptIds: [1, 2], options: GenerationOptions(maxNewTokens: 50, stopStrings: ["bab"])) { shown += $0 }
        #expect(r.text == "a")
        #expect(shown == "a")  // the held-back "ba" prefix of the stop string never reached the stream
        #expect(r.stopReason == .stopString)
        #expect(r.generatedIds.count == 2)

        let all = Set((0..<300).map { TokenID($0) })
        let s = try g.generate(promptIds: [1, 2], options: GenerationOptions(maxNewTokens: 50, stopTokenIds: all))
        #expect(s.generatedIds.count == 1 && s.text.isEmpty && s.stopReason == .stopToken)

        let m = try g.generate(promptIds: [1, 2], options: GenerationOptions(maxNewTokens: 7))
        #expect(m.text == String(repeating: "ab", count: 7) && m.stopReason == .maxNewTokens && m.decodeSteps == 6)
    }

    @Test func generationStopsAtTheEndOfTheContext() throws {
        let config = smallConfig(window: 3)
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: randomStore(config, seed: 6)), maxContext: 12)
        let g = Generator(engine: engine, tokenizer: ByteTokenizer())
        let r = try g.generate(promptIds: [1, 2, 3, 4, 5], options: GenerationOptions(maxNewTokens: 100))
        #expect(r.stopReason == .contextFull)
        #expect(r.promptIds.count + r.generatedIds.count == 13)  // 12 positions fed, the last token only sampled
        #expect(throws: GenerationError.self) { try g.generate(promptIds: Array(repeating: 1, count: 13), options: GenerationOptions()) }
        #expect(throws: GenerationError.self) { try g.generate(prompt: "", options: GenerationOptions()) }
    }

    @Test func stopStringFilterHoldsBackOnlyPossiblePrefixes() {
        var f = StopStringFilter(["END", "xyz"])
        #expect(f.push("hello E") == ("hello ", false))
        #expect(f.push("N") == ("", false))
        #expect(f.push("d") == ("ENd", false))
        #expect(f.push("ab x") == ("ab ", false))
        #expect(f.push("yEN") == ("xy", false))
        #expect(f.push("D and more") == ("", true))
    }
}

@Suite struct EvaluationTests {
    /// The windowed evaluation (training forward, batched, padded) against the engine's
    /// independent per-window cross-entropy: same windows, same loss, every token once.
    @Test func windowsPredictEveryTokenOnceWithTheTrainingNumerics() throws {
        let config = smallConfig(window: 5)
        let store = randomStore(config, seed: 41)
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store), maxContext: 64, prefillChunk: 7)
        for (count, T, B) in [(101, 16, 3), (97, 16, 2), (40, 64, 1), (2, 8, 4), (33, 1, 5)] {
            let tokens = (0..<count).map { UInt16(($0 * 31 + 7) % config.vocabSize) }
            let result = try tokens.withUnsafeBufferPointer {
                try Evaluation.evaluate(config: config, parameters: store, tokens: $0, context: T, batchSize: B)
            }
            #expect(result.predictedTokens == count - 1)
            let effectiveT = min(T, count - 1)
            #expect(result.windows == (count - 1 + effectiveT - 1) / effectiveT)
            var sum = 0.0
            var start = 0
            while start < count - 1 {
                let window = tokens[start...min(start + effectiveT, count - 1)].map(TokenID.init)
                sum += try engine.crossEntropySum(window).sum
                start += effectiveT
            }
            #expect(abs(result.loss - sum / Double(count - 1)) < 1e-5, "count \(count), T \(T)")
        }
        #expect(throws: GenerationError.self) {
            try [UInt16(1)].withUnsafeBufferPointer { try Evaluation.evaluate(config: config, parameters: store, tokens: $0, context: 8) }
        }
        #expect(throws: GenerationError.self) {
            try [UInt16(1), UInt16(config.vocabSize)].withUnsafeBufferPointer { try Evaluation.evaluate(config: config, parameters: store, tokens: $0, context: 8) }
        }
    }
}
