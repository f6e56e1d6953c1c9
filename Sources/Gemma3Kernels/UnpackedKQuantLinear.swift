import Foundation

/// A Q4_K or Q6_K matrix unpacked for decoding: every block of 32 values becomes two floats and 32
/// signed bytes (40 bytes per block): for Q4_K a scale and an offset, value = scale · q[i] − offset;
/// for Q6_K one scale per 16 values, value = scale[i / 16] · q[i].
///
/// Why: the K-quant kernels spend their time unpacking 4- and 6-bit fields and 6-bit sub-block
/// scales, not reading memory (≈ 6–7 GB/s on two cores against ≈ 22 GB/s for Q8_0 here). Unpacked
/// once at load, the same values decode with the Q8_0-style integer kernel at memory speed, for
/// 2.2× (Q4_K) or 1.5× (Q6_K) the bytes of those matrices — 21 MB more for Gemma 3 270M Q4_K_M.
///
/// The values are exactly those of `GGMLBlocks.dequantizeRow` (same float products: d·sc and
/// dmin·m for Q4_K, d·sc for Q6_K), so prefill and the float path are unchanged.
public final class UnpackedKQuantLinear: LinearWeight, @unchecked Sendable {
    public static let bytesPerBlock = 40
    /// The GGUF type the values came from.
    public let sourceType: GGMLType
    public let outFeatures: Int
    public let inFeatures: Int
    public let activations: QuantizedLinear.ActivationPrecision
    /// The packed matrix: prefill (`gemm`) and `dequantize` read it, as they are faster on the
    /// packed form and identical in value.
    public let packed: QuantizedLinear
    private let data: UnsafeMutableRawPointer
    private let rowBytes: Int

    /// Unpacks `matrix`, which must be Q4_K or Q6_K (nil otherwise).
    public init?(_ matrix: QuantizedLinear) {
        guard matrix.type == .q4_K || matrix.type == .q6_K else { return nil }
        sourceType = matrix.type
        packed = matrix
        outFeatures = matrix.outFeatures
        inFeatures = matrix.inFeatures
        activations = matrix.activations
        let blocks = inFeatures / 32
        rowBytes = blocks * Self.bytesPerBlock
        data = .allocate(byteCount: max(1, outFeatures * rowBytes), alignment: 64)
        for r in 0..<outFeatures {
            let src = matrix.data + r * matrix.rowBytes
            let dst = data + r * rowBytes
            for sb in 0..<(inFeatures / 256) {
                if sourceType == .q4_K {
                    Self.unpackQ4_K(src + sb * 144, into: dst + sb * 8 * Self.bytesPerBlock)
                } else {
                    Self.unpackQ6_K(src + sb * 210, into: dst + sb * 8 * Self.bytesPerBlock)
                }
            }
        }
    }

    deinit { data.deallocate() }

    public var storageBytes: Int { outFeatures * rowBytes }
    public var formatName: String { "\(sourceType.name)→i8" }

    /// Block j of a Q4_K super-block: 32 nibbles u with scale d·sc and offset dmin·m.
    private static func unpackQ4_K(_ p: UnsafeRawPointer, into out: UnsafeMutableRawPointer) {
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
        GGMLDot.withQuantized(x, count: inFeatures) { xq in
            if sourceType == .q4_K {
                GGMLDot.unpackedQ4_K(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
            } else {
                GGMLDot.unpackedQ6_K(data, rowBytes: rowBytes, rows: rows, x: xq, y: y)
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
            let p = row + b * Self.bytesPerBlock
            let a = p.load(as: Float.self), c = p.load(fromByteOffset: 4, as: Float.self)
            for l in 0..<32 {
                let q = Float(p.load(fromByteOffset: 8 + l, as: Int8.self))
                out[b * 32 + l] = sourceType == .q4_K ? a * q - c : (l < 16 ? a : c) * q
            }
        }
    }
}

extension QuantizedLinear {
    /// `GEMMA3_UNPACK_K=0` keeps Q4_K/Q6_K packed for decoding (to measure what unpacking saves).
    static let unpackKQuants = ProcessInfo.processInfo.environment["GEMMA3_UNPACK_K"] != "0"

    /// The fastest decode form of this matrix with identical values: Q4_0/Q5_0 as Q8_0
    /// (`widenedToQ8_0`), Q4_K/Q6_K unpacked (`UnpackedKQuantLinear`), anything else as is.
    public func widenedForDecode() -> any LinearWeight {
        if Self.unpackKQuants, let unpacked = UnpackedKQuantLinear(self) { return unpacked }
        return widenedToQ8_0()
    }
}

extension GGMLDot {
    /// Unpacked Q4_K blocks [scale, offset, 32 × int8]: y[r] = Σ_b dx·(scale·Σ q·xq − offset·Σ xq).
    /// Same loop shape as `q8_0`, which is what lets the compiler emit `pmaddwd` for it.
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
                for k in 0..<4 { s &+= dotI8x8(p, 8 &+ 8 &* k, xq, xo &+ 16 &* k) }
                total += SIMD4<Float>(s) * (p.loadUnaligned(as: Float.self) * dx)
                offset += p.loadUnaligned(fromByteOffset: 4, as: Float.self) * dx * Float(x.sum32(b))
            }
            y[r] = total.sum() - offset
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
                var lo = SIMD4<Int32>(), hi = SIMD4<Int32>()
                for k in 0..<2 { lo &+= dotI8x8(p, 8 &+ 8 &* k, xq, xo &+ 16 &* k) }
                for k in 0..<2 { hi &+= dotI8x8(p, 24 &+ 8 &* k, xq, xo &+ 32 &+ 16 &* k) }
                total += SIMD4<Float>(lo) * (p.loadUnaligned(as: Float.self) * dx)
                total += SIMD4<Float>(hi) * (p.loadUnaligned(fromByteOffset: 4, as: Float.self) * dx)
            }
            y[r] = total.sum()
        }
    }
}
