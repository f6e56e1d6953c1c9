import Foundation
import Gemma3Tokenizers
import Gemma3Kernels

/// Receives the keys and values a sliding layer's ring is about to overwrite (or never stores, when
/// a prefill chunk is longer than the ring), so that a cache can be rewound past them
/// (`BatchedEngine.rewind`). Rows are after QK-norm and RoPE, `kvDim` floats each.
protocol EvictedRowArchive: AnyObject {
    func archive(layer: Int, position: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>)
}

/// The decoder forward pass over a KV cache that `InferenceEngine` and `BatchedEngine` share, so
/// that a sequence gets the same bits from either.
///
/// Two shapes of pass:
/// - **one sequence, several tokens** (prefill): batched products (`gemm`) and the masked
///   multi-query attention;
/// - **decode rows**: row i is the next token of its own sequence `rowCaches[i]` (all distinct, at
///   any positions). Products are batched matrix-vector products (each weight read once for all
///   rows, every row's value that of a single-row product) and attention runs per sequence with the
///   single-query code. One sequence with one token is one decode row, so a lone engine and a batch
///   compute every row with the same arithmetic.
///
/// Owns the scratch for `rowCapacity` rows; nothing is allocated per pass except, for
/// `InferenceEngine`, the score buffer when a longer context first needs it (`reserveScores`
/// allocates it up front instead).
final class DecoderPass {
    let weights: InferenceWeights
    var config: Gemma3Config { weights.config }
    /// Tokens per multi-token pass of one sequence.
    let prefillChunk: Int
    /// Rows of scratch: max(prefill chunk, decode rows).
    let rowCapacity: Int
    /// Most decode rows per pass.
    let decodeRows: Int

    // Model dimensions, hoisted out of the config.
    let H: Int, I: Int, hd: Int, nh: Int, nkv: Int, qDim: Int, kvDim: Int, V: Int
    private let eps: Float, queryScale: Float, embedScale: Float

    // Scratch, [rowCapacity × width] each.
    let x: UnsafeMutablePointer<Float>       // residual stream [C × H]
    let xn: UnsafeMutablePointer<Float>      // normed input [C × H]; rows of the final norm after a pass
    private let tmp: UnsafeMutablePointer<Float>     // sublayer output [C × H]
    private let q: UnsafeMutablePointer<Float>       // [C × qDim]
    private let k: UnsafeMutablePointer<Float>       // [C × kvDim]
    private let v: UnsafeMutablePointer<Float>       // [C × kvDim]
    private let att: UnsafeMutablePointer<Float>     // attention output [C × qDim]
    private let gate: UnsafeMutablePointer<Float>    // [C × I]
    private let up: UnsafeMutablePointer<Float>      // [C × I]
    private let ropeTables: UnsafeMutablePointer<Float>  // [2 bases][C][cos hd/2, sin hd/2]
    private let positions: UnsafeMutablePointer<Int>     // [C] position of each row
    /// Gathered keys/values of a sliding layer during a multi-token pass: [(W − 1 + chunk) × kvDim].
    private let gatherK: UnsafeMutablePointer<Float>
    private let gatherV: UnsafeMutablePointer<Float>
    /// Attention scores; grows with the context of full layers (unless reserved).
    private var scores: UnsafeMutablePointer<Float>
    private var scoresCapacity: Int
    /// Partial softmax states of the decode attention: [row][worker][head][hd values, max, sum].
    private let attentionPartials: UnsafeMutablePointer<Float>
    let maxAttentionWorkers: Int
    /// Per decode row: visible keys, attention workers, first score, first task; and per task its row.
    private let rowKeys: UnsafeMutablePointer<Int>
    private let rowWorkers: UnsafeMutablePointer<Int>
    private let rowScores: UnsafeMutablePointer<Int>
    private let taskRow: UnsafeMutablePointer<Int>
    private let taskWorker: UnsafeMutablePointer<Int>
    /// Key/value rows of each decode row's layer cache (set per layer).
    private let rowKeyData: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    private let rowValueData: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    /// Rows of queries handled by one score matrix during prefill.
    private let queryBlock = 64

    /// The sequences of the decode rows of the next `forwardRows` (set by the caller).
    var rowCaches: [KVCache?]
    var rowArchives: [(any EvictedRowArchive)?]

    /// The fused products per layer (built once: the pointers are this pass's scratch).
    private let qkvProducts: [[Linear.BatchedProduct]]
    private let gateUpProducts: [[Linear.BatchedProduct]]

    /// When set, every pass adds the wall time of its stages here.
    var profile: EngineProfile?

    init(weights: InferenceWeights, context: Int, prefillChunk: Int, decodeRows: Int) {
        let config = weights.config
        self.weights = weights
        self.prefillChunk = prefillChunk
        self.decodeRows = max(1, decodeRows)
        rowCapacity = max(prefillChunk, self.decodeRows)
        H = config.hiddenSize; I = config.intermediateSize; hd = config.headDim
        nh = config.numAttentionHeads; nkv = config.numKeyValueHeads
        qDim = nh * hd; kvDim = nkv * hd; V = config.vocabSize
        eps = Float(config.rmsNormEps)
        queryScale = config.queryScale
        embedScale = config.embeddingScale

        let C = rowCapacity
        func buffer(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n))
            p.initialize(repeating: 0, count: max(1, n))
            return p
        }
        func integers(_ n: Int) -> UnsafeMutablePointer<Int> {
            let p = UnsafeMutablePointer<Int>.allocate(capacity: max(1, n))
            p.initialize(repeating: 0, count: max(1, n))
            return p
        }
        x = buffer(C * H); xn = buffer(C * H); tmp = buffer(C * H)
        q = buffer(C * qDim); k = buffer(C * kvDim); v = buffer(C * kvDim); att = buffer(C * qDim)
        gate = buffer(C * I); up = buffer(C * I)
        ropeTables = buffer(2 * C * hd)
        positions = integers(C)
        let gatherRows = min(config.slidingWindow, context) - 1 + prefillChunk
        gatherK = buffer(gatherRows * kvDim); gatherV = buffer(gatherRows * kvDim)
        maxAttentionWorkers = max(2, Parallel.threadCount)  // ≥ 2 so the merge is always in use past 256 keys
        let R = self.decodeRows
        attentionPartials = buffer(R * maxAttentionWorkers * nh * (hd + 2))
        rowKeys = integers(R); rowWorkers = integers(R); rowScores = integers(R)
        taskRow = integers(R * maxAttentionWorkers); taskWorker = integers(R * maxAttentionWorkers)
        rowKeyData = .allocate(capacity: R); rowValueData = .allocate(capacity: R)
        rowKeyData.initialize(repeating: gatherK, count: R)
        rowValueData.initialize(repeating: gatherV, count: R)
        scoresCapacity = nh * 1024
        scores = buffer(scoresCapacity)
        rowCaches = Array(repeating: nil, count: R)
        rowArchives = Array(repeating: nil, count: R)

        let (q, k, v, gate, up, qDim, kvDim, I) = (q, k, v, gate, up, qDim, kvDim, I)
        qkvProducts = weights.layers.map { w in
            [.init(weight: w.q, y: q, ldy: qDim), .init(weight: w.k, y: k, ldy: kvDim), .init(weight: w.v, y: v, ldy: kvDim)]
        }
        gateUpProducts = weights.layers.map { w in [.init(weight: w.gate, y: gate, ldy: I), .init(weight: w.up, y: up, ldy: I)] }
    }

    deinit {
        for p in [x, xn, tmp, q, k, v, att, gate, up, ropeTables, gatherK, gatherV, scores, attentionPartials] { p.deallocate() }
        for p in [positions, rowKeys, rowWorkers, rowScores, taskRow, taskWorker] { p.deallocate() }
        rowKeyData.deallocate()
        rowValueData.deallocate()
    }

    /// Allocates the score buffer for `count` floats now (so no pass allocates later).
    func reserveScores(_ count: Int) { ensureScores(count) }

    /// Scores one pass may need at most: decode rows over `context` keys each, or a prefill block of
    /// queries over the longest visible range.
    func scoresNeeded(context: Int) -> Int {
        nh * max(decodeRows * context, min(queryBlock, prefillChunk) * context)
    }

    // MARK: - Passes

    /// Runs `tokens` (1…prefillChunk) of one sequence at positions `cache.count…`, appending their
    /// keys/values to `cache` (evicted sliding rows to `archive`). On return rows `finalRows` of the
    /// chunk have their final RMSNorm output packed at the start of `xn`.
    func forward(_ tokens: UnsafeBufferPointer<TokenID>, cache: KVCache, archive: (any EvictedRowArchive)?, finalRows: Range<Int>) {
        if tokens.count == 1 {
            // One token is a decode row: the same arithmetic as in a batch.
            rowCaches[0] = cache
            rowArchives[0] = archive
            run(tokens, single: nil, archive: nil, finalRows: finalRows)
        } else {
            run(tokens, single: cache, archive: archive, finalRows: finalRows)
        }
    }

    /// Runs decode row i = token `tokens[i]` of sequence `rowCaches[i]` for every i (distinct caches,
    /// each with room for one more position). On return rows `finalRows` have their final RMSNorm
    /// output packed at the start of `xn`.
    func forwardRows(_ tokens: UnsafeBufferPointer<TokenID>, finalRows: Range<Int>) {
        precondition(tokens.count <= decodeRows, "more decode rows than the pass was built for")
        run(tokens, single: nil, archive: nil, finalRows: finalRows)
    }

    /// `single` nil: decode rows (the caches in `rowCaches`); else a multi-token pass of `single`.
    private func run(_ tokens: UnsafeBufferPointer<TokenID>, single: KVCache?, archive: (any EvictedRowArchive)?, finalRows: Range<Int>) {
        let n = tokens.count
        let rows = single == nil
        if let single {
            let p0 = single.count
            single.reserve(positions: p0 + n)
            for i in 0..<n { positions[i] = p0 + i }
        } else {
            for i in 0..<n {
                let c = rowCaches[i]!
                c.reserve(positions: c.count + 1)
                positions[i] = c.count
            }
        }
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
        fillRopeTables(count: n)
        mark(.other)

        for l in 0..<config.numHiddenLayers {
            let w = weights.layers[l]
            // Attention block: x += post_attention_norm(o_proj(attention(input_norm(x)))).
            rmsNorm(x, into: xn, rows: n, width: H, weight: w.inputNorm)
            mark(.other)
            if rows {
                Linear.gemv(qkvProducts[l], batch: n, x: xn, ldx: H)
            } else {
                w.q.gemm(n: n, x: xn, ldx: H, y: q, ldy: qDim)
                w.k.gemm(n: n, x: xn, ldx: H, y: k, ldy: kvDim)
                w.v.gemm(n: n, x: xn, ldx: H, y: v, ldy: kvDim)
            }
            mark(.qkv)
            // QK-norm per head, then RoPE (rotate-half) with this layer's base.
            rmsNorm(q, into: q, rows: n * nh, width: hd, weight: w.qNorm)
            rmsNorm(k, into: k, rows: n * nkv, width: hd, weight: w.kNorm)
            let table = ropeTables + (config.isSliding(layer: l) ? 0 : rowCapacity * hd)
            applyRope(q, rows: n, heads: nh, table: table)
            applyRope(k, rows: n, heads: nkv, table: table)
            mark(.other)
            if let single {
                attention(layer: l, rows: n, start: positions[0], cache: single, archive: archive)
            } else {
                decodeAttention(layer: l, rows: n)
            }
            mark(.attention)
            project(w.o, att, n, rows: rows, ldx: qDim, into: tmp, ldy: H)
            mark(.output)
            addNormed(tmp, into: x, rows: n, weight: w.postAttentionNorm)

            // MLP block: x += post_ffw_norm(down(gelu_tanh(gate(h)) · up(h))), h = pre_ffw_norm(x).
            rmsNorm(x, into: xn, rows: n, width: H, weight: w.preFeedforwardNorm)
            mark(.other)
            if rows {
                Linear.gemv(gateUpProducts[l], batch: n, x: xn, ldx: H)
            } else {
                w.gate.gemm(n: n, x: xn, ldx: H, y: gate, ldy: I)
                w.up.gemm(n: n, x: xn, ldx: H, y: up, ldy: I)
            }
            mark(.gateUp)
            gegluInPlace(rows: n)
            mark(.other)
            project(w.down, gate, n, rows: rows, ldx: I, into: tmp, ldy: H)
            mark(.down)
            addNormed(tmp, into: x, rows: n, weight: w.postFeedforwardNorm)
        }
        if let single {
            single.count += n
        } else {
            for i in 0..<n { rowCaches[i]!.count += 1 }
        }

        // Final norm of the rows whose logits are wanted, packed at the start of `xn`.
        if !finalRows.isEmpty {
            rmsNorm(x + finalRows.lowerBound * H, into: xn, rows: finalRows.count, width: H, weight: weights.finalNorm)
        }
        mark(.other)
    }

    /// y = W·x for decode rows (batched GEMV) or a multi-token pass (GEMM).
    private func project(_ w: any LinearWeight, _ input: UnsafeMutablePointer<Float>, _ n: Int, rows: Bool, ldx: Int,
                         into output: UnsafeMutablePointer<Float>, ldy: Int) {
        if rows {
            Linear.gemv(w, batch: n, x: input, ldx: ldx, y: output, ldy: ldy)
        } else {
            w.gemm(n: n, x: input, ldx: ldx, y: output, ldy: ldy)
        }
    }

    /// Logits of the first `rows` rows of `xn` into `output` (row stride V), charged to the LM head.
    func logits(rows: Int, into output: UnsafeMutablePointer<Float>) {
        let start = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        Linear.gemv(weights.lmHead, batch: rows, x: xn, ldx: H, y: output, ldy: V)
        profile?.add(.lmHead, nanoseconds: DispatchTime.now().uptimeNanoseconds - start)
    }

    // MARK: - Attention

    /// Multi-head attention of the `rows` new queries in `q` (positions start…start+rows−1) of one
    /// sequence over layer `layer` of `cache`; stores the new keys/values and writes `att`.
    private func attention(layer: Int, rows n: Int, start p0: Int, cache: KVCache, archive: (any EvictedRowArchive)?) {
        let lc = cache.layers[layer]
        let kvDim = self.kvDim
        guard let window = lc.window else {
            (lc.keys + p0 * kvDim).update(from: k, count: n * kvDim)
            (lc.values + p0 * kvDim).update(from: v, count: n * kvDim)
            attend(keys: lc.keys, values: lc.values, rows: n, rowRange: { i in 0..<(p0 + i + 1) })
            return
        }
        // Gather the previous W − 1 positions (in order) ahead of the chunk's keys, attend with the
        // sliding mask, then store the chunk's last W positions in the ring.
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
        let M = lc.maxRows
        if let archive {
            // Positions that leave the ring in this pass (older ring rows, or chunk rows never stored).
            let evictedEnd = max(0, p0 + n - M)
            for e in max(0, p0 - M)..<evictedEnd {
                let isOld = e < p0
                let key = isOld ? lc.keys + lc.row(of: e) * kvDim : k + (e - p0) * kvDim
                let value = isOld ? lc.values + lc.row(of: e) * kvDim : v + (e - p0) * kvDim
                archive.archive(layer: layer, position: e, key: key, value: value)
            }
        }
        for i in max(0, n - M)..<n {
            let r = lc.row(of: p0 + i)
            (lc.keys + r * kvDim).update(from: k + i * kvDim, count: kvDim)
            (lc.values + r * kvDim).update(from: v + i * kvDim, count: kvDim)
        }
    }

    /// att[i, head h] = softmax(scale · q_i,h · K[rowRange(i), g]ᵀ) · V[rowRange(i), g] for the many
    /// queries of one sequence, with g the KV head of query head h. `rowRange` must be
    /// non-decreasing in both bounds.
    ///
    /// Per head (heads split over the cores) and block of queries, scores = Q·Kᵀ and out = P·V through
    /// single-threaded sgemm over the union of the block's visible keys; each row is then masked to
    /// its own range.
    private func attend(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, rows n: Int,
                        rowRange: (Int) -> Range<Int>) {
        let group = nh / nkv
        let (hd, qDim, kvDim, scale) = (hd, qDim, kvDim, queryScale)
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

    /// Attention of decode row i (one query, its own sequence `rowCaches[i]`) for every row: stores
    /// each row's key/value (a sliding layer's ring row first hands its old position to the row's
    /// archive), then attends over every stored row of that layer.
    ///
    /// Each row's visible keys are split over up to `maxAttentionWorkers` parts, by its own length
    /// alone; the parts of all rows run as one parallel region. A part reads its key/value rows once
    /// for all query heads of a KV group and keeps a partial softmax (running max, sum, weighted
    /// values); each row's parts are merged exactly after. Reading each row once matters with few KV
    /// heads: the 270M model has 4 query heads on 1 KV head, so per-head passes would read the cache
    /// four times. The split and the arithmetic of a row depend only on that row's sequence, so a
    /// row's output is the same in any batch.
    private func decodeAttention(layer: Int, rows n: Int) {
        let kvDim = self.kvDim
        var tasks = 0, scoreTotal = 0
        for i in 0..<n {
            let lc = rowCaches[i]!.layers[layer]
            let p0 = positions[i]
            let visible: Int
            if lc.window != nil {
                // Write the ring row first; then every stored row is visible (order is irrelevant).
                let r = lc.row(of: p0)
                if p0 >= lc.maxRows, let archive = rowArchives[i] {
                    archive.archive(layer: layer, position: p0 - lc.maxRows, key: lc.keys + r * kvDim, value: lc.values + r * kvDim)
                }
                (lc.keys + r * kvDim).update(from: k + i * kvDim, count: kvDim)
                (lc.values + r * kvDim).update(from: v + i * kvDim, count: kvDim)
                visible = min(p0 + 1, lc.maxRows)
            } else {
                (lc.keys + p0 * kvDim).update(from: k + i * kvDim, count: kvDim)
                (lc.values + p0 * kvDim).update(from: v + i * kvDim, count: kvDim)
                visible = p0 + 1
            }
            let workers = min(max(1, visible / 128), maxAttentionWorkers)
            rowKeys[i] = visible
            rowWorkers[i] = workers
            rowScores[i] = scoreTotal
            rowKeyData[i] = lc.keys
            rowValueData[i] = lc.values
            for w in 0..<workers {
                taskRow[tasks + w] = i
                taskWorker[tasks + w] = w
            }
            tasks += workers
            scoreTotal += nh * visible
        }
        ensureScores(scoreTotal)

        let group = nh / nkv
        let (hd, qDim, scale, nh, nkv) = (hd, qDim, queryScale, nh, nkv)
        let partStride = nh * (hd + 2)                     // per part: for each head [o(hd), max, sum]
        let rowStride = maxAttentionWorkers * partStride   // per row: its parts
        let (qs, ss, ps) = (UncheckedSendable(q), UncheckedSendable(scores), UncheckedSendable(attentionPartials))
        let (rowL, rowS, keyData, valueData) = (UncheckedSendable(rowKeys), UncheckedSendable(rowScores),
                                                UncheckedSendable(rowKeyData), UncheckedSendable(rowValueData))
        let (tRow, tWorker, rowW) = (UncheckedSendable(taskRow), UncheckedSendable(taskWorker), UncheckedSendable(rowWorkers))
        Parallel.forEach(tasks) { task in
            let i = tRow.value[task], w = tWorker.value[task]
            let L = rowL.value[i], workers = rowW.value[i]
            let lo = L * w / workers, hi = L * (w + 1) / workers
            let qi = qs.value + i * qDim
            let ks = keyData.value[i], vs = valueData.value[i]
            let sc = ss.value + rowS.value[i]
            let part = ps.value + i * rowStride + w * partStride
            for g in 0..<nkv {
                let heads = (g * group)..<((g + 1) * group)
                for j in lo..<hi {
                    let krow = ks + j * kvDim + g * hd
                    for h in heads { sc[h * L + j] = Kernels.dot(qi + h * hd, krow, hd) * scale }
                }
                for h in heads {
                    // Vectorised max and exp (a scalar `expf` per key cost ~0.7 ms per token at 512 keys).
                    let s = sc + h * L + lo
                    let m = hi > lo ? VectorMath.maximum(s, hi - lo) : -Float.infinity
                    let sum = Float(VectorMath.expShiftStoreSum(s, hi - lo, shift: m))
                    let ph = part + h * (hd + 2)
                    ph.update(repeating: 0, count: hd)
                    ph[hd] = m
                    ph[hd + 1] = sum
                }
                for j in lo..<hi {
                    let vrow = vs + j * kvDim + g * hd
                    for h in heads { GEMV.axpy(sc[h * L + j], vrow, part + h * (hd + 2), hd) }
                }
            }
        }
        let out = UncheckedSendable(att)
        // Merging is a few hundred floats per row: in parallel only for several rows.
        Parallel.chunks(n, minimumPerChunk: n > 1 ? 1 : 2) { rows in
            for i in rows {
                let parts = ps.value + i * rowStride
                let workers = rowW.value[i]
                for h in 0..<nh {
                    var m = -Float.infinity
                    for w in 0..<workers { m = max(m, parts[w * partStride + h * (hd + 2) + hd]) }
                    var total: Float = 0
                    let o = out.value + i * qDim + h * hd
                    o.update(repeating: 0, count: hd)
                    for w in 0..<workers {
                        let ph = parts + w * partStride + h * (hd + 2)
                        let c = expf(ph[hd] - m)
                        total += c * ph[hd + 1]
                        GEMV.axpy(c, ph, o, hd)
                    }
                    let inv = 1 / total
                    for d in 0..<hd { o[d] *= inv }
                }
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

    /// RoPE cos/sin for the positions of rows 0..<count, for both bases: [base][row][cos…, sin…].
    private func fillRopeTables(count: Int) {
        let half = hd / 2
        let thetas = (config.ropeThetaSliding, config.ropeThetaFull)
        for b in 0..<2 {
            for i in 0..<count {
                let row = ropeTables + b * rowCapacity * hd + i * hd
                Kernels.ropeAngles(theta: b == 0 ? thetas.0 : thetas.1, headDim: hd, position: positions[i], cos: row, sin: row + half)
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
