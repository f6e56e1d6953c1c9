import Foundation
import Gemma3Tokenizers
import Gemma3Kernels

/// Runs a Gemma 3 model for generation: a batched prefill of the prompt (matrix-matrix products,
/// in chunks), then one token at a time (bandwidth-bound matrix-vector products) against a
/// per-layer KV cache whose sliding layers are ring buffers.
///
/// Independent of the training graph: it keeps no activations for a backward pass and reads the
/// weights only through `LinearWeight`, so float32, bfloat16 and quantized models share this code.
///
///     let engine = try InferenceEngine(weights: weights, maxContext: 2048)
///     var logits = try engine.prefill(promptIds)      // logits of the last prompt token
///     logits = try engine.decode(nextId)              // logits after one more token
///
/// Not thread-safe: one engine serves one sequence at a time (it parallelises internally).
public final class InferenceEngine: @unchecked Sendable {
    public let weights: InferenceWeights
    public var config: Gemma3Config { weights.config }
    public let cache: KVCache
    /// Longest sequence (prompt + generated tokens) this engine accepts.
    public let maxContext: Int
    /// Prompt tokens processed per batched pass; bounds the activation memory of long prompts.
    public let prefillChunk: Int

    /// The forward pass (shared with `BatchedEngine`) and its scratch.
    private let pass: DecoderPass
    private let H: Int, V: Int
    private let logitsBuffer: UnsafeMutablePointer<Float>  // [V]
    /// Evaluation scratch, allocated on first use: a panel of LM-head rows as float32
    /// [evalPanel × H] and their logits for a chunk [prefillChunk × evalPanel].
    private var evalPanel: UnsafeMutablePointer<Float>?
    private var evalLogits: UnsafeMutablePointer<Float>?
    private let evalPanelRows = 4096

    /// When set, every forward pass adds the wall time of its stages here (see `EngineProfile`).
    public var profile: EngineProfile? {
        get { pass.profile }
        set { pass.profile = newValue }
    }

    /// - Parameters:
    ///   - maxContext: the longest sequence to serve (default and upper bound: `max_position_embeddings`).
    ///   - prefillChunk: tokens per batched prefill pass.
    public init(weights: InferenceWeights, maxContext: Int? = nil, prefillChunk: Int = 512) throws {
        let config = weights.config
        let limit = config.maxPositionEmbeddings
        let context = maxContext ?? limit
        guard context > 0 else { throw GenerationError("context length must be positive, got \(context)") }
        guard context <= limit else {
            throw GenerationError("context length \(context) exceeds the model's max_position_embeddings (\(limit))")
        }
        guard prefillChunk > 0 else { throw GenerationError("prefill chunk must be positive, got \(prefillChunk)") }
        self.weights = weights
        self.maxContext = context
        self.prefillChunk = min(prefillChunk, context)
        cache = KVCache(config: config, maxContext: context)

        H = config.hiddenSize; V = config.vocabSize
        // One thread pool on the machine: OpenBLAS single-threaded, products split by `Parallel`.
        BLAS.setThreads(1)
        pass = DecoderPass(weights: weights, context: context, prefillChunk: self.prefillChunk, decodeRows: 1)
        logitsBuffer = .allocate(capacity: max(1, V))
        logitsBuffer.initialize(repeating: 0, count: max(1, V))
    }

    deinit {
        logitsBuffer.deallocate()
        evalLogits?.deallocate()
        evalPanel?.deallocate()
    }

    /// Positions already in the cache (the next token's position).
    public var position: Int { cache.count }

    /// Starts a new sequence (the cache allocation is kept).
    public func reset() { cache.reset() }

    /// Feeds `tokens` at the next positions in chunks of `prefillChunk` and returns the logits
    /// after the last one (a view of an engine buffer, valid until the next call).
    public func prefill(_ tokens: [TokenID]) throws -> UnsafeMutableBufferPointer<Float> {
        guard !tokens.isEmpty else { throw GenerationError("the prompt is empty") }
        try checkTokens(tokens)
        var start = 0
        while start < tokens.count {
            let n = min(prefillChunk, tokens.count - start)
            let last = start + n == tokens.count
            tokens[start..<(start + n)].withContiguousStorageIfAvailable { chunk in
                pass.forward(chunk, cache: cache, archive: nil, finalRows: last ? (n - 1)..<n : n..<n)
            }!
            start += n
        }
        pass.logits(rows: 1, into: logitsBuffer)
        return UnsafeMutableBufferPointer(start: logitsBuffer, count: V)
    }

    /// Feeds one token and returns the logits that predict the next (an engine buffer, valid until the next call).
    public func decode(_ token: TokenID) throws -> UnsafeMutableBufferPointer<Float> {
        try prefill([token])
    }

    /// Feeds `tokens` as one sequence from an empty cache and returns the summed natural-log
    /// cross-entropy of predicting `tokens[t + 1]` from positions 0…t, over t = 0 … count − 2,
    /// with the training forward's numerics (float32, batched products, no sampling).
    public func crossEntropySum(_ tokens: [TokenID]) throws -> (sum: Double, count: Int) {
        reset()
        guard tokens.count >= 2 else { return (0, 0) }
        try checkTokens(tokens)
        var total = 0.0
        var start = 0
        while start < tokens.count - 1 {
            // The last token of the window is only a target; positions 0 … count − 2 are inputs.
            let n = min(prefillChunk, tokens.count - 1 - start)
            tokens[start..<(start + n)].withContiguousStorageIfAvailable { chunk in
                pass.forward(chunk, cache: cache, archive: nil, finalRows: 0..<n)
            }!
            total += headCrossEntropy(rows: n, targets: tokens, firstTarget: start + 1)
            start += n
        }
        reset()
        return (total, tokens.count - 1)
    }

    /// Σ over rows r < n of −log softmax(LM head · xn[r])[targets[firstTarget + r]].
    ///
    /// The LM head is walked in panels of `evalPanelRows` vocabulary rows: each panel is decoded to
    /// float32 once for the whole chunk and multiplied with one sgemm, and every row keeps an online
    /// log-sum-exp (running maximum and rescaled sum) — so a quantized 262144-row head is decoded
    /// once per chunk rather than once per handful of rows, and no [n × vocabulary] buffer is needed.
    private func headCrossEntropy(rows n: Int, targets: [TokenID], firstTarget: Int) -> Double {
        let P = evalPanelRows, C = prefillChunk
        if evalPanel == nil { evalPanel = .allocate(capacity: P * H); evalLogits = .allocate(capacity: C * P) }
        let (panel, logits) = (UncheckedSendable(evalPanel!), UncheckedSendable(evalLogits!))
        let head = weights.lmHead
        // Per row: running maximum, rescaled sum of exponentials, and the target's logit.
        let runningMax = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        let runningSum = UnsafeMutableBufferPointer<Double>.allocate(capacity: n)
        let targetLogit = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { runningMax.deallocate(); runningSum.deallocate(); targetLogit.deallocate() }
        runningMax.initialize(repeating: -.infinity)
        runningSum.initialize(repeating: 0)
        targetLogit.initialize(repeating: 0)
        let (m, s, t) = (UncheckedSendable(runningMax), UncheckedSendable(runningSum), UncheckedSendable(targetLogit))
        let rowTargets = UncheckedSendable(Array(targets[firstTarget..<(firstTarget + n)]))
        let H = self.H
        var base = 0
        while base < V {
            let count = min(P, V - base)
            let first = base
            Parallel.chunks(count, minimumPerChunk: 64) { r in
                head.dequantize(rows: (first + r.lowerBound)..<(first + r.upperBound), into: panel.value + r.lowerBound * H)
            }
            ParallelGEMM.sgemm(transB: true, m: n, n: count, k: H, a: pass.xn, lda: H, b: panel.value, ldb: H, c: logits.value, ldc: count)
            Parallel.chunks(n) { rows in
                for r in rows {
                    let row = logits.value + r * count
                    let newMax = max(m.value[r], VectorMath.maximum(row, count))
                    let rescale = m.value[r] == -.infinity ? 0 : Double(expf(m.value[r] - newMax))
                    s.value[r] = s.value[r] * rescale + VectorMath.sumExp(row, count, shift: newMax)
                    m.value[r] = newMax
                    let target = Int(rowTargets.value[r])
                    if target >= first && target < first + count { t.value[r] = row[target - first] }
                }
            }
            base += count
        }
        var total = 0.0
        for r in 0..<n { total += Double(runningMax[r]) + log(runningSum[r]) - Double(targetLogit[r]) }
        return total
    }

    private func checkTokens(_ tokens: [TokenID]) throws {
        guard cache.count + tokens.count <= maxContext else {
            throw GenerationError("sequence of \(cache.count + tokens.count) tokens exceeds the context length \(maxContext)")
        }
        for t in tokens where t < 0 || Int(t) >= V {
            throw GenerationError("token id \(t) is outside the vocabulary (size \(V))")
        }
    }

}

/// Wall time of an engine's forward passes by stage: the weight products (q/k/v, output, gate/up,
/// down, LM head: one per tensor role, hence per tensor type of a GGUF file), attention over the
/// cache, and everything else (embedding, norms, RoPE, GELU). Attach it to `InferenceEngine.profile`.
public final class EngineProfile: @unchecked Sendable {
    public enum Stage: Int, CaseIterable, Sendable {
        case qkv, attention, output, gateUp, down, lmHead, other
        public var name: String {
            switch self {
            case .qkv: "q/k/v projections"
            case .attention: "attention (KV cache)"
            case .output: "output projection"
            case .gateUp: "gate/up projections"
            case .down: "down projection"
            case .lmHead: "LM head"
            case .other: "embedding, norms, RoPE, GELU"
            }
        }
    }
    public private(set) var nanoseconds = [UInt64](repeating: 0, count: Stage.allCases.count)
    public init() {}
    public func add(_ stage: Stage, nanoseconds ns: UInt64) { nanoseconds[stage.rawValue] += ns }
    public func seconds(_ stage: Stage) -> Double { Double(nanoseconds[stage.rawValue]) * 1e-9 }
    /// All stages together.
    public var totalSeconds: Double { Double(nanoseconds.reduce(0, +)) * 1e-9 }
    /// The share of the total spent in `stage` (0 when nothing was recorded).
    public func share(_ stage: Stage) -> Double { totalSeconds > 0 ? seconds(stage) / totalSeconds : 0 }
    public func reset() { nanoseconds = [UInt64](repeating: 0, count: Stage.allCases.count) }
}
