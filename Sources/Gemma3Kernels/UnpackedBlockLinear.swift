import Foundation

/// A quantized matrix unpacked for decoding: every block of 32 values becomes float scales and 32
/// signed bytes, so that one integer kernel shape (`pmaddwd` on bytes widened to 16 bits) serves
/// every GGUF block type at memory speed.
///
/// Layouts, per block of 32 values:
/// - Q8_0, Q5_0, Q4_0: 36 bytes, [scale][32 × int8], value = scale · q[i] (Q5_0/Q4_0 integers minus
///   their offset 16/8 fit in a byte under the same scale).
/// - Q4_K: 40 bytes, [scale, offset][32 × int8], value = scale · q[i] − offset.
/// - Q6_K: 40 bytes, [scale₀, scale₁][32 × int8], one scale per 16 values.
///
/// Why: the packed kernels spend their time on unpacking, not on reading memory. The fp16 block
/// scale of Q8_0 alone costs ten scalar instructions per block on the base x86-64 target (no F16C),
/// a quarter of the Q8_0 kernel; 4- and 5-bit fields and 6-bit sub-block scales cost more
/// (K-quants ran at ≈ 6–7 GB/s on two cores). Unpacked once at load, every type decodes at close to
/// memory speed, for 36/34 (Q8_0), 1.6× (Q5_0), 2.0× (Q4_0), 2.2× (Q4_K) or 1.5× (Q6_K) the bytes.
///
/// The values are exactly those of `GGMLBlocks.dequantizeRow` (same float products), so prefill and
/// the float path are unchanged; prefill (`gemm`) reads the packed form, which it dequantizes faster.
/// The kernels (`GGMLDot.unpackedQ8` and the K-quant pair) use `dotHighByte16`, with activations
/// quantized to 14 bits (`GGMLDot.highByteLimit`): ≈ 1e-4 of max |y| from exact float arithmetic.
public final class UnpackedBlockLinear: LinearWeight, @unchecked Sendable {
    /// The GGUF type the values came from.
    public let sourceType: GGMLType
    /// 36 (one scale) or 40 (two floats) bytes per block of 32 values.
    public let bytesPerBlock: Int
    public let outFeatures: Int
    public let inFeatures: Int
    public let activations: QuantizedLinear.ActivationPrecision
    /// The packed matrix: prefill (`gemm`) and `dequantize` read it, as they are faster on the
    /// packed form and identical in value.
    public let packed: QuantizedLinear
    private let data: UnsafeMutableRawPointer
    private let rowBytes: Int

    /// Unpacks `matrix`, which must be Q8_0, Q5_0, Q4_0, Q4_K or Q6_K (nil otherwise).
    public init?(_ matrix: QuantizedLinear) {
        switch matrix.type {
        case .q8_0, .q5_0, .q4_0: bytesPerBlock = 36
        case .q4_K, .q6_K: bytesPerBlock = 40
        default: return nil
        }
        sourceType = matrix.type
        packed = matrix
        outFeatures = matrix.outFeatures
        inFeatures = matrix.inFeatures
        activations = matrix.activations
        let blocks = inFeatures / 32
        rowBytes = blocks * bytesPerBlock
        let data = LargeAllocation.allocate(byteCount: outFeatures * rowBytes)
        self.data = data
        let (type, rowBytes, bytesPerBlock) = (sourceType, rowBytes, bytesPerBlock)
        // Rows are independent; the 262144-row LM head takes ≈ 0.1 s on one core.
        Parallel.chunks(outFeatures, minimumPerChunk: 64) { rows in
            for r in rows {
                let src = matrix.data + r * matrix.rowBytes
                let dst = data + r * rowBytes
                switch type {
                case .q4_K: for sb in 0..<(blocks / 8) { Self.unpackQ4_K(src + sb * 144, into: dst + sb * 8 * 40) }
                case .q6_K: for sb in 0..<(blocks / 8) { Self.unpackQ6_K(src + sb * 210, into: dst + sb * 8 * 40) }
                default:
                    for b in 0..<blocks {
                        let block = dst + b * bytesPerBlock
                        let scale = GGMLBlocks.smallBlockIntegers(type, src + b * type.bytesPerBlock,
                                                                  into: (block + 4).assumingMemoryBound(to: Int8.self))
                        block.storeBytes(of: scale, as: Float.self)
                    }
                }
            }
        }
    }

    deinit { LargeAllocation.deallocate(data) }

    public var storageBytes: Int { outFeatures * rowBytes }
    public var formatName: String { "\(sourceType.name)→i8" }

    /// Block j of a Q4_K super-block: 32 nibbles u with scale d·sc and offset dmin·m.
    private static func unpackQ4_K(_ p: UnsafeRawPointer, into out: UnsafeMutableRawPointer) {
        let bytesPerBlock = 40
        let d = Half.toFloat(p.loadUnaligned(as: UInt16.self))
        let dmin = Half.toFloat(p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        for j in 0..<8 {
            let (sc, m) = GGMLBlocks.q4KScaleMin(p + 4, j)
            let scale = d * Float(sc), offset = dmin * Float(m)
            let block = out + j * bytesPerBlock
            block.storeBytes(of: scale, as: Float.self)
            block.storeBytes(of: offset, toByteOffset: 4, as: Float.self)
            for l in 0..<32 {
                let byte = p.load(fromByteOffset: 16 + 32 * (j >> 1) + l, as: UInt8.self)
                block.storeBytes(of: Int8(j & 1 == 0 ? byte & 0x0f : byte >> 4), toByteOffset: 8 + l, as: Int8.self)
            }
        }
    }

    /// Value 32j + l of a Q6_K super-block (see `GGMLBlocks.dequantizeQ6_K` for the bit layout):
    /// q − 32 with scale d·sc per 16 values, no offset.
    private static func unpackQ6_K(_ p: UnsafeRawPointer, into out: UnsafeMutableRawPointer) {
        let bytesPerBlock = 40
        let d = Half.toFloat(p.loadUnaligned(fromByteOffset: 208, as: UInt16.self))
        for j in 0..<8 {
            let n = j >> 2, k = j & 3          // half n, group k of 32 values
            let block = out + j * bytesPerBlock
            for s in 0..<2 {
                let sc = p.load(fromByteOffset: 192 + 8 * n + 2 * k + s, as: Int8.self)
                block.storeBytes(of: d * Float(sc), toByteOffset: 4 * s, as: Float.self)
            }
            for l in 0..<32 {
                let ql = p.load(fromByteOffset: 64 * n + l + (k & 1) * 32, as: UInt8.self)
                let low = k < 2 ? ql & 0x0f : ql >> 4
                let high = (p.load(fromByteOffset: 128 + 32 * n + l, as: UInt8.self) >> (2 * UInt8(k))) & 3
                block.storeBytes(of: Int8(Int(low | high << 4) - 32), toByteOffset: 8 + l, as: Int8.self)
            }
        }
    }

    public func gemv(rows: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        guard !rows.isEmpty else { return }
        if activations == .float {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: inFeatures) { buffer in
                for r in rows {
                    unpackedRow(r, into: buffer.baseAddress!)
                    y[r] = Kernels.dot(buffer.baseAddress!, x, inFeatures)
                }
            }
            return
        }
        let (data, rowBytes) = (UnsafeRawPointer(self.data), self.rowBytes)
        GGMLDot.withQuantized(x, count: inFeatures, limit: GGMLDot.highByteLimit) { xq in
            switch sourceType {
            case .q4_K: GGMLDot.unpackedQ4_K(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
            case .q6_K: GGMLDot.unpackedQ6_K(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
            default: GGMLDot.unpackedQ8(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
            }
        }
    }

    /// The batched product: each input row quantized once for the whole call, then the single-row
    /// kernel per tile and row (the values of `gemv(rows:x:y:)`).
    public func gemv(rows: Range<Int>, batch: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard !rows.isEmpty, batch > 0 else { return }
        if batch == 1 {
            gemv(rows: rows, x: x, y: y)
            return
        }
        if activations == .float {
            Linear.tiledGemv(self, rows: rows, batch: batch, x: x, ldx: ldx, y: y, ldy: ldy)
            return
        }
        let (n, data, rowBytes, type) = (inFeatures, UnsafeRawPointer(self.data), self.rowBytes, sourceType)
        let stride = (GGMLDot.QuantizedActivations.scratchBytes(count: n) + 63) & ~63
        withUnsafeTemporaryAllocation(byteCount: batch * stride, alignment: 64) { raw in
            let base = raw.baseAddress!
            for b in 0..<batch {
                _ = GGMLDot.QuantizedActivations(x + b * ldx, count: n, scratch: base + b * stride, limit: GGMLDot.highByteLimit)
            }
            Linear.tiled(rows: rows, batch: batch, tileRows: batchTileRows) { t, b in
                let xq = GGMLDot.QuantizedActivations(prepared: base + b * stride, count: n)
                let yb = y + b * ldy
                switch type {
                case .q4_K: GGMLDot.unpackedQ4_K(data, rowBytes: rowBytes, rows: t, x: xq, y: yb)
                case .q6_K: GGMLDot.unpackedQ6_K(data, rowBytes: rowBytes, rows: t, x: xq, y: yb)
                default: GGMLDot.unpackedQ8(data, rowBytes: rowBytes, rows: t, x: xq, y: yb)
                }
            }
        }
    }

    public func dequantize(rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        packed.dequantize(rows: rows, into: out)
    }

    public func gemm(n: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        packed.gemm(n: n, x: x, ldx: ldx, y: y, ldy: ldy)
    }

    /// Row `r` as float32 from the unpacked blocks (what `gemv` multiplies; tests compare it with
    /// the packed matrix's `dequantize`).
    public func unpackedRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let row = UnsafeRawPointer(data) + r * rowBytes
        for b in 0..<(inFeatures / 32) {
            let p = row + b * bytesPerBlock
            let a = p.load(as: Float.self)
            if bytesPerBlock == 36 {
                for l in 0..<32 { out[b * 32 + l] = a * Float(p.load(fromByteOffset: 4 + l, as: Int8.self)) }
                continue
            }
            let c = p.load(fromByteOffset: 4, as: Float.self)
            for l in 0..<32 {
                let q = Float(p.load(fromByteOffset: 8 + l, as: Int8.self))
                out[b * 32 + l] = sourceType == .q4_K ? a * q - c : (l < 16 ? a : c) * q
            }
        }
    }
}

extension QuantizedLinear {
    /// `RuntimeSettings.unpacksForDecode` false keeps the packed blocks for decoding, with Q4_0/Q5_0
    /// widened to Q8_0 (to measure what unpacking saves).
    static var unpackForDecode: Bool { RuntimeSettings.current.unpacksForDecode }

    /// The fastest decode form of this matrix with identical values. With `.int8` activations on a
    /// CPU that runs them: the packed blocks copied to huge pages (the VNNI kernels unpack them in
    /// registers at memory speed). Otherwise quantized types unpacked to bytes with float scales
    /// (`UnpackedBlockLinear`). Float types stay as they are.
    public func widenedForDecode() -> any LinearWeight {
        if activations == .int8 && Self.int8Supported {
            return type.blockSize > 1 ? copiedToLargePages() : self
        }
        if Self.unpackForDecode, let unpacked = UnpackedBlockLinear(self) { return unpacked }
        return widenedToQ8_0()
    }
}

extension GGMLDot {
    /// Unpacked one-scale blocks [scale, 32 × int8] (from Q8_0, Q5_0, Q4_0): y[r] = Σ_b scale·dx·Σ q·xq.
    /// The `q8_0` kernel without the fp16 scale conversion.
    @inlinable
    public static func unpackedQ8(_ w: UnsafeRawPointer, rowBytes: Int, rows: Range<Int>, x: QuantizedActivations, y: UnsafeMutablePointer<Float>) {
        let nb = x.count / 32
        let xq = UnsafeRawPointer(x.q)
        for r in rows {
            let row = w + r &* rowBytes
            var total = SIMD4<Float>()
            for b in 0..<nb {
                let p = row + b &* 36
                let xo = b &* 64
                var s = SIMD4<Int32>()
                for k in 0..<2 { s &+= dotHighByte16(p, 4 &+ 16 &* k, xq, xo &+ 32 &* k) }
                total += SIMD4<Float>(s) * (p.loadUnaligned(as: Float.self) * x.scale[b])
            }
            y[r] = total.sum() * (1 / 256)
        }
    }

    /// Unpacked Q4_K blocks [scale, offset, 32 × int8]: y[r] = Σ_b dx·(scale·Σ q·xq − offset·Σ xq).
    /// Same loop shape as `unpackedQ8`, which is what lets the compiler emit `pmaddwd` for it.
    @inlinable
    public static func unpackedQ4_K(_ w: UnsafeRawPointer, rowBytes: Int, rows: Range<Int>, x: QuantizedActivations, y: UnsafeMutablePointer<Float>) {
        let nb = x.count / 32
        let xq = UnsafeRawPointer(x.q)
        for r in rows {
            let row = w + r &* rowBytes
            var total = SIMD4<Float>()
            var offset: Float = 0
            for b in 0..<nb {
                let p = row + b &* 40
                let dx = x.scale[b]
                let xo = b &* 64
                var s = SIMD4<Int32>()
                for k in 0..<2 { s &+= dotHighByte16(p, 8 &+ 16 &* k, xq, xo &+ 32 &* k) }
                total += SIMD4<Float>(s) * (p.loadUnaligned(as: Float.self) * dx)
                offset += p.loadUnaligned(fromByteOffset: 4, as: Float.self) * x.blockSum[b]
            }
            y[r] = total.sum() * (1 / 256) - offset
        }
    }

    /// Unpacked Q6_K blocks [scale₀, scale₁, 32 × int8], one scale per 16 values.
    @inlinable
    public static func unpackedQ6_K(_ w: UnsafeRawPointer, rowBytes: Int, rows: Range<Int>, x: QuantizedActivations, y: UnsafeMutablePointer<Float>) {
        let nb = x.count / 32
        let xq = UnsafeRawPointer(x.q)
        for r in rows {
            let row = w + r &* rowBytes
            var total = SIMD4<Float>()
            for b in 0..<nb {
                let p = row + b &* 40
                let dx = x.scale[b]
                let xo = b &* 64
                for k in 0..<2 {  // (a loop: written out, the compiler stops inlining the SIMD conversions)
                    let s = dotHighByte16(p, 8 &+ 16 &* k, xq, xo &+ 32 &* k)
                    total += SIMD4<Float>(s) * (p.loadUnaligned(fromByteOffset: 4 &* k, as: Float.self) * dx)
                }
            }
            y[r] = total.sum() * (1 / 256)
        }
    }
}
