/// Keys and values of one decoder layer for the positions decoded so far.
///
/// - A **sliding** layer keeps a ring buffer of `sliding_window` rows: position p lives in row
///   p mod W. A query at position p sees itself and the W − 1 positions before it (HF's
///   `i − W < j ≤ i`), so W rows are all it ever needs, however long the context grows.
/// - A **full** layer keeps position p in row p, growing its allocation geometrically up to the
///   context length, so a short generation does not pay for a 32K context.
///
/// Keys are stored after QK-norm and RoPE; rows are `kvDim = num_key_value_heads × head_dim` floats.
public final class LayerKVCache: @unchecked Sendable {
    /// Floats per row (all KV heads of one position).
    public let kvDim: Int
    /// Ring size for a sliding layer; nil for a full-attention layer.
    public let window: Int?
    /// The most rows this layer may ever hold.
    public let maxRows: Int
    /// Rows currently allocated.
    public private(set) var capacity: Int = 0
    public private(set) var keys: UnsafeMutablePointer<Float>
    public private(set) var values: UnsafeMutablePointer<Float>

    /// - Parameters:
    ///   - window: the sliding window W (the ring holds W rows), or nil for full attention.
    ///   - maxContext: the longest sequence the cache must serve.
    public init(kvDim: Int, window: Int?, maxContext: Int) {
        self.kvDim = kvDim
        self.window = window
        maxRows = window.map { min($0, maxContext) } ?? maxContext
        keys = .allocate(capacity: 1)
        values = .allocate(capacity: 1)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    /// Bytes allocated for keys and values.
    public var bytes: Int { 2 * capacity * kvDim * MemoryLayout<Float>.size }

    /// The row that holds `position`.
    @inlinable public func row(of position: Int) -> Int {
        window == nil ? position : position % maxRows
    }

    /// Makes room for positions `0..<positions` (full layers grow by doubling; a ring is allocated whole).
    public func reserve(positions: Int) {
        let needed = min(maxRows, window == nil ? positions : maxRows)
        guard needed > capacity else { return }
        let newCapacity = window == nil ? min(maxRows, max(needed, 2 * capacity, 64)) : needed
        let newKeys = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * kvDim)
        let newValues = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * kvDim)
        if capacity > 0 {
            newKeys.initialize(from: keys, count: capacity * kvDim)
            newValues.initialize(from: values, count: capacity * kvDim)
        }
        keys.deallocate()
        values.deallocate()
        keys = newKeys
        values = newValues
        capacity = newCapacity
    }

    /// Releases the storage (the next `reserve` allocates again).
    public func clear() {
        keys.deallocate()
        values.deallocate()
        keys = .allocate(capacity: 1)
        values = .allocate(capacity: 1)
        capacity = 0
    }
}

/// The per-layer caches of one sequence plus the number of positions already in them.
public final class KVCache: @unchecked Sendable {
    public let layers: [LayerKVCache]
    /// Longest sequence (prompt + generated) this cache serves.
    public let maxContext: Int
    /// Positions already stored; the next token goes to position `count`.
    public internal(set) var count: Int = 0

    public init(config: Gemma3Config, maxContext: Int) {
        self.maxContext = maxContext
        let kvDim = config.numKeyValueHeads * config.headDim
        layers = (0..<config.numHiddenLayers).map { l in
            LayerKVCache(kvDim: kvDim, window: config.isSliding(layer: l) ? config.slidingWindow : nil, maxContext: maxContext)
        }
    }

    /// Bytes currently allocated for keys and values over all layers.
    public var bytes: Int { layers.reduce(0) { $0 + $1.bytes } }

    /// Bytes the cache needs for a context of `context` positions: full layers hold every position,
    /// sliding layers only their window.
    public static func bytes(config: Gemma3Config, context: Int) -> Int {
        let rowBytes = 2 * config.numKeyValueHeads * config.headDim * MemoryLayout<Float>.size
        var rows = 0
        for l in 0..<config.numHiddenLayers {
            rows += config.isSliding(layer: l) ? min(config.slidingWindow, context) : context
        }
        return rows * rowBytes
    }

    /// Makes room for positions `0..<positions` in every layer.
    public func reserve(positions: Int) {
        for layer in layers { layer.reserve(positions: positions) }
    }

    /// Forgets every position (keeps the allocation for the next sequence).
    public func reset() { count = 0 }
}
