import CGemma3Kernels
import Foundation

/// A weight matrix stored in a ggml block format (Q8_0, Q5_0, Q4_K, …, or F32/F16/BF16), used
/// in place: typically borrowed from a memory-mapped GGUF file.
///
/// - Decode (`gemv`): fused kernels on the blocks (`GGMLDot`), activations quantized to 16 bits per
///   block of 32 (`.int16`, the default), or, with `.float`, each row dequantized to float32 and
///   multiplied in float (exact arithmetic on the dequantized weights; slower, for verification).
/// - Prefill (`gemm`, from `LinearWeight`'s default): panels of rows are dequantized to float32 and
///   multiplied with `sgemm`.
public final class QuantizedLinear: LinearWeight, @unchecked Sendable {
    /// How `gemv` treats the activations.
    public enum ActivationPrecision: String, Sendable, CaseIterable {
        /// Integer kernels with 16-bit activations (≈ 1e-5 relative to exact float arithmetic).
        case int16
        /// Dequantize each row to float32 and multiply in float32.
        case float
        /// 8-bit activations per block of 32, as llama.cpp quantizes them, multiplied on the packed
        /// blocks with AVX-512 VNNI (`gemma3_q8_gemv`): memory speed on the smallest form of the
        /// weights, with llama.cpp's arithmetic (≈ 0.5% relative error per product). Where the CPU
        /// lacks VNNI (`int8Supported`), the `.int16` kernels run instead.
        case int8
    }

    /// Whether this CPU runs the `.int8` kernels (AVX-512 VNNI, BW, VL and F16C).
    public static let int8Supported: Bool = gemma3_has_avx512_vnni() != 0

    /// The decode kernels `RuntimeSettings.current` chooses on this CPU (`.int8` where it has VNNI).
    public static var defaultActivations: ActivationPrecision { RuntimeSettings.current.resolvedDecodeActivations }

    public let type: GGMLType
    public let outFeatures: Int
    public let inFeatures: Int
    /// Bytes of one row of blocks.
    public let rowBytes: Int
    /// First byte of row 0 (rows are contiguous, `rowBytes` apart).
    public let data: UnsafeRawPointer
    public let activations: ActivationPrecision
    private let owner: AnyObject?
    private let owned: UnsafeMutableRawPointer?

    /// Borrows `outFeatures × rowBytes` bytes at `data`; `owner` (e.g. the mapped file) is retained.
    /// Throws a one-line error for types without kernels or rows that are not whole blocks.
    public init(type: GGMLType, borrowing data: UnsafeRawPointer, outFeatures: Int, inFeatures: Int,
                owner: AnyObject?, activations: ActivationPrecision = .int16) throws {
        self.rowBytes = try QuantizedLinear.checkShape(type, outFeatures, inFeatures)
        self.type = type
        self.data = data
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.owner = owner
        self.owned = nil
        self.activations = activations
    }

    /// Copies packed blocks (`outFeatures` rows of `type.byteCount(elements: inFeatures)` bytes).
    public init(type: GGMLType, bytes: [UInt8], outFeatures: Int, inFeatures: Int, activations: ActivationPrecision = .int16) throws {
        let rowBytes = try QuantizedLinear.checkShape(type, outFeatures, inFeatures)
        guard bytes.count == rowBytes * outFeatures else {
            throw GGMLBlocks.Unsupported("\(type.name) matrix \(outFeatures)×\(inFeatures) needs \(rowBytes * outFeatures) bytes, got \(bytes.count)")
        }
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes.count), alignment: 64)
        bytes.withUnsafeBytes { if let base = $0.baseAddress { p.copyMemory(from: base, byteCount: $0.count) } }
        self.rowBytes = rowBytes
        self.type = type
        self.data = UnsafeRawPointer(p)
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.owner = nil
        self.owned = p
        self.activations = activations
    }

    /// Quantizes a row-major float32 matrix.
    public convenience init(quantizing values: UnsafeBufferPointer<Float>, type: GGMLType, outFeatures: Int, inFeatures: Int,
                            activations: ActivationPrecision = .int16) throws {
        let bytes = try GGMLBlocks.quantize(type, values, rows: outFeatures, cols: inFeatures)
        try self.init(type: type, bytes: bytes, outFeatures: outFeatures, inFeatures: inFeatures, activations: activations)
    }

    /// A copy of the blocks in memory aligned to 2 MiB and marked for huge pages (`LargeAllocation`):
    /// streamed by decoding at ≈ 20% more bandwidth than 4 KiB pages of a mapped file.
    public func copiedToLargePages(activations: ActivationPrecision? = nil) -> QuantizedLinear {
        QuantizedLinear(copyOf: self, activations: activations ?? self.activations)
    }

    private init(copyOf other: QuantizedLinear, activations: ActivationPrecision) {
        let bytes = other.storageBytes
        let p = LargeAllocation.allocate(byteCount: bytes)
        let (dst, src) = (UncheckedSendable(p), UncheckedSendable(other.data))
        // Parallel copy: first touch of the pages happens on both cores.
        Parallel.chunks(bytes, minimumPerChunk: 1 << 20) { r in
            (dst.value + r.lowerBound).copyMemory(from: src.value + r.lowerBound, byteCount: r.count)
        }
        self.rowBytes = other.rowBytes
        self.type = other.type
        self.data = UnsafeRawPointer(p)
        self.outFeatures = other.outFeatures
        self.inFeatures = other.inFeatures
        self.owner = nil
        self.owned = p
        self.activations = activations
    }

    /// The same weights with another activation precision (shares the storage).
    public func with(activations: ActivationPrecision) -> QuantizedLinear {
        // Both initialisers validated the shape already; `try!` cannot fail here.
        try! QuantizedLinear(type: type, borrowing: data, outFeatures: outFeatures, inFeatures: inFeatures,
                             owner: self, activations: activations)
    }

    deinit { owned?.deallocate() }

    /// Q4_0 and Q5_0 matrices rewritten as Q8_0 with identical values (their 4- and 5-bit integers
    /// minus the offset fit in 8 bits under the same block scale); other types are returned as is.
    ///
    /// Why: on the base x86-64 target, unpacking nibbles and fifth bits costs more time than the
    /// extra bytes cost bandwidth. Q5_0 blocks take 22 bytes per 32 values and their kernel runs at
    /// ≈ 4 GB/s per core, compute-bound; as Q8_0 (34 bytes) the same values decode at memory speed.
    /// Costs 1.5× (Q5_0) or 1.9× (Q4_0) the memory of those matrices.
    public func widenedToQ8_0() -> QuantizedLinear {
        guard type == .q4_0 || type == .q5_0 else { return self }
        let blocks = inFeatures / 32
        var bytes = [UInt8](repeating: 0, count: outFeatures * blocks * 34)
        bytes.withUnsafeMutableBytes { out in
            let dst = out.baseAddress!
            for r in 0..<outFeatures {
                for b in 0..<blocks {
                    let p = data + r * rowBytes + b * type.bytesPerBlock
                    let q = dst + (r * blocks + b) * 34
                    q.storeBytes(of: p.loadUnaligned(as: UInt16.self), as: UInt16.self)   // same scale d
                    _ = GGMLBlocks.smallBlockIntegers(type, p, into: (q + 2).assumingMemoryBound(to: Int8.self))
                }
            }
        }
        // The shape was validated for this matrix; the Q8_0 row of the same length is valid too.
        return try! QuantizedLinear(type: .q8_0, bytes: bytes, outFeatures: outFeatures, inFeatures: inFeatures, activations: activations)
    }

    private static func checkShape(_ type: GGMLType, _ rows: Int, _ cols: Int) throws -> Int {
        guard type.hasKernels else {
            throw GGMLBlocks.Unsupported("tensor type \(type.name) is not supported (supported: F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q6_K)")
        }
        guard rows >= 0, cols > 0, let rowBytes = type.byteCount(elements: cols) else {
            throw GGMLBlocks.Unsupported("\(type.name) rows of \(cols) values are not a whole number of \(type.blockSize)-value blocks")
        }
        return rowBytes
    }

    public var storageBytes: Int { outFeatures * rowBytes }
    public var formatName: String { type.name }

    public func gemv(rows: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        guard !rows.isEmpty else { return }
        switch type {
        case .f32:
            GEMV.f32(data.assumingMemoryBound(to: Float.self), ld: inFeatures, cols: inFeatures, rows: rows, x: x, y: y)
            return
        case .bf16:
            GEMV.bf16(data.assumingMemoryBound(to: UInt16.self), ld: inFeatures, cols: inFeatures, rows: rows, x: x, y: y)
            return
        case .f16:
            GGMLDot.f16(data, rowBytes: rowBytes, cols: inFeatures, rows: rows, x: x, y: y)
            return
        default: break
        }
        if activations == .float {
            gemvFloat(rows: rows, x: x, y: y)
            return
        }
        if activations == .int8 && Self.int8Supported {
            gemvInt8(rows: rows, x: x, y: y)
            return
        }
        GGMLDot.withQuantized(x, count: inFeatures) { xq in
            switch type {
            case .q8_0: GGMLDot.q8_0(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
            case .q4_0: GGMLDot.q4_0(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
            case .q5_0: GGMLDot.q5_0(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
            case .q4_K: GGMLDot.q4_K(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
            case .q6_K: GGMLDot.q6_K(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
            default: break  // excluded by checkShape
            }
        }
    }

    /// The batched product. Block formats quantize each input row once for the whole call (not once
    /// per tile) and then run the single-row kernel on each tile for each row: the same activations
    /// and the same kernel as `gemv(rows:x:y:)`, so the same values. Float formats and `.float` tile
    /// the single-row product.
    public func gemv(rows: Range<Int>, batch: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard !rows.isEmpty, batch > 0 else { return }
        if batch == 1 {
            gemv(rows: rows, x: x, y: y)
            return
        }
        switch type {
        case .f32, .bf16, .f16:
            Linear.tiledGemv(self, rows: rows, batch: batch, x: x, ldx: ldx, y: y, ldy: ldy)
            return
        default: break
        }
        if activations == .float {
            Linear.tiledGemv(self, rows: rows, batch: batch, x: x, ldx: ldx, y: y, ldy: ldy)
            return
        }
        let tile = batchTileRows
        let (n, data, rowBytes, type) = (inFeatures, data, rowBytes, type)
        if activations == .int8 && Self.int8Supported {
            // Per row: n bytes, then block scales, block sums and half-block sums (5 floats a block).
            let blocks = n / 32
            let stride = (n + 5 * blocks * 4 + 63) & ~63
            withUnsafeTemporaryAllocation(byteCount: batch * stride, alignment: 64) { raw in
                let base = raw.baseAddress!
                @inline(__always) func parts(_ b: Int) -> (UnsafeMutablePointer<Int8>, UnsafeMutablePointer<Float>) {
                    let p = base + b * stride
                    return (p.assumingMemoryBound(to: Int8.self), (p + n).assumingMemoryBound(to: Float.self))
                }
                for b in 0..<batch {
                    let (qs, f) = parts(b)
                    gemma3_quantize_q8_blocks(x + b * ldx, n, qs, f, f + blocks, f + 2 * blocks)
                }
                Linear.tiled(rows: rows, batch: batch, tileRows: tile) { t, b in
                    let (qs, f) = parts(b)
                    let status = gemma3_q8_gemv(Int32(type.rawValue), data, rowBytes, t.lowerBound, t.upperBound,
                                                qs, f, f + blocks, f + 2 * blocks, blocks, y + b * ldy)
                    precondition(status == 0, "no 8-bit kernel for \(type.name)")
                }
            }
            return
        }
        let stride = (GGMLDot.QuantizedActivations.scratchBytes(count: n) + 63) & ~63
        withUnsafeTemporaryAllocation(byteCount: batch * stride, alignment: 64) { raw in
            let base = raw.baseAddress!
            // The scratch layout is fixed by `count`, so each row's view is rebuilt without requantizing.
            for b in 0..<batch { _ = GGMLDot.QuantizedActivations(x + b * ldx, count: n, scratch: base + b * stride) }
            Linear.tiled(rows: rows, batch: batch, tileRows: tile) { t, b in
                let xq = GGMLDot.QuantizedActivations(prepared: base + b * stride, count: n)
                let yb = y + b * ldy
                switch type {
                case .q8_0: GGMLDot.q8_0(data, rowBytes: rowBytes, rows: t, x: xq, y: yb)
                case .q4_0: GGMLDot.q4_0(data, rowBytes: rowBytes, rows: t, x: xq, y: yb)
                case .q5_0: GGMLDot.q5_0(data, rowBytes: rowBytes, rows: t, x: xq, y: yb)
                case .q4_K: GGMLDot.q4_K(data, rowBytes: rowBytes, rows: t, x: xq, y: yb)
                case .q6_K: GGMLDot.q6_K(data, rowBytes: rowBytes, rows: t, x: xq, y: yb)
                default: break  // excluded by checkShape
                }
            }
        }
    }

    /// Quantizes x to 8 bits per block (stack buffers), then the VNNI kernel over the packed rows.
    private func gemvInt8(rows: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let n = inFeatures, blocks = inFeatures / 32
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: n) { qs in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: blocks) { scale in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * blocks) { sums in
                    let blockSums = sums.baseAddress!, halfSums = blockSums + blocks
                    gemma3_quantize_q8_blocks(x, n, qs.baseAddress!, scale.baseAddress!, blockSums, halfSums)
                    let status = gemma3_q8_gemv(Int32(type.rawValue), data, rowBytes, rows.lowerBound, rows.upperBound,
                                                qs.baseAddress!, scale.baseAddress!, blockSums, halfSums, blocks, y)
                    precondition(status == 0, "no 8-bit kernel for \(type.name)")  // hasKernels types all have one
                }
            }
        }
    }

    /// Row by row: dequantize into a stack buffer, then a float32 dot product.
    private func gemvFloat(rows: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: inFeatures) { buffer in
            let row = buffer.baseAddress!
            for r in rows {
                GGMLBlocks.dequantizeRowUnchecked(type, data + r * rowBytes, row, count: inFeatures)
                y[r] = Kernels.dot(row, x, inFeatures)
            }
        }
    }

    public func dequantize(rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        for (i, r) in rows.enumerated() {
            GGMLBlocks.dequantizeRowUnchecked(type, data + r * rowBytes, out + i * inFeatures, count: inFeatures)
        }
    }
}
