/// A weight matrix W of shape [outFeatures × inFeatures] (the `nn.Linear` layout), used as y = W·x.
///
/// The inference engine sees every projection, the embedding table and the LM head only through
/// this protocol, so the storage format is free: float32 (`F32Linear`), bfloat16 (`BF16Linear`),
/// or a quantized block format (GGUF Q8_0, Q4_K, …) that a conformer decodes itself.
///
/// A conformer implements two single-threaded primitives over a range of rows:
/// - `gemv(rows:x:y:)`, the decode path: called concurrently for disjoint row ranges, so it must
///   only write `y[rows]` and must not mutate shared state;
/// - `dequantize(rows:into:)`, float32 rows (used for embedding lookups and, by the default
///   `gemm`, for batched prefill: dequantize a panel of rows, then `sgemm`).
/// It may override `gemm` with something faster (float32 calls `sgemm` on the weights directly).
public protocol LinearWeight: AnyObject, Sendable {
    /// Rows of W (output features).
    var outFeatures: Int { get }
    /// Columns of W (input features).
    var inFeatures: Int { get }
    /// Bytes of weight data one full matrix-vector product reads (for bandwidth reports).
    var storageBytes: Int { get }
    /// The storage format, as GGUF names it (`F32`, `BF16`, `Q8_0`, …), for reports.
    var formatName: String { get }
    /// y[r] = Σ_j W[r, j] · x[j] for r in `rows` (single-threaded; `x` has `inFeatures` values).
    func gemv(rows: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>)
    /// Writes rows `rows` of W as float32 into `out`, `inFeatures` values per row.
    func dequantize(rows: Range<Int>, into out: UnsafeMutablePointer<Float>)
    /// Y[n × outFeatures] = X[n × inFeatures] · Wᵀ, with row strides `ldx` and `ldy`; uses all cores
    /// through `Parallel` (OpenBLAS itself single-threaded, see `ParallelGEMM`).
    func gemm(n: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int)
    /// Y[b, r] = Σ_j W[r, j] · X[b, j] for r in `rows` and b in 0..<batch (single-threaded; row b of
    /// `x` starts at `x + b·ldx`, of `y` at `y + b·ldy`): the decode product of several sequences,
    /// reading each weight once from memory for all of them.
    ///
    /// Every Y[b, r] must equal, bit for bit, what `gemv(rows:x:y:)` gives for X[b] alone, whatever
    /// `rows` and `batch` are (batched decoding is then exactly single-sequence decoding). The default
    /// (`Linear.tiledGemv`) guarantees it by calling `gemv(rows:x:y:)` on tiles of rows.
    func gemv(rows: Range<Int>, batch: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int)
}

extension LinearWeight {
    /// Default batched product: dequantize panels of rows to float32 (in parallel), then `sgemm`
    /// each panel. Costs one extra pass over the weights, which is small next to the n·rows·cols
    /// multiply-adds once n is more than a few tokens.
    public func gemm(n: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard n > 0, outFeatures > 0 else { return }
        let panelRows = min(outFeatures, max(16, (1 << 20) / max(1, inFeatures)))  // ≈ 4 MB of float32
        let panel = UnsafeMutablePointer<Float>.allocate(capacity: panelRows * inFeatures)
        defer { panel.deallocate() }
        let cols = inFeatures
        var start = 0
        while start < outFeatures {
            let count = min(panelRows, outFeatures - start)
            let p = UncheckedSendable(panel)
            Parallel.chunks(count, minimumPerChunk: 8) { r in
                self.dequantize(rows: (start + r.lowerBound)..<(start + r.upperBound), into: p.value + r.lowerBound * cols)
            }
            ParallelGEMM.sgemm(
                transB: true, m: n, n: count, k: cols,
                a: x, lda: ldx, b: panel, ldb: cols, c: y + start, ldc: ldy)
            start += count
        }
    }

    /// The default batched product: `Linear.tiledGemv`.
    public func gemv(rows: Range<Int>, batch: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        Linear.tiledGemv(self, rows: rows, batch: batch, x: x, ldx: ldx, y: y, ldy: ldy)
    }

    /// Rows of this matrix per tile of a batched product (`Linear.batchTileBytes` of weights, at least one row).
    @inlinable
    public var batchTileRows: Int {
        let rowBytes = max(1, storageBytes / max(1, outFeatures))
        return max(1, Linear.batchTileBytes / rowBytes)
    }

    /// One row of W as float32 (an embedding lookup).
    @inlinable
    public func row(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        dequantize(rows: r..<(r + 1), into: out)
    }
}

/// Parallel drivers over `LinearWeight`.
public enum Linear {
    /// Computes y_i = W_i · x for several matrices that share the input `x` (q/k/v, gate/up) in one
    /// parallel region: the rows of all matrices are concatenated and split evenly over the cores.
    public static func gemv(_ products: [(weight: any LinearWeight, y: UnsafeMutablePointer<Float>)], x: UnsafePointer<Float>) {
        var total = 0
        for p in products { total += p.weight.outFeatures }
        let items = UncheckedSendable(products)
        let xs = UncheckedSendable(x)
        // Contiguous row ranges: each core streams its own part of the weights front to back.
        Parallel.chunks(total, minimumPerChunk: 256) { g in
            var lo = g.lowerBound
            let hi = g.upperBound
            var base = 0
            for p in items.value {
                let end = base + p.weight.outFeatures
                if lo < end && lo < hi {
                    let upper = min(end, hi)
                    p.weight.gemv(rows: (lo - base)..<(upper - base), x: xs.value, y: p.y)
                    lo = upper
                }
                base = end
            }
        }
    }

    /// y = W · x over all rows, split over the cores.
    @inlinable
    public static func gemv(_ weight: any LinearWeight, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        gemv([(weight, y)], x: x)
    }

    /// One matrix of a batched product: its output rows go to `y + b·ldy` for input row b.
    public struct BatchedProduct: @unchecked Sendable {
        public let weight: any LinearWeight
        public let y: UnsafeMutablePointer<Float>
        public let ldy: Int
        public init(weight: any LinearWeight, y: UnsafeMutablePointer<Float>, ldy: Int) {
            self.weight = weight
            self.y = y
            self.ldy = ldy
        }
    }

    /// Y_i[b] = W_i · X[b] for several matrices that share the input rows (q/k/v, gate/up) and
    /// `batch` rows of input `x` (row stride `ldx`), in one parallel region: as `gemv(_:x:)`, the rows
    /// of all matrices are concatenated and split over the cores, and each core runs the batched
    /// primitive on its range, so every weight is read once for the whole batch.
    /// With `batch` 1 this is exactly `gemv(_:x:)`. Results do not depend on the split (see
    /// `LinearWeight.gemv(rows:batch:x:ldx:y:ldy:)`).
    public static func gemv(_ products: [BatchedProduct], batch: Int, x: UnsafePointer<Float>, ldx: Int) {
        guard batch > 0 else { return }
        var total = 0
        for p in products { total += p.weight.outFeatures }
        let items = UncheckedSendable(products)
        let xs = UncheckedSendable(x)
        // Each row costs `batch` dot products: smaller ranges still amortise a region's start.
        Parallel.chunks(total, minimumPerChunk: max(16, 256 / batch)) { g in
            var lo = g.lowerBound
            let hi = g.upperBound
            var base = 0
            for p in items.value {
                let end = base + p.weight.outFeatures
                if lo < end && lo < hi {
                    let upper = min(end, hi)
                    let rows = (lo - base)..<(upper - base)
                    if batch == 1 {
                        p.weight.gemv(rows: rows, x: xs.value, y: p.y)
                    } else {
                        p.weight.gemv(rows: rows, batch: batch, x: xs.value, ldx: ldx, y: p.y, ldy: p.ldy)
                    }
                    lo = upper
                }
                base = end
            }
        }
    }

    /// Y[b] = W · X[b] for `batch` input rows, all rows of W split over the cores.
    public static func gemv(_ weight: any LinearWeight, batch: Int, x: UnsafePointer<Float>, ldx: Int,
                            y: UnsafeMutablePointer<Float>, ldy: Int) {
        if batch == 1 {
            gemv([(weight, y)], x: x)
        } else {
            gemv([BatchedProduct(weight: weight, y: y, ldy: ldy)], batch: batch, x: x, ldx: ldx)
        }
    }

    /// Weight bytes per tile of a batched product: a tile is multiplied with every input row
    /// before the next is read, so it should stay in L1/L2 between rows (32 KiB: the L1 data cache of
    /// current x86 cores, with room left in L2 for the activations).
    public static let batchTileBytes = 32 << 10

    /// The batched product as single-row products on tiles of `batchTileRows` rows: the tile is read
    /// from memory once and from cache for the other rows, and every value is `gemv(rows:x:y:)`'s.
    @inlinable
    public static func tiledGemv(_ weight: some LinearWeight, rows: Range<Int>, batch: Int, x: UnsafePointer<Float>, ldx: Int,
                                 y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard !rows.isEmpty, batch > 0 else { return }
        if batch == 1 {
            weight.gemv(rows: rows, x: x, y: y)
            return
        }
        tiled(rows: rows, batch: batch, tileRows: weight.batchTileRows) { t, b in
            weight.gemv(rows: t, x: x + b * ldx, y: y + b * ldy)
        }
    }

    /// The tiled batched product for kernels that take prepared activations: `prepare(b)` once per
    /// input row (e.g. quantization), then `kernel(tile, b)` for every tile and row.
    @inlinable
    public static func tiled(rows: Range<Int>, batch: Int, tileRows: Int, _ kernel: (Range<Int>, Int) -> Void) {
        var lo = rows.lowerBound
        while lo < rows.upperBound {
            let hi = min(rows.upperBound, lo + tileRows)
            for b in 0..<batch { kernel(lo..<hi, b) }
            lo = hi
        }
    }
}

/// float32 weights, row-major with row stride `ld`. Either owns its storage or borrows it from an
/// `owner` that it keeps alive (for example a view into a model's parameter store).
public final class F32Linear: LinearWeight, @unchecked Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    /// Row stride in elements (≥ inFeatures).
    public let ld: Int
    public let data: UnsafePointer<Float>
    private let owned: UnsafeMutablePointer<Float>?
    private let owner: AnyObject?

    /// Borrows `data` (outFeatures × ld floats); `owner` is retained to keep it valid.
    public init(borrowing data: UnsafePointer<Float>, outFeatures: Int, inFeatures: Int, ld: Int? = nil, owner: AnyObject?) {
        self.data = data
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.ld = ld ?? inFeatures
        self.owned = nil
        self.owner = owner
    }

    /// Copies `values` (outFeatures × inFeatures, row-major).
    public init(copying values: UnsafeBufferPointer<Float>, outFeatures: Int, inFeatures: Int) {
        precondition(values.count == outFeatures * inFeatures, "F32Linear: \(values.count) values for a \(outFeatures)×\(inFeatures) matrix")
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, values.count))
        if let base = values.baseAddress { p.initialize(from: base, count: values.count) }
        self.owned = p
        self.data = UnsafePointer(p)
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.ld = inFeatures
        self.owner = nil
    }

    deinit { owned?.deallocate() }

    public var storageBytes: Int { outFeatures * inFeatures * 4 }
    public var formatName: String { "F32" }

    public func gemv(rows: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        GEMV.f32(data, ld: ld, cols: inFeatures, rows: rows, x: x, y: y)
    }

    public func dequantize(rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        for (i, r) in rows.enumerated() {
            (out + i * inFeatures).update(from: data + r * ld, count: inFeatures)
        }
    }

    public func gemm(n: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard n > 0, outFeatures > 0 else { return }
        ParallelGEMM.sgemm(transB: true, m: n, n: outFeatures, k: inFeatures, a: x, lda: ldx, b: data, ldb: ld, c: y, ldc: ldy)
    }
}

/// bfloat16 weights (owned, row-major, packed): half the bytes of float32, so decoding reads half
/// as much memory. Converted from float32 with round-to-nearest-even.
public final class BF16Linear: LinearWeight, @unchecked Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    public let bits: UnsafeMutablePointer<UInt16>

    /// Rounds `outFeatures` rows of float32 (row stride `ld`) to bfloat16.
    public init(converting data: UnsafePointer<Float>, outFeatures: Int, inFeatures: Int, ld: Int? = nil) {
        let ld = ld ?? inFeatures
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        bits = .allocate(capacity: max(1, outFeatures * inFeatures))
        let dst = UncheckedSendable(bits), src = UncheckedSendable(data)
        Parallel.chunks(outFeatures, minimumPerChunk: 64) { rows in
            for r in rows {
                let s = src.value + r * ld, d = dst.value + r * inFeatures
                for j in 0..<inFeatures { d[j] = NumberFormats.floatToBF16(s[j]) }
            }
        }
    }

    /// Takes raw bfloat16 bits (outFeatures × inFeatures), e.g. from a bf16 safetensors tensor.
    public init(bits source: UnsafePointer<UInt16>, outFeatures: Int, inFeatures: Int) {
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        bits = .allocate(capacity: max(1, outFeatures * inFeatures))
        bits.initialize(from: source, count: outFeatures * inFeatures)
    }

    deinit { bits.deallocate() }

    public var storageBytes: Int { outFeatures * inFeatures * 2 }
    public var formatName: String { "BF16" }

    public func gemv(rows: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        GEMV.bf16(bits, ld: inFeatures, cols: inFeatures, rows: rows, x: x, y: y)
    }

    public func dequantize(rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let n = inFeatures
        let vec = n & ~7
        for (i, r) in rows.enumerated() {
            let src = UnsafeRawPointer(bits + r * n)
            let dst = UnsafeMutableRawPointer(out + i * n)
            var j = 0
            while j < vec {
                dst.storeBytes(of: GEMV.widenBF16(src, j * 2), toByteOffset: j * 4, as: SIMD8<Float>.self)
                j += 8
            }
            while j < n {
                out[i * n + j] = NumberFormats.bf16ToFloat(bits[r * n + j])
                j += 1
            }
        }
    }
}
