import Foundation
import Gemma3Kernels
@testable import Gemma3Model

/// ../shared/golden, located from this source file so tests run from any working directory.
let sharedGolden = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("shared/golden")

/// A small model with every structural feature: GQA (2 KV heads for 4 query heads), a sliding
/// window of `window`, a full layer between sliding ones, query_pre_attn_scalar ≠ head_dim,
/// hidden ≠ heads × head_dim.
/// `kvHeads: 1` gives multi-query attention, as in Gemma 3 270M.
func smallConfig(window: Int = 5, tied: Bool = true, vocab: Int = 97, kvHeads: Int = 2) -> Gemma3Config {
    var c = Gemma3Config(
        vocabSize: vocab, hiddenSize: 24, intermediateSize: 40, numHiddenLayers: 4,
        numAttentionHeads: 4, numKeyValueHeads: kvHeads, headDim: 8, queryPreAttnScalar: 12,
        slidingWindow: window,
        layerTypes: [.slidingAttention, .slidingAttention, .fullAttention, .slidingAttention],
        ropeThetaFull: 1_000_000, ropeThetaSliding: 10_000, tieWordEmbeddings: tied, maxPositionEmbeddings: 512)
    c.eosTokenIds = []
    return c
}

/// Random weights: matrices ~ N(0, std²), norm weights ~ N(0, 0.1²) (so a missing "1 +" shows).
func randomStore(_ config: Gemma3Config, seed: UInt64, std: Double = 0.2) -> ParameterStore {
    let store = ParameterStore(config: config)
    var rng = SplitMix64(seed: seed)
    for t in store.layout.tensors { rng.fillNormal(store.view(t), std: t.isMatrix ? std : 0.1) }
    return store
}

/// Logits of every position of `tokens` from the training model's forward pass (no cache).
func referenceLogits(_ config: Gemma3Config, _ store: ParameterStore, _ tokens: [TokenID]) throws -> [Float] {
    let model = try Gemma3TrainingModel(config: config, batchSize: 1, sequenceLength: tokens.count,
                                        parameters: store, training: false)
    _ = try model.forward(inputs: tokens, targets: nil)
    return Array(model.logits)
}

func maxAbsDifference(_ a: UnsafeBufferPointer<Float>, _ b: ArraySlice<Float>) -> Float {
    precondition(a.count == b.count)
    var m: Float = 0
    for (x, y) in zip(a, b) { m = max(m, abs(x - y)) }
    return m
}

func argmax(_ x: ArraySlice<Float>) -> Int {
    var best = x.startIndex
    for i in x.indices where x[i] > x[best] { best = i }
    return best - x.startIndex
}

/// The real Gemma 3 270M GGUF: $GEMMA3_GGUF, else the `gemma3 download gemma3-270m` cache path.
let realModelPath: String? = {
    let env = ProcessInfo.processInfo.environment
    let candidates: [String?] = [env["GEMMA3_GGUF"],
                                 FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/gemma3/gemma-3-270m-q4_k_m.gguf").path]
    return candidates.compactMap { $0 }.first { FileManager.default.fileExists(atPath: $0) }
}()

/// Whether two sequences of floats hold the same bits. Takes copies (arrays, slices), not engine
/// buffers: those live only as long as their engine, which the optimizer may release after its last use.
func bitsEqual<A: Collection<Float>, B: Collection<Float>>(_ a: A, _ b: B) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}
