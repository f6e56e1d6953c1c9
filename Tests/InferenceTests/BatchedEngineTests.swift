import Foundation
import Testing
import Gemma3Kernels
import Gemma3Formats
@testable import Gemma3Model

/// `BatchedEngine` (continuous batching) against lone `InferenceEngine`s: bit-identical logits for
/// every slot whatever shares its decode steps, exact rewinds, and errors that change nothing.
@Suite struct BatchedEngineTests {
    /// One sequence served by a slot: it joins at step `join` (its prompt then goes in one chunk per
    /// step), decodes `decodeSteps` greedy tokens in the shared steps, then leaves the slot.
    struct Visit {
        let slot: Int
        let join: Int
        let prompt: [TokenID]
        let decodeSteps: Int
    }

    /// Runs the visits step by step: each step first feeds one prefill chunk of every joining slot,
    /// then decodes all decoding slots in one call, in a random order. Every logits row is compared
    /// bit for bit with a fresh `InferenceEngine` (same prefill chunk) fed the same tokens.
    /// Returns the number of decode rows compared.
    @discardableResult
    func runVisits(_ visits: [Visit], weights: InferenceWeights, slots: Int, context: Int, chunk: Int, seed: UInt64) throws -> Int {
        let engine = try BatchedEngine(weights: weights, slots: slots, context: context, prefillChunk: chunk)
        #expect(engine.slotCount == slots && engine.contextLength == context && engine.prefillChunk == min(chunk, context))
        #expect(engine.vocabularySize == weights.config.vocabSize)
        final class Active {
            let visit: Visit
            let reference: InferenceEngine
            var fed = 0              // prompt tokens fed so far
            var next: TokenID = 0    // the token to decode next
            var remaining: Int
            init(_ visit: Visit, _ reference: InferenceEngine) { self.visit = visit; self.reference = reference; remaining = visit.decodeSteps }
        }
        var rng = SplitMix64(seed: seed)
        var active: [Int: Active] = [:]
        var pending = visits.sorted { $0.join < $1.join }
        var compared = 0, step = 0
        while !pending.isEmpty || !active.isEmpty {
            while let v = pending.first, v.join <= step, active[v.slot] == nil {
                pending.removeFirst()
                // A slot is reused by rewinding it to 0 (always exact).
                #expect(engine.rewind(slot: v.slot, to: 0))
                #expect(engine.cachedLength(slot: v.slot) == 0)
                active[v.slot] = Active(v, try InferenceEngine(weights: weights, maxContext: context, prefillChunk: chunk))
            }
            // Prefill: one chunk per joining slot.
            for slot in active.keys.sorted() {
                let a = active[slot]!
                guard a.fed < a.visit.prompt.count else { continue }
                let n = min(engine.prefillChunk, a.visit.prompt.count - a.fed)
                let last = a.fed + n == a.visit.prompt.count
                let logits = try engine.prefill(slot: slot, tokens: Array(a.visit.prompt[a.fed..<(a.fed + n)]), wantsLogits: last)
                a.fed += n
                #expect(engine.cachedLength(slot: slot) == a.fed)
                if last {
                    let got = Array(try #require(logits))
                    let expected = Array(try a.reference.prefill(a.visit.prompt))
                    #expect(bitsEqual(got, expected),
                            "slot \(slot): prompt of \(a.visit.prompt.count) logits differ from a lone engine's")
                    a.next = TokenID(argmax(got[...]))
                } else {
                    #expect(logits == nil)
                }
            }
            // Decode: every slot whose prompt is in, in a random order.
            var rows = active.filter { $0.value.fed == $0.value.visit.prompt.count && $0.value.remaining > 0 }.map(\.key).sorted()
            rows.shuffle(using: &rng)
            if !rows.isEmpty {
                let tokens = rows.map { active[$0]!.next }
                let logits = try engine.decode(slots: rows, tokens: tokens)
                let V = engine.vocabularySize
                #expect(logits.count == rows.count * V)
                // Copy the rows out: the references run after and the buffer is compared row by row.
                let batch = Array(logits)
                for (i, slot) in rows.enumerated() {
                    let a = active[slot]!
                    let expected = Array(try a.reference.decode(tokens[i]))
                    let row = batch[(i * V)..<((i + 1) * V)]
                    #expect(bitsEqual(row, expected),
                            "step \(step), slot \(slot) (row \(i) of \(rows.count), position \(a.reference.position - 1)): logits differ from a lone engine's")
                    a.next = TokenID(argmax(row))
                    a.remaining -= 1
                    compared += 1
                    #expect(engine.cachedLength(slot: slot) == a.reference.position)
                }
            }
            for (slot, a) in active where a.fed == a.visit.prompt.count && a.remaining == 0 { active[slot] = nil }
            step += 1
        }
        return compared
    }

    func randomPrompt(_ n: Int, vocab: Int, rng: inout SplitMix64) -> [TokenID] {
        (0..<n).map { _ in TokenID(rng.next() % UInt64(vocab)) }
    }

    /// Eight slots on a model whose window (5 or 3) is far below the prompts: prompts cross prefill
    /// chunks (chunk 16) and the window; the full layer's decode attention is split in parts for one
    /// slot (270 positions) and not for the others (150 and fewer); slots join and leave at different
    /// steps and are reused.
    @Test func eightSlotsMatchLoneEnginesBitForBitOnASmallModel() throws {
        for (window, kvHeads) in [(5, 2), (3, 1)] {
            let config = smallConfig(window: window, vocab: 300, kvHeads: kvHeads)
            let weights = try InferenceWeights(config: config, parameters: randomStore(config, seed: 71))
            var rng = SplitMix64(seed: 72)
            // Full-layer keys of 1…255 (one attention part) and ≥ 256 (split in parts, merged) share steps.
            let lengths = [1, 4, 16, 150, 33, 270, 9, 2]
            var visits = lengths.enumerated().map { s, n in
                Visit(slot: s, join: [0, 0, 1, 3, 2, 0, 6, 9][s], prompt: randomPrompt(n, vocab: config.vocabSize, rng: &rng),
                      decodeSteps: [25, 12, 30, 8, 20, 15, 3, 18][s])
            }
            // Second visits: slots 1 and 6 are reused for new sequences after they leave.
            visits.append(Visit(slot: 1, join: 20, prompt: randomPrompt(21, vocab: config.vocabSize, rng: &rng), decodeSteps: 14))
            visits.append(Visit(slot: 6, join: 13, prompt: randomPrompt(5, vocab: config.vocabSize, rng: &rng), decodeSteps: 22))
            let compared = try runVisits(visits, weights: weights, slots: 8, context: 320, chunk: 16, seed: 73)
            #expect(compared == visits.reduce(0) { $0 + $1.decodeSteps })
        }
    }

    /// The same on the float32 checkpoint of the golden tests (window 8, one KV head, 50257 tokens),
    /// in bfloat16 too, with a prefill chunk of 6.
    @Test func goldenCheckpointSlotsMatchLoneEngines() throws {
        let dir = sharedGolden.appendingPathComponent("tiny")
        let config = try Gemma3Config.load(from: dir.appendingPathComponent("config.json"))
        let store = ParameterStore(config: config)
        try store.load(from: try SafeTensorsFile(url: dir.appendingPathComponent("golden.safetensors")), allowUnexpected: true)
        for dtype in WeightDType.allCases {
            let weights = try InferenceWeights(config: config, parameters: store, dtype: dtype)
            var rng = SplitMix64(seed: 81)
            let visits = [(0, 0, 13, 20), (1, 0, 3, 25), (2, 1, 6, 9), (3, 2, 7, 30), (4, 4, 25, 11), (5, 5, 1, 16), (6, 7, 40, 7), (7, 0, 9, 2),
                          (7, 6, 14, 12)]
                .map { Visit(slot: $0.0, join: $0.1, prompt: randomPrompt($0.2, vocab: config.vocabSize, rng: &rng), decodeSteps: $0.3) }
            try runVisits(visits, weights: weights, slots: 8, context: 96, chunk: 6, seed: 82)
        }
    }

    /// The real Gemma 3 270M (its default kernels on this CPU): prompts crossing the 512-token window
    /// and prefill chunk, slots joining and leaving.
    @Test func realModelSlotsMatchLoneEngines() throws {
        guard let path = realModelPath else {
            print("NOTICE: real model not found (GEMMA3_GGUF or ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf): skipped the batched-engine comparison on Gemma 3 270M")
            return
        }
        let model = try LanguageModel.load(path)
        // Prefill copies of the weights are built by the first product of ≥ 32 tokens, and shorter
        // products give other bits before that: build them first so every engine sees the same weights.
        _ = try InferenceEngine(weights: model.weights, maxContext: 64).prefill(Array(repeating: 2, count: 40))
        var rng = SplitMix64(seed: 91)
        let V = model.config.vocabSize
        let visits = [(0, 0, 600, 6), (1, 0, 3, 12), (2, 1, 40, 8), (3, 2, 1, 10), (4, 0, 17, 4), (5, 3, 90, 7), (6, 5, 260, 5), (7, 0, 150, 3),
                      (4, 6, 25, 5)]
            .map { Visit(slot: $0.0, join: $0.1, prompt: randomPrompt($0.2, vocab: V, rng: &rng), decodeSteps: $0.3) }
        try runVisits(visits, weights: model.weights, slots: 8, context: 640, chunk: 512, seed: 92)
    }

    // MARK: - Rewind

    func rewindModel(window: Int = 5) throws -> InferenceWeights {
        let config = smallConfig(window: window, vocab: 200, kvHeads: 1)
        return try InferenceWeights(config: config, parameters: randomStore(config, seed: 101))
    }

    /// Greedy tokens and their logits from a fresh engine: `prompt`, then `steps` greedy tokens.
    func greedy(_ engine: InferenceEngine, prompt: [TokenID], steps: Int) throws -> (tokens: [TokenID], logits: [[Float]]) {
        var logits = Array(try engine.prefill(prompt))
        var tokens: [TokenID] = [], all: [[Float]] = []
        for _ in 0..<steps {
            all.append(logits)
            let t = TokenID(argmax(logits[...]))
            tokens.append(t)
            logits = Array(try engine.decode(t))
        }
        return (tokens, all)
    }

    func relativeDifference(_ a: [Float], _ b: [Float]) -> Float {
        let scale = b.map { abs($0) }.max() ?? 0
        return zip(a, b).map { abs($0 - $1) }.max()! / max(scale, 1e-30)
    }

    @Test func rewindIntoDecodedPositionsReplaysBitForBit() throws {
        // Window 5, rewind limit 12: a sequence of 60 positions, then back by 1…12 positions and a
        // different continuation decoded token by token: bit for bit a fresh engine's, as the same
        // positions were fed the same way (prefill chunks of 8, then single tokens).
        let weights = try rewindModel()
        var rng = SplitMix64(seed: 102)
        let prompt = randomPrompt(30, vocab: 200, rng: &rng)
        let tail = randomPrompt(30, vocab: 200, rng: &rng)
        let engine = try BatchedEngine(weights: weights, slots: 2, context: 128, prefillChunk: 8, rewindLimit: 12)
        for back in [1, 2, 5, 7, 12] {
            #expect(engine.rewind(slot: 0, to: 0))
            for start in stride(from: 0, to: 30, by: 8) {
                try engine.prefill(slot: 0, tokens: Array(prompt[start..<min(30, start + 8)]), wantsLogits: false)
            }
            for t in tail { _ = try engine.decode(slots: [0], tokens: [t]) }
            #expect(engine.cachedLength(slot: 0) == 60)
            #expect(engine.rewind(slot: 0, to: 60 - back), "rewind by \(back)")
            #expect(engine.cachedLength(slot: 0) == 60 - back)
            let reference = try InferenceEngine(weights: weights, maxContext: 128, prefillChunk: 8)
            _ = try reference.prefill(prompt)
            for t in tail.prefix(30 - back) { _ = try reference.decode(t) }
            // A different continuation from there, also through slot 1 in the same steps.
            var other = randomPrompt(25, vocab: 200, rng: &rng)
            other[0] = (tail[30 - back] + 1) % 200
            for (i, t) in other.enumerated() {
                let slots = i % 2 == 0 ? [0] : [1, 0]
                let logits = Array(try engine.decode(slots: slots, tokens: slots.map { $0 == 0 ? t : TokenID(i) }))
                let expected = Array(try reference.decode(t))
                let row = slots.firstIndex(of: 0)!
                #expect(bitsEqual(logits[(row * 200)..<((row + 1) * 200)], expected),
                        "back \(back), step \(i)")
            }
            withExtendedLifetime(reference) {}
            #expect(engine.rewind(slot: 1, to: 0))
        }
    }

    @Test func rewindThenPrefillOfTheRestAgreesWithAFreshRun() throws {
        // Prompt-cache reuse: a cached prompt of 47 positions, a new request sharing its first 40;
        // the engine rewinds to 40 and prefills the remaining tokens of the new prompt. The chunk
        // boundaries differ from a fresh prefill, so values agree closely, not bit for bit.
        let weights = try rewindModel()
        var rng = SplitMix64(seed: 103)
        let shared = randomPrompt(40, vocab: 200, rng: &rng)
        let oldSuffix = randomPrompt(7, vocab: 200, rng: &rng)
        let newSuffix = randomPrompt(11, vocab: 200, rng: &rng)
        let engine = try BatchedEngine(weights: weights, slots: 1, context: 128, prefillChunk: 16, rewindLimit: 8)
        let old = shared + oldSuffix
        for start in stride(from: 0, to: old.count, by: 16) {
            try engine.prefill(slot: 0, tokens: Array(old[start..<min(old.count, start + 16)]), wantsLogits: false)
        }
        #expect(engine.rewind(slot: 0, to: 40))
        var logits = Array(try #require(try engine.prefill(slot: 0, tokens: newSuffix, wantsLogits: true)))
        let fresh = try greedy(try InferenceEngine(weights: weights, maxContext: 128, prefillChunk: 16), prompt: shared + newSuffix, steps: 20)
        for step in 0..<20 {
            let t = TokenID(argmax(logits[...]))
            #expect(t == fresh.tokens[step], "greedy token \(step)")
            let d = relativeDifference(logits, fresh.logits[step])
            #expect(d < 1e-4, "step \(step): relative difference \(d)")
            logits = Array(try engine.decode(slots: [0], tokens: [fresh.tokens[step]]))
        }
        withExtendedLifetime(engine) {}
    }

    @Test func rewindBeyondTheLimitIsRefusedAndChangesNothing() throws {
        let weights = try rewindModel()
        var rng = SplitMix64(seed: 104)
        let tokens = randomPrompt(50, vocab: 200, rng: &rng)
        let limit = 6
        let engine = try BatchedEngine(weights: weights, slots: 1, context: 128, prefillChunk: 16, rewindLimit: limit)
        let reference = try InferenceEngine(weights: weights, maxContext: 128, prefillChunk: 16)
        _ = try engine.prefill(slot: 0, tokens: Array(tokens[0..<16]), wantsLogits: false)
        _ = try reference.prefill(Array(tokens[0..<16]))
        for t in tokens[16..<50] {
            _ = try engine.decode(slots: [0], tokens: [t])
            _ = try reference.decode(t)
        }
        #expect(!engine.rewind(slot: 0, to: 50 - limit - 1))
        #expect(!engine.rewind(slot: 0, to: 3))
        #expect(!engine.rewind(slot: 0, to: 51))       // past the end
        #expect(!engine.rewind(slot: 0, to: -1))
        #expect(!engine.rewind(slot: 1, to: 0))        // no such slot
        #expect(engine.cachedLength(slot: 0) == 50)
        // Nothing changed: the next tokens are still the reference's bits.
        for t: TokenID in [5, 6, 7] {
            let got = Array(try engine.decode(slots: [0], tokens: [t]))
            let expected = Array(try reference.decode(t))
            #expect(bitsEqual(got, expected))
        }
        withExtendedLifetime(reference) {}
        // Rewinds add up: two of 3 reach back 6 from the furthest position (53), a third does not.
        #expect(engine.rewind(slot: 0, to: 50))
        #expect(engine.rewind(slot: 0, to: 47))
        #expect(!engine.rewind(slot: 0, to: 46))
        #expect(engine.rewind(slot: 0, to: 0))
        #expect(engine.cachedLength(slot: 0) == 0)
        // Without evictions (context within the window) every rewind is exact.
        let wide = try BatchedEngine(weights: try rewindModel(window: 64), slots: 1, context: 60, prefillChunk: 16, rewindLimit: 0)
        for start in stride(from: 0, to: 48, by: 16) { try wide.prefill(slot: 0, tokens: Array(tokens[start..<(start + 16)]), wantsLogits: false) }
        #expect(wide.rewind(slot: 0, to: 1))
    }

    // MARK: - Errors and sizes

    @Test func errorsLeaveEverySlotUnchanged() throws {
        let config = smallConfig(window: 4, vocab: 100)
        let weights = try InferenceWeights(config: config, parameters: randomStore(config, seed: 111))
        let engine = try BatchedEngine(weights: weights, slots: 3, context: 20, prefillChunk: 8)
        let refs = try (0..<3).map { _ in try InferenceEngine(weights: weights, maxContext: 20, prefillChunk: 8) }
        let prompts: [[TokenID]] = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12]]
        for s in 0..<3 {
            _ = try engine.prefill(slot: s, tokens: prompts[s], wantsLogits: true)
            _ = try refs[s].prefill(prompts[s])
        }
        func lengths() -> [Int] { (0..<3).map { engine.cachedLength(slot: $0) } }
        let before = lengths()
        #expect(throws: GenerationError.self) { try engine.decode(slots: [0, 1], tokens: [3, 100]) }      // bad id in row 1
        #expect(throws: GenerationError.self) { try engine.decode(slots: [0, 1], tokens: [3, -1]) }
        #expect(throws: GenerationError.self) { try engine.decode(slots: [0, 2, 0], tokens: [3, 4, 5]) }  // duplicate slot
        #expect(throws: GenerationError.self) { try engine.decode(slots: [0, 3], tokens: [3, 4]) }        // no slot 3
        #expect(throws: GenerationError.self) { try engine.decode(slots: [0, 1], tokens: [3]) }           // counts differ
        #expect(throws: GenerationError.self) { try engine.prefill(slot: 0, tokens: [1, 100], wantsLogits: true) }
        #expect(throws: GenerationError.self) { try engine.prefill(slot: 0, tokens: [], wantsLogits: true) }
        #expect(throws: GenerationError.self) { try engine.prefill(slot: 0, tokens: Array(repeating: 1, count: 9), wantsLogits: true) }  // > chunk
        #expect(throws: GenerationError.self) { try engine.prefill(slot: -1, tokens: [1], wantsLogits: true) }
        // Over the context: slot 1 holds 8 positions of 20.
        try engine.prefill(slot: 1, tokens: Array(repeating: 3, count: 8), wantsLogits: false)
        _ = try refs[1].prefill(Array(repeating: 3, count: 8))
        #expect(throws: GenerationError.self) { try engine.prefill(slot: 1, tokens: Array(repeating: 3, count: 5), wantsLogits: true) }
        try engine.prefill(slot: 1, tokens: Array(repeating: 3, count: 4), wantsLogits: false)
        _ = try refs[1].prefill(Array(repeating: 3, count: 4))
        #expect(engine.cachedLength(slot: 1) == 20)
        #expect(throws: GenerationError.self) { try engine.decode(slots: [0, 1], tokens: [3, 4]) }        // slot 1 is full
        #expect(throws: GenerationError.self) { try engine.prefill(slot: 1, tokens: [1], wantsLogits: true) }
        #expect(lengths() == [before[0], 20, before[2]])
        #expect(try engine.decode(slots: [], tokens: []).isEmpty)
        // The failed calls left the caches as they were: the next step matches the references.
        let logits = Array(try engine.decode(slots: [2, 0], tokens: [7, 8]))
        let expected2 = Array(try refs[2].decode(7)), expected0 = Array(try refs[0].decode(8))
        #expect(bitsEqual(logits[0..<100], expected2))
        #expect(bitsEqual(logits[100..<200], expected0))
        // Engine buffers live as long as their engine: keep the engines until every copy is taken.
        withExtendedLifetime((engine, refs)) {}
    }

    @Test func initializerChecksAndKVBytes() throws {
        let config = smallConfig(window: 5, vocab: 100, kvHeads: 2)
        let weights = try InferenceWeights(config: config, parameters: randomStore(config, seed: 121))
        #expect(throws: GenerationError.self) { try BatchedEngine(weights: weights, slots: 0, context: 10) }
        #expect(throws: GenerationError.self) { try BatchedEngine(weights: weights, slots: 1, context: 0) }
        #expect(throws: GenerationError.self) { try BatchedEngine(weights: weights, slots: 1, context: config.maxPositionEmbeddings + 1) }
        #expect(throws: GenerationError.self) { try BatchedEngine(weights: weights, slots: 1, context: 10, prefillChunk: 0) }
        #expect(throws: GenerationError.self) { try BatchedEngine(weights: weights, slots: 1, context: 10, rewindLimit: -1) }
        let engine = try BatchedEngine(weights: weights, slots: 4, context: 100, prefillChunk: 512, rewindLimit: 20)
        #expect(engine.prefillChunk == 100)
        // Per slot: 100 rows per full layer, 5 ring + 19 history rows per sliding layer (3 of them).
        let rowBytes = 2 * config.numKeyValueHeads * config.headDim * 4
        #expect(engine.kvCacheBytes == 4 * (KVCache.bytes(config: config, context: 100) + 3 * 19 * rowBytes))
        #expect(engine.cachedLength(slot: 3) == 0 && engine.cachedLength(slot: 4) == 0)
    }
}
