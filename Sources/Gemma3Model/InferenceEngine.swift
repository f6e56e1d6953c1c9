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

    // Model dimensions, hoisted out of the config.
    private let H: Int, I: Int, hd: Int, nh: Int, nkv: Int, qDim: Int, kvDim: Int, V: Int
    private let eps: Float, queryScale: Float, embedScale: Float

    // Scratch, sized for `prefillChunk` rows (reused by decode with one row).
    private let x: UnsafeMutablePointer<Float>       // residual stream [C × H]
    private let xn: UnsafeMutablePointer<Float>      // normed input [C × H]
    private let tmp: UnsafeMutablePointer<Float>     // sublayer output [C × H]
    private let q: UnsafeMutablePointer<Float>       // [C × qDim]
    private let k: UnsafeMutablePointer<Float>       // [C × kvDim]
    private let v: UnsafeMutablePointer<Float>       // [C × kvDim]
    private let att: UnsafeMutablePointer<Float>     // attention output [C × qDim]
    private let gate: UnsafeMutablePointer<Float>    // [C × I]
    private let up: UnsafeMutablePointer<Float>      // [C × I]
    private let ropeTables: UnsafeMutablePointer<Float>  // [2 bases][C][cos hd/2, sin hd/2]
    private let logitsBuffer: UnsafeMutablePointer<Float>  // [V]
    /// Gathered keys/values of a sliding layer during a multi-token pass: [(W − 1 + C) × kvDim].
    private let gatherK: UnsafeMutablePointer<Float>
    private let gatherV: UnsafeMutablePointer<Float>
    /// Attention scores; grows with the context of full layers.
    private var scores: UnsafeMutablePointer<Float>
    private var scoresCapacity: Int
    /// Partial softmax states of the decode attention: [worker][head][hd values, max, sum].
    private let attentionPartials: UnsafeMutablePointer<Float>
    private let maxAttentionWorkers: Int
    /// Evaluation scratch, allocated on first use: a panel of LM-head rows as float32
    /// [evalPanel × H] and their logits for a chunk [prefillChunk × evalPanel].
    private var evalPanel: UnsafeMutablePointer<Float>?
    private var evalLogits: UnsafeMutablePointer<Float>?
    private let evalPanelRows = 4096
    /// Rows of queries handled by one score matrix during prefill.
    private let queryBlock = 64

    /// When set, every forward pass adds the wall time of its stages here (see `EngineProfile`).
    public var profile: EngineProfile?

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

        H = config.hiddenSize; I = config.intermediateSize; hd = config.headDim
        nh = config.numAttentionHeads; nkv = config.numKeyValueHeads
        qDim = nh * hd; kvDim = nkv * hd; V = config.vocabSize
        eps = Float(config.rmsNormEps)
        queryScale = config.queryScale
        embedScale = config.embeddingScale
        // One thread pool on the machine: OpenBLAS single-threaded, products split by `Parallel`.
        BLAS.setThreads(1)

        let C = self.prefillChunk
        func buffer(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n))
            p.initialize(repeating: 0, count: max(1, n))
            return p
        }
        x = buffer(C * H); xn = buffer(C * H); tmp = buffer(C * H)
        q = buffer(C * qDim); k = buffer(C * kvDim); v = buffer(C * kvDim); att = buffer(C * qDim)
        gate = buffer(C * I); up = buffer(C * I)
        ropeTables = buffer(2 * C * hd)
        logitsBuffer = buffer(V)
        let gatherRows = min(config.slidingWindow, context) - 1 + C
        gatherK = buffer(gatherRows * kvDim); gatherV = buffer(gatherRows * kvDim)
        maxAttentionWorkers = max(2, Parallel.threadCount)  // ≥ 2 so the merge is always in use past 256 keys
        attentionPartials = buffer(maxAttentionWorkers * nh * (hd + 2))
        scoresCapacity = nh * 1024
        scores = buffer(scoresCapacity)
    }

    deinit {
        for p in [x, xn, tmp, q, k, v, att, gate, up, ropeTables, logitsBuffer, gatherK, gatherV, scores, attentionPartials] { p.deallocate() }
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
                forward(chunk, finalRows: last ? (n - 1)..<n : n..<n)
            }!
            start += n
        }
        computeLogits(rowOfXn: 0)
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
                forward(chunk, finalRows: 0..<n)
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
            ParallelGEMM.sgemm(transB: true, m: n, n: count, k: H, a: xn, lda: H, b: panel.value, ldb: H, c: logits.value, ldc: count)
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

    // MARK: - Forward pass over one chunk

    /// Runs `tokens` (at most `prefillChunk`) through every layer at positions `cache.count…`,
    /// appending their keys/values to the cache. On return, rows `finalRows` of `xn` hold the final
    /// RMSNorm output (the LM head input) of those positions.
    private func forward(_ tokens: UnsafeBufferPointer<TokenID>, finalRows: Range<Int>) {
        let n = tokens.count
        let p0 = cache.count
        cache.reserve(positions: p0 + n)
        var clock = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        // Charges the time since the previous mark to `stage` (no-op unless profiling).
        func mark(_ stage: EngineProfile.Stage) {
            guard let profile else { return }
            let t = DispatchTime.now().uptimeNanoseconds
            profile.add(stage, nanoseconds: t - clock)
            clock = t
        }

        // Embedding lookup, scaled by √H (float32, as HF).
        let (xp, emb, scale, H) = (UncheckedSendable(x), weights.embedding, embedScale, H)
        Parallel.chunks(n, minimumPerChunk: 16) { rows in
            for i in rows {
                let row = xp.value + i * H
                emb.row(Int(tokens[i]), into: row)
                for j in 0..<H { row[j] *= scale }
            }
        }
        fillRopeTables(start: p0, count: n)
        mark(.other)

        for l in 0..<config.numHiddenLayers {
            let w = weights.layers[l]
            // Attention block: x += post_attention_norm(o_proj(attention(input_norm(x)))).
            rmsNorm(x, into: xn, rows: n, width: H, weight: w.inputNorm)
            mark(.other)
            if n == 1 {
                Linear.gemv([(w.q, q), (w.k, k), (w.v, v)], x: xn)
            } else {
                w.q.gemm(n: n, x: xn, ldx: H, y: q, ldy: qDim)
                w.k.gemm(n: n, x: xn, ldx: H, y: k, ldy: kvDim)
                w.v.gemm(n: n, x: xn, ldx: H, y: v, ldy: kvDim)
            }
            mark(.qkv)
            // QK-norm per head, then RoPE (rotate-half) with this layer's base.
            rmsNorm(q, into: q, rows: n * nh, width: hd, weight: w.qNorm)
            rmsNorm(k, into: k, rows: n * nkv, width: hd, weight: w.kNorm)
            let table = ropeTables + (config.isSliding(layer: l) ? 0 : prefillChunk * hd)
            applyRope(q, rows: n, heads: nh, table: table)
            applyRope(k, rows: n, heads: nkv, table: table)
            mark(.other)
            attention(layer: l, rows: n, start: p0)
            mark(.attention)
            project(w.o, att, n, ldx: qDim, into: tmp, ldy: H)
            mark(.output)
            addNormed(tmp, into: x, rows: n, weight: w.postAttentionNorm)

            // MLP block: x += post_ffw_norm(down(gelu_tanh(gate(h)) · up(h))), h = pre_ffw_norm(x).
            rmsNorm(x, into: xn, rows: n, width: H, weight: w.preFeedforwardNorm)
            mark(.other)
            if n == 1 {
                Linear.gemv([(w.gate, gate), (w.up, up)], x: xn)
            } else {
                w.gate.gemm(n: n, x: xn, ldx: H, y: gate, ldy: I)
                w.up.gemm(n: n, x: xn, ldx: H, y: up, ldy: I)
            }
            mark(.gateUp)
            gegluInPlace(rows: n)
            mark(.other)
            project(w.down, gate, n, ldx: I, into: tmp, ldy: H)
            mark(.down)
            addNormed(tmp, into: x, rows: n, weight: w.postFeedforwardNorm)
        }
        cache.count = p0 + n

        // Final norm of the rows whose logits are wanted, packed at the start of `xn`.
        if !finalRows.isEmpty {
            rmsNorm(x + finalRows.lowerBound * H, into: xn, rows: finalRows.count, width: H, weight: weights.finalNorm)
        }
        mark(.other)
    }

    /// y = W·x for one row (parallel GEMV) or many (batched GEMM).
    private func project(_ w: any LinearWeight, _ input: UnsafeMutablePointer<Float>, _ n: Int, ldx: Int,
                         into output: UnsafeMutablePointer<Float>, ldy: Int) {
        if n == 1 {
            Linear.gemv(w, x: input, y: output)
        } else {
            w.gemm(n: n, x: input, ldx: ldx, y: output, ldy: ldy)
        }
    }

    /// Logits of row `row` of `xn` into `logitsBuffer`.
    private func computeLogits(rowOfXn row: Int) {
        let start = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        Linear.gemv(weights.lmHead, x: xn + row * H, y: logitsBuffer)
        profile?.add(.lmHead, nanoseconds: DispatchTime.now().uptimeNanoseconds - start)
    }

    // MARK: - Attention

    /// Multi-head attention of the `rows` new queries in `q` (positions start…start+rows−1)
    /// over the cache of layer `layer`; stores the new keys/values and writes `att`.
    private func attention(layer: Int, rows n: Int, start p0: Int) {
        let lc = cache.layers[layer]
        let kvBytes = kvDim
        if let window = lc.window {
            if n == 1 {
                // Decode: write the ring row first, then every stored row is visible (order is irrelevant).
                let r = lc.row(of: p0)
                (lc.keys + r * kvBytes).update(from: k, count: kvDim)
                (lc.values + r * kvBytes).update(from: v, count: kvDim)
                let visible = min(p0 + 1, lc.maxRows)
                attend(keys: lc.keys, values: lc.values, rows: 1, rowRange: { _ in 0..<visible })
            } else {
                // Prefill: gather the previous W − 1 positions (in order) ahead of the chunk's keys,
                // attend with the sliding mask, then store the chunk's last W positions in the ring.
                let past = min(p0, window - 1)
                for j in 0..<past {
                    let r = lc.row(of: p0 - past + j)
                    (gatherK + j * kvDim).update(from: lc.keys + r * kvDim, count: kvDim)
                    (gatherV + j * kvDim).update(from: lc.values + r * kvDim, count: kvDim)
                }
                (gatherK + past * kvDim).update(from: k, count: n * kvDim)
                (gatherV + past * kvDim).update(from: v, count: n * kvDim)
                attend(keys: gatherK, values: gatherV, rows: n, rowRange: { i in
                    max(0, past + i - window + 1)..<(past + i + 1)
                })
                for i in max(0, n - lc.maxRows)..<n {
                    let r = lc.row(of: p0 + i)
                    (lc.keys + r * kvDim).update(from: k + i * kvDim, count: kvDim)
                    (lc.values + r * kvDim).update(from: v + i * kvDim, count: kvDim)
                }
            }
        } else {
            (lc.keys + p0 * kvDim).update(from: k, count: n * kvDim)
            (lc.values + p0 * kvDim).update(from: v, count: n * kvDim)
            attend(keys: lc.keys, values: lc.values, rows: n, rowRange: { i in 0..<(p0 + i + 1) })
        }
    }

    /// att[i, head h] = softmax(scale · q_i,h · K[rowRange(i), g]ᵀ) · V[rowRange(i), g], with g the
    /// KV head of query head h. `rowRange` must be non-decreasing in both bounds.
    private func attend(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, rows n: Int,
                        rowRange: (Int) -> Range<Int>) {
        let group = nh / nkv
        let (hd, qDim, kvDim, scale) = (hd, qDim, kvDim, queryScale)
        if n == 1 {
            // One query (decode): split the visible keys over the cores. Each worker reads its
            // key/value rows once for all query heads of a KV group, keeps a partial softmax
            // (running max, sum, weighted values), and the partials are merged exactly after.
            // Reading each row once matters with few KV heads: the 270M model has 4 query heads
            // on 1 KV head, so per-head passes would read the cache four times.
            let range = rowRange(0)
            let L = range.count
            ensureScores(nh * L)
            let workers = min(max(1, L / 128), maxAttentionWorkers)
            let stride = nh * (hd + 2)  // per worker: for each head [o(hd), max, sum]
            let (qs, ks, vs, ss, ps) = (UncheckedSendable(q), UncheckedSendable(keys + range.lowerBound * kvDim),
                                        UncheckedSendable(values + range.lowerBound * kvDim),
                                        UncheckedSendable(scores), UncheckedSendable(attentionPartials))
            let nkv = self.nkv
            Parallel.forEach(workers) { w in
                let lo = L * w / workers, hi = L * (w + 1) / workers
                let part = ps.value + w * stride
                for g in 0..<nkv {
                    let heads = (g * group)..<((g + 1) * group)
                    for j in lo..<hi {
                        let krow = ks.value + j * kvDim + g * hd
                        for h in heads { ss.value[h * L + j] = Kernels.dot(qs.value + h * hd, krow, hd) * scale }
                    }
                    for h in heads {
                        // Vectorised max and exp (a scalar `expf` per key cost ~0.7 ms per token at 512 keys).
                        let s = ss.value + h * L + lo
                        let m = hi > lo ? VectorMath.maximum(s, hi - lo) : -Float.infinity
                        let sum = Float(VectorMath.expShiftStoreSum(s, hi - lo, shift: m))
                        let ph = part + h * (hd + 2)
                        ph.update(repeating: 0, count: hd)
                        ph[hd] = m
                        ph[hd + 1] = sum
                    }
                    for j in lo..<hi {
                        let vrow = vs.value + j * kvDim + g * hd
                        for h in heads { GEMV.axpy(ss.value[h * L + j], vrow, part + h * (hd + 2), hd) }
                    }
                }
            }
            for h in 0..<nh {
                var m = -Float.infinity
                for w in 0..<workers { m = max(m, attentionPartials[w * stride + h * (hd + 2) + hd]) }
                var total: Float = 0
                let o = att + h * hd
                o.update(repeating: 0, count: hd)
                for w in 0..<workers {
                    let ph = attentionPartials + w * stride + h * (hd + 2)
                    let c = expf(ph[hd] - m)
                    total += c * ph[hd + 1]
                    GEMV.axpy(c, ph, o, hd)
                }
                let inv = 1 / total
                for d in 0..<hd { o[d] *= inv }
            }
            return
        }
        // Many queries: per head (heads split over the cores) and block of queries,
        // scores = Q·Kᵀ and out = P·V through single-threaded sgemm over the union of the block's
        // visible keys; each row is then masked to its own range.
        let maxL = rowRange(n - 1).upperBound - rowRange(0).lowerBound
        let perHead = min(queryBlock, n) * maxL
        ensureScores(nh * perHead)
        let (qs, ks, vs, ss, out) = (UncheckedSendable(q), UncheckedSendable(keys), UncheckedSendable(values),
                                     UncheckedSendable(scores), UncheckedSendable(att))
        let queryBlock = self.queryBlock
        Parallel.forEach(nh) { h in
            let g = h / group
            let s = ss.value + h * perHead
            var blockStart = 0
            while blockStart < n {
                let bq = min(queryBlock, n - blockStart)
                let lo = rowRange(blockStart).lowerBound
                let L = rowRange(blockStart + bq - 1).upperBound - lo
                BLAS.sgemm(transB: true, m: bq, n: L, k: hd, alpha: scale,
                           a: qs.value + blockStart * qDim + h * hd, lda: qDim,
                           b: ks.value + lo * kvDim + g * hd, ldb: kvDim,
                           c: s, ldc: L)
                for i in 0..<bq {
                    let r = rowRange(blockStart + i)
                    let row = s + i * L
                    let a = r.lowerBound - lo, b = r.upperBound - lo
                    if a > 0 { row.update(repeating: 0, count: a) }
                    Kernels.softmax(row + a, b - a)
                    if b < L { (row + b).update(repeating: 0, count: L - b) }
                }
                BLAS.sgemm(m: bq, n: hd, k: L,
                           a: s, lda: L,
                           b: vs.value + lo * kvDim + g * hd, ldb: kvDim,
                           c: out.value + blockStart * qDim + h * hd, ldc: qDim)
                blockStart += bq
            }
        }
    }

    private func ensureScores(_ count: Int) {
        guard count > scoresCapacity else { return }
        scores.deallocate()
        scoresCapacity = max(count, 2 * scoresCapacity)
        scores = .allocate(capacity: scoresCapacity)
    }

    // MARK: - Element-wise passes (Gemma3Kernels.Kernels, rows split over the cores)

    /// RoPE cos/sin for positions start…start+count−1, for both bases: [base][row][cos…, sin…].
    private func fillRopeTables(start: Int, count: Int) {
        let half = hd / 2
        let thetas = [config.ropeThetaSliding, config.ropeThetaFull]
        for b in 0..<2 {
            for i in 0..<count {
                let row = ropeTables + b * prefillChunk * hd + i * hd
                Kernels.ropeAngles(theta: thetas[b], headDim: hd, position: start + i, cos: row, sin: row + half)
            }
        }
    }

    /// In-place rotate-half RoPE of `rows × heads` vectors of `hd` values (row i uses table row i).
    private func applyRope(_ data: UnsafeMutablePointer<Float>, rows: Int, heads: Int, table: UnsafeMutablePointer<Float>) {
        let (half, hd) = (hd / 2, hd)
        let (d, t) = (UncheckedSendable(data), UncheckedSendable(table))
        Parallel.chunks(rows * heads, minimumPerChunk: 64) { vecs in
            for idx in vecs {
                let cs = t.value + (idx / heads) * hd
                Kernels.ropeRotate(d.value + idx * hd, headDim: hd, cos: cs, sin: cs + half)
            }
        }
    }

    /// Gemma RMSNorm over `rows` rows of `width`: y = x / sqrt(mean(x²) + eps) · (1 + w). `src` may equal `dst`.
    private func rmsNorm(_ src: UnsafeMutablePointer<Float>, into dst: UnsafeMutablePointer<Float>, rows: Int, width: Int, weight: [Float]) {
        let eps = self.eps
        weight.withUnsafeBufferPointer { wb in
            let (s, d, w) = (UncheckedSendable(src), UncheckedSendable(dst), UncheckedSendable(wb.baseAddress!))
            Parallel.chunks(rows, minimumPerChunk: max(1, 4096 / max(1, width))) { rs in
                Kernels.rmsNorm(x: s.value, ldx: width, weight: w.value, y: d.value, ldy: width, rstd: nil,
                                dim: width, eps: eps, rows: rs)
            }
        }
    }

    /// x += RMSNorm(sub) for `rows` rows of H (the post-attention / post-feedforward norms);
    /// `sub` is overwritten.
    private func addNormed(_ sub: UnsafeMutablePointer<Float>, into x: UnsafeMutablePointer<Float>, rows: Int, weight: [Float]) {
        let (H, eps) = (self.H, self.eps)
        weight.withUnsafeBufferPointer { wb in
            let (s, d, w) = (UncheckedSendable(sub), UncheckedSendable(x), UncheckedSendable(wb.baseAddress!))
            Parallel.chunks(rows, minimumPerChunk: 8) { rs in
                Kernels.rmsNorm(x: s.value, ldx: H, weight: w.value, y: s.value, ldy: H, rstd: nil, dim: H, eps: eps, rows: rs)
                for i in rs { GEMV.axpy(1, s.value + i * H, d.value + i * H, H) }
            }
        }
    }

    /// gate[r] = gelu_tanh(gate[r]) · up[r] over `rows` rows of I.
    private func gegluInPlace(rows: Int) {
        let (g, u, I) = (UncheckedSendable(gate), UncheckedSendable(up), I)
        Parallel.chunks(rows, minimumPerChunk: max(1, 4096 / I)) { rs in
            Kernels.geglu(gate: g.value, up: u.value, ldIn: I, out: g.value, ldOut: I, dim: I, rows: rs)
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
