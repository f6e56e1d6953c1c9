import Foundation
import Gemma3Tokenizers
import Gemma3Kernels

/// A pool of sequences ("slots") decoded together (continuous batching): one `decode` step appends
/// one token to each of several slots and reads every weight matrix once for all of them, so the
/// bandwidth-bound decode of a small model serves many requests for little more than the cost of one.
///
/// Each slot's logits are bit for bit those of a lone `InferenceEngine` with the same `prefillChunk`
/// fed the same tokens (prefill in chunks from position 0, then one token at a time), whatever other
/// slots share a step and in whatever order: both run the same forward pass (`DecoderPass`), where a
/// decode row's products and attention depend on that row's sequence alone.
///
///     let engine = try BatchedEngine(weights: weights, slots: 8, context: 4096)
///     _ = try engine.prefill(slot: 0, tokens: promptA, wantsLogits: true)   // ≤ prefillChunk tokens per call
///     _ = try engine.prefill(slot: 3, tokens: promptB, wantsLogits: true)
///     let logits = try engine.decode(slots: [3, 0], tokens: [b1, a1])       // row 0: slot 3, row 1: slot 0
///
/// All KV memory is allocated by the initializer (full layers at `context` positions, sliding layers as
/// rings of `sliding_window` rows plus a history of evicted rows for `rewind`); calls allocate nothing.
/// Not thread-safe: one call at a time (each parallelises internally).
public final class BatchedEngine: @unchecked Sendable {
    public let weights: InferenceWeights
    public var config: Gemma3Config { weights.config }

    private let pass: DecoderPass
    private let caches: [KVCache]
    private let histories: [SlidingHistory]
    /// Logits of the last call: [slotCount × vocabularySize].
    private let logitsBuffer: UnsafeMutablePointer<Float>
    /// Duplicate-slot check of `decode` without allocating: the call's stamp per slot.
    private let slotStamps: UnsafeMutablePointer<Int>
    private var stamp = 0
    private let _slotCount: Int, _contextLength: Int, _prefillChunk: Int, _kvCacheBytes: Int

    /// KV memory for all `slots` at `context` positions is allocated here, once.
    ///
    /// - Parameters:
    ///   - slots: sequences the engine holds (and the most rows one `decode` step takes).
    ///   - context: positions per slot (at most `max_position_embeddings`).
    ///   - prefillChunk: most tokens per `prefill` call (capped at `context`); a lone engine with the
    ///     same chunk computes the same bits.
    ///   - rewindLimit: how many positions `rewind` can always drop exactly: sliding layers keep the
    ///     last `rewindLimit − 1` rows their ring evicted (the ring and history hold W − 1 + rewindLimit).
    public init(weights: InferenceWeights, slots: Int, context: Int, prefillChunk: Int = 512, rewindLimit: Int = 256) throws {
        let config = weights.config
        guard slots > 0 else { throw GenerationError("slot count must be positive, got \(slots)") }
        guard context > 0 else { throw GenerationError("context length must be positive, got \(context)") }
        guard context <= config.maxPositionEmbeddings else {
            throw GenerationError("context length \(context) exceeds the model's max_position_embeddings (\(config.maxPositionEmbeddings))")
        }
        guard prefillChunk > 0 else { throw GenerationError("prefill chunk must be positive, got \(prefillChunk)") }
        guard rewindLimit >= 0 else { throw GenerationError("rewind limit must not be negative, got \(rewindLimit)") }
        self.weights = weights
        _slotCount = slots
        _contextLength = context
        _prefillChunk = min(prefillChunk, context)
        // One thread pool on the machine: OpenBLAS single-threaded, products split by `Parallel`.
        BLAS.setThreads(1)
        pass = DecoderPass(weights: weights, context: context, prefillChunk: _prefillChunk, decodeRows: slots)
        pass.reserveScores(pass.scoresNeeded(context: context))
        caches = (0..<slots).map { _ in
            let cache = KVCache(config: config, maxContext: context)
            cache.reserve(positions: context)
            return cache
        }
        let ringRows = min(config.slidingWindow, context)
        // Only positions beyond the ring are ever evicted; no more than context − ring of them.
        let historyRows = min(max(0, rewindLimit - 1), max(0, context - ringRows))
        histories = (0..<slots).map { _ in SlidingHistory(config: config, rows: historyRows, ringRows: ringRows) }
        let V = config.vocabSize
        logitsBuffer = .allocate(capacity: max(1, slots * V))
        logitsBuffer.initialize(repeating: 0, count: max(1, slots * V))
        slotStamps = .allocate(capacity: slots)
        slotStamps.initialize(repeating: 0, count: slots)
        _kvCacheBytes = caches.reduce(0) { $0 + $1.bytes } + histories.reduce(0) { $0 + $1.bytes }
    }

    deinit {
        logitsBuffer.deallocate()
        slotStamps.deallocate()
    }

    /// Sequences the engine holds.
    public var slotCount: Int { _slotCount }
    /// Positions per slot.
    public var contextLength: Int { _contextLength }
    /// Most tokens one `prefill` call takes.
    public var prefillChunk: Int { _prefillChunk }
    /// Logits per row.
    public var vocabularySize: Int { config.vocabSize }
    /// Allocated KV bytes over all slots (caches and rewind histories).
    public var kvCacheBytes: Int { _kvCacheBytes }

    /// When set, every pass adds the wall time of its stages here.
    public var profile: EngineProfile? {
        get { pass.profile }
        set { pass.profile = newValue }
    }

    /// Positions stored in `slot` (0 for a slot number outside the pool).
    public func cachedLength(slot: Int) -> Int {
        guard caches.indices.contains(slot) else { return 0 }
        return caches[slot].count
    }

    /// Drops positions ≥ length from `slot` (prompt cache reuse). Returns false, changing nothing, when the
    /// cache can no longer give exact attention for that prefix (sliding-window ring rows overwritten),
    /// for a length outside 0…cachedLength(slot:), or for a slot outside the pool;
    /// rewind(slot:to: 0) always succeeds.
    ///
    /// Exact means: after the rewind, every later call gives the bits it would give had the slot only
    /// ever held those `length` positions. Guaranteed for rewinds of up to `rewindLimit` positions past
    /// the furthest position the slot reached.
    @discardableResult
    public func rewind(slot: Int, to length: Int) -> Bool {
        guard caches.indices.contains(slot) else { return false }
        let cache = caches[slot], history = histories[slot]
        guard length >= 0, length <= cache.count else { return false }
        if length == cache.count { return true }
        if length == 0 {
            cache.count = 0
            history.reset()
            return true
        }
        guard history.restore(cache: cache, length: length) else { return false }
        cache.count = length
        return true
    }

    /// Appends `tokens` (1...prefillChunk of them) to `slot`; with wantsLogits, returns the logits after the
    /// last one (engine buffer, valid until the next call). Throws GenerationError (nothing changed) for ids
    /// outside the vocabulary or past the context.
    ///
    /// A prompt longer than `prefillChunk` is fed in consecutive calls of `prefillChunk` tokens (the last
    /// one shorter), which is how `InferenceEngine.prefill` splits it.
    @discardableResult
    public func prefill(slot: Int, tokens: [TokenID], wantsLogits: Bool) throws -> UnsafeMutableBufferPointer<Float>? {
        try checkSlot(slot)
        guard !tokens.isEmpty, tokens.count <= prefillChunk else {
            throw GenerationError("prefill takes 1…\(prefillChunk) tokens, got \(tokens.count)")
        }
        let cache = caches[slot]
        guard cache.count + tokens.count <= contextLength else {
            throw GenerationError("slot \(slot): sequence of \(cache.count + tokens.count) tokens exceeds the context length \(contextLength)")
        }
        for t in tokens { try checkToken(t) }
        let n = tokens.count
        tokens.withUnsafeBufferPointer { chunk in
            pass.forward(chunk, cache: cache, archive: histories[slot], finalRows: wantsLogits ? (n - 1)..<n : n..<n)
        }
        guard wantsLogits else { return nil }
        pass.logits(rows: 1, into: logitsBuffer)
        return UnsafeMutableBufferPointer(start: logitsBuffer, count: vocabularySize)
    }

    /// Appends tokens[i] to slots[i] (distinct slots) in ONE pass; row i of the [slots.count × vocabularySize]
    /// result is slot slots[i]'s next-token logits (engine buffer, valid until the next call).
    /// Throws GenerationError, changing nothing, for mismatched counts, a slot outside the pool or
    /// repeated, a full slot, or an id outside the vocabulary. No slots: an empty result.
    public func decode(slots: [Int], tokens: [TokenID]) throws -> UnsafeMutableBufferPointer<Float> {
        guard slots.count == tokens.count else {
            throw GenerationError("decode: \(slots.count) slots but \(tokens.count) tokens")
        }
        let n = slots.count
        guard n > 0 else { return UnsafeMutableBufferPointer(start: logitsBuffer, count: 0) }
        stamp += 1
        for (i, slot) in slots.enumerated() {
            try checkSlot(slot)
            guard slotStamps[slot] != stamp else { throw GenerationError("decode: slot \(slot) appears more than once") }
            slotStamps[slot] = stamp
            guard caches[slot].count < contextLength else {
                throw GenerationError("slot \(slot): sequence of \(caches[slot].count + 1) tokens exceeds the context length \(contextLength)")
            }
            try checkToken(tokens[i])
        }
        for (i, slot) in slots.enumerated() {
            pass.rowCaches[i] = caches[slot]
            pass.rowArchives[i] = histories[slot]
        }
        tokens.withUnsafeBufferPointer { pass.forwardRows($0, finalRows: 0..<n) }
        pass.logits(rows: n, into: logitsBuffer)
        return UnsafeMutableBufferPointer(start: logitsBuffer, count: n * vocabularySize)
    }

    private func checkSlot(_ slot: Int) throws {
        guard caches.indices.contains(slot) else {
            throw GenerationError("slot \(slot) is outside the pool of \(slotCount)")
        }
    }

    private func checkToken(_ t: TokenID) throws {
        guard t >= 0, Int(t) < vocabularySize else {
            throw GenerationError("token id \(t) is outside the vocabulary (size \(vocabularySize))")
        }
    }
}

/// The rows a slot's sliding rings evicted most recently, kept so that `rewind` can put them back.
///
/// Position e lives in history row e mod `rows` of each sliding layer, position p in ring row
/// p mod `ringRows`. Invariant: every position in `retainedFrom ..< count` is held with its true
/// keys/values — below count − ringRows in the history, above in the rings. An eviction of e reuses
/// the history row of e − rows, so `retainedFrom` only grows (until the slot is emptied).
final class SlidingHistory: EvictedRowArchive {
    let rows: Int
    let ringRows: Int
    let kvDim: Int
    /// Per layer: [rows × kvDim] keys, then values, in one block; nil for full-attention layers.
    private let storage: [UnsafeMutablePointer<Float>?]
    /// Every position from here to the cache's count is held (ring or history).
    private(set) var retainedFrom = 0

    init(config: Gemma3Config, rows: Int, ringRows: Int) {
        self.rows = rows
        self.ringRows = ringRows
        kvDim = config.numKeyValueHeads * config.headDim
        let floats = 2 * rows * kvDim
        storage = (0..<config.numHiddenLayers).map { l in
            guard config.isSliding(layer: l), floats > 0 else { return nil }
            let p = UnsafeMutablePointer<Float>.allocate(capacity: floats)
            p.initialize(repeating: 0, count: floats)
            return p
        }
    }

    deinit { for p in storage { p?.deallocate() } }

    var bytes: Int { storage.reduce(0) { $0 + ($1 == nil ? 0 : 2 * rows * kvDim * MemoryLayout<Float>.size) } }

    func reset() { retainedFrom = 0 }

    func archive(layer: Int, position: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        // This eviction makes position − rows (the row it reuses) unavailable, and with `rows` 0 itself.
        retainedFrom = max(retainedFrom, position - rows + 1)
        guard rows > 0, let block = storage[layer] else { return }
        let r = position % rows
        (block + r * kvDim).update(from: key, count: kvDim)
        (block + (rows + r) * kvDim).update(from: value, count: kvDim)
    }

    /// Puts back into the rings of `cache` the evicted positions that a sequence of `length`
    /// (< cache.count) positions keeps in them; false, changing nothing, when one that attention
    /// needs is gone.
    func restore(cache: KVCache, length: Int) -> Bool {
        let M = ringRows
        let evictedEnd = max(0, cache.count - M)   // positions below this left the rings
        // A query at `length` sees length − W < j ≤ length: [length − M + 1, length) must be held.
        guard max(0, length - M + 1) >= retainedFrom else { return false }
        // Also position length − M when held: its ring row is the one the next token evicts into the
        // history. When it is not held, that row stays stale, below `retainedFrom`, never trusted.
        let first = max(retainedFrom, max(0, length - M)), end = min(length, evictedEnd)
        guard first < end else { return true }
        for (l, block) in storage.enumerated() {
            guard let block else { continue }
            let lc = cache.layers[l]
            for p in first..<end {
                let r = p % rows, ring = lc.row(of: p)
                (lc.keys + ring * kvDim).update(from: block + r * kvDim, count: kvDim)
                (lc.values + ring * kvDim).update(from: block + (rows + r) * kvDim, count: kvDim)
            }
        }
        return true
    }
}
