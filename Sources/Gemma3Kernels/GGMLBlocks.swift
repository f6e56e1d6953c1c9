/// Dequantization and quantization of ggml block formats, one row at a time.
///
/// Block layouts (little-endian, as ggml defines them; `d`, `dmin` are IEEE halves):
/// - Q8_0 (32 values, 34 B): `d`, `int8 q[32]`;                          x = d·q
/// - Q4_0 (32 values, 18 B): `d`, `u8 qs[16]`;                           x = d·(nibble − 8); the low
///   nibbles hold values 0…15, the high nibbles 16…31
/// - Q5_0 (32 values, 22 B): `d`, `u32 qh`, `u8 qs[16]`;                 x = d·((nibble | bit·16) − 16),
///   bit j of `qh` is the fifth bit of value j
/// - Q4_K (256 values, 144 B): `d`, `dmin`, `u8 scales[12]`, `u8 qs[128]`; eight sub-blocks of 32 with
///   6-bit scale `sc` and min `m`: x = d·sc·nibble − dmin·m. Each 32-byte run of `qs` holds two
///   sub-blocks (low nibbles, then high nibbles)
/// - Q6_K (256 values, 210 B): `u8 ql[128]`, `u8 qh[64]`, `int8 scales[16]`, `d`; sixteen sub-blocks of
///   16: x = d·scale·(q − 32) with q = 4 low bits from `ql` and 2 high bits from `qh`
/// - F32, F16, BF16: plain values.
///
/// Dequantization reproduces ggml's arithmetic order, so a tensor dequantized here equals the one
/// llama.cpp writes when it converts the same file to F32 (up to its compiler's FMA contraction).
public enum GGMLBlocks {
    /// Errors for unsupported types and bad lengths (one line each).
    public struct Unsupported: Error, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    // MARK: Dequantization

    /// Writes `count` float32 values decoded from the row at `src` (`count` a multiple of the block size).
    public static func dequantizeRow(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) throws {
        guard type.hasKernels else { throw Unsupported("tensor type \(type.name) cannot be dequantized (supported: F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q6_K)") }
        guard count % type.blockSize == 0 else { throw Unsupported("\(type.name): \(count) values is not a multiple of the block size \(type.blockSize)") }
        dequantizeRowUnchecked(type, src, dst, count: count)
    }

    /// `dequantizeRow` without the argument checks (the caller guarantees a supported type and
    /// a whole number of blocks).
    @inlinable
    public static func dequantizeRowUnchecked(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        switch type {
        case .f32: dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
        case .f16: dequantizeF16(src, dst, count)
        case .bf16: dequantizeBF16(src, dst, count)
        case .q8_0: dequantizeQ8_0(src, dst, count / 32)
        case .q4_0: dequantizeQ4_0(src, dst, count / 32)
        case .q5_0: dequantizeQ5_0(src, dst, count / 32)
        case .q4_K: dequantizeQ4_K(src, dst, count / 256)
        case .q6_K: dequantizeQ6_K(src, dst, count / 256)
        default: fatalError("GGMLBlocks.dequantizeRowUnchecked: \(type.name) has no kernel")  // excluded by callers
        }
    }

    @inlinable
    static func dequantizeF16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
        let out = UnsafeMutableRawPointer(dst)
        var i = 0
        while i + 8 <= n {
            out.storeBytes(of: Half.widen8(src, i &* 2), toByteOffset: i &* 4, as: SIMD8<Float>.self)
            i &+= 8
        }
        while i < n {
            dst[i] = Half.toFloat(src.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self))
            i &+= 1
        }
    }

    @inlinable
    static func dequantizeBF16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n {
            dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self)) << 16)
        }
    }

    @inlinable
    static func dequantizeQ8_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
        let out = UnsafeMutableRawPointer(dst)
        for b in 0..<blocks {
            let p = src + b &* 34
            let d = Half.toFloat(p.loadUnaligned(as: UInt16.self))
            for k in 0..<4 {
                let q = SIMD8<Int32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 2 &+ 8 &* k, as: SIMD8<Int8>.self))
                out.storeBytes(of: SIMD8<Float>(q) * d, toByteOffset: (b &* 32 &+ 8 &* k) &* 4, as: SIMD8<Float>.self)
            }
        }
    }

    @inlinable
    static func dequantizeQ4_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = src + b &* 18
            let d = Half.toFloat(p.loadUnaligned(as: UInt16.self))
            let y = dst + b &* 32
            for j in 0..<16 {
                let q = p.load(fromByteOffset: 2 &+ j, as: UInt8.self)
                y[j] = Float(Int32(q & 0x0f) &- 8) * d
                y[j &+ 16] = Float(Int32(q >> 4) &- 8) * d
            }
        }
    }

    @inlinable
    static func dequantizeQ5_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = src + b &* 22
            let d = Half.toFloat(p.loadUnaligned(as: UInt16.self))
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            let y = dst + b &* 32
            for j in 0..<16 {
                let q = p.load(fromByteOffset: 6 &+ j, as: UInt8.self)
                let h0 = Int32(truncatingIfNeeded: (qh >> UInt32(j)) << 4) & 0x10
                let h1 = Int32(truncatingIfNeeded: qh >> UInt32(j &+ 12)) & 0x10
                y[j] = Float((Int32(q & 0x0f) | h0) &- 16) * d
                y[j &+ 16] = Float((Int32(q >> 4) | h1) &- 16) * d
            }
        }
    }

    /// The 32 integers of one Q8_0, Q5_0 or Q4_0 block, offset removed (q − 16 for Q5_0, q − 8 for
    /// Q4_0), written to `q`; returns the block scale d, so that value i = d · q[i] exactly.
    @inlinable
    public static func smallBlockIntegers(_ type: GGMLType, _ p: UnsafeRawPointer, into q: UnsafeMutablePointer<Int8>) -> Float {
        let d = Half.toFloat(p.loadUnaligned(as: UInt16.self))
        switch type {
        case .q4_0:
            for j in 0..<16 {
                let v = p.load(fromByteOffset: 2 &+ j, as: UInt8.self)
                q[j] = Int8(Int(v & 0x0f) - 8)
                q[j &+ 16] = Int8(Int(v >> 4) - 8)
            }
        case .q5_0:
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            for j in 0..<16 {
                let v = p.load(fromByteOffset: 6 &+ j, as: UInt8.self)
                q[j] = Int8((Int(v & 0x0f) | Int((qh >> UInt32(j)) & 1) << 4) - 16)
                q[j &+ 16] = Int8((Int(v >> 4) | Int((qh >> UInt32(j &+ 16)) & 1) << 4) - 16)
            }
        default:  // Q8_0
            UnsafeMutableRawPointer(q).copyMemory(from: p + 2, byteCount: 32)
        }
        return d
    }

    /// The 6-bit scale and min of sub-block `j` (0…7) of a Q4_K super-block.
    @inlinable @inline(__always)
    public static func q4KScaleMin(_ scales: UnsafeRawPointer, _ j: Int) -> (scale: UInt8, min: UInt8) {
        let q = scales.assumingMemoryBound(to: UInt8.self)
        if j < 4 {
            return (q[j] & 63, q[j &+ 4] & 63)
        }
        return ((q[j &+ 4] & 0x0f) | ((q[j &- 4] >> 6) << 4), (q[j &+ 4] >> 4) | ((q[j] >> 6) << 4))
    }

    @inlinable
    static func dequantizeQ4_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = src + b &* 144
            let d = Half.toFloat(p.loadUnaligned(as: UInt16.self))
            let dmin = Half.toFloat(p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
            let scales = p + 4
            let qs = (p + 16).assumingMemoryBound(to: UInt8.self)
            var y = dst + b &* 256
            for c in 0..<4 {
                let (sc0, m0) = q4KScaleMin(scales, 2 &* c)
                let (sc1, m1) = q4KScaleMin(scales, 2 &* c &+ 1)
                let d0 = d * Float(sc0), min0 = dmin * Float(m0)
                let d1 = d * Float(sc1), min1 = dmin * Float(m1)
                let q = qs + 32 &* c
                for l in 0..<32 { y[l] = d0 * Float(q[l] & 0x0f) - min0 }
                for l in 0..<32 { y[32 &+ l] = d1 * Float(q[l] >> 4) - min1 }
                y += 64
            }
        }
    }

    @inlinable
    static func dequantizeQ6_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = src + b &* 210
            let d = Half.toFloat(p.loadUnaligned(fromByteOffset: 208, as: UInt16.self))
            var y = dst + b &* 256
            for n in 0..<2 {
                let ql = (p + 64 &* n).assumingMemoryBound(to: UInt8.self)
                let qh = (p + (128 &+ 32 &* n)).assumingMemoryBound(to: UInt8.self)
                let sc = (p + (192 &+ 8 &* n)).assumingMemoryBound(to: Int8.self)
                for l in 0..<32 {
                    let s = l / 16
                    let h = qh[l]
                    let q1 = Int32((ql[l] & 0x0f) | ((h & 3) << 4)) &- 32
                    let q2 = Int32((ql[l &+ 32] & 0x0f) | (((h >> 2) & 3) << 4)) &- 32
                    let q3 = Int32((ql[l] >> 4) | (((h >> 4) & 3) << 4)) &- 32
                    let q4 = Int32((ql[l &+ 32] >> 4) | (((h >> 6) & 3) << 4)) &- 32
                    y[l] = d * Float(sc[s]) * Float(q1)
                    y[l &+ 32] = d * Float(sc[s &+ 2]) * Float(q2)
                    y[l &+ 64] = d * Float(sc[s &+ 4]) * Float(q3)
                    y[l &+ 96] = d * Float(sc[s &+ 6]) * Float(q4)
                }
                y += 128
            }
        }
    }

    // MARK: Quantization

    /// Encodes `count` float32 values into blocks of `type` at `dst` (`type.byteCount(elements: count)` bytes).
    ///
    /// Q8_0, Q4_0 and Q5_0 follow ggml's reference rounding (so the result equals llama.cpp's
    /// `quantize_row_*_ref`); Q4_K and Q6_K use a simple per-sub-block min/max fit of the same layout
    /// (valid files, a little less accurate than llama.cpp's iterative search).
    public static func quantizeRow(_ type: GGMLType, _ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, count: Int) throws {
        guard type.canQuantize else { throw Unsupported("cannot quantize to \(type.name) (supported: F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q6_K)") }
        guard count % type.blockSize == 0 else { throw Unsupported("\(type.name): \(count) values is not a multiple of the block size \(type.blockSize)") }
        switch type {
        case .f32: dst.copyMemory(from: src, byteCount: count * 4)
        case .f16: for i in 0..<count { dst.storeBytes(of: Half.fromFloat(src[i]), toByteOffset: i * 2, as: UInt16.self) }
        case .bf16: for i in 0..<count { dst.storeBytes(of: NumberFormats.floatToBF16(src[i]), toByteOffset: i * 2, as: UInt16.self) }
        case .q8_0: for b in 0..<(count / 32) { quantizeQ8_0Block(src + b * 32, dst + b * 34) }
        case .q4_0: for b in 0..<(count / 32) { quantizeQ4_0Block(src + b * 32, dst + b * 18) }
        case .q5_0: for b in 0..<(count / 32) { quantizeQ5_0Block(src + b * 32, dst + b * 22) }
        case .q4_K: for b in 0..<(count / 256) { quantizeQ4_KBlock(src + b * 256, dst + b * 144) }
        case .q6_K: for b in 0..<(count / 256) { quantizeQ6_KBlock(src + b * 256, dst + b * 210) }
        default: break
        }
    }

    /// Quantizes a row-major [rows × cols] float32 matrix; returns the packed block bytes.
    public static func quantize(_ type: GGMLType, _ values: UnsafeBufferPointer<Float>, rows: Int, cols: Int) throws -> [UInt8] {
        guard values.count == rows * cols, let rowBytes = type.byteCount(elements: cols) else {
            throw Unsupported("\(type.name): cannot quantize \(values.count) values as \(rows)×\(cols) (row length must be a multiple of \(type.blockSize))")
        }
        var out = [UInt8](repeating: 0, count: rows * rowBytes)
        try out.withUnsafeMutableBytes { raw in
            for r in 0..<rows {
                try quantizeRow(type, values.baseAddress! + r * cols, raw.baseAddress! + r * rowBytes, count: cols)
            }
        }
        return out
    }

    static func quantizeQ8_0Block(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for i in 0..<32 { amax = max(amax, abs(x[i])) }
        let d = amax / 127
        let id: Float = d != 0 ? 1 / d : 0
        out.storeBytes(of: Half.fromFloat(d), as: UInt16.self)
        for i in 0..<32 {
            out.storeBytes(of: Int8((x[i] * id).rounded()), toByteOffset: 2 + i, as: Int8.self)
        }
    }

    /// The value of largest magnitude, with its sign (ggml's Q4_0/Q5_0 scale reference).
    static func signedMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var amax: Float = 0, mx: Float = 0
        for i in 0..<n where abs(x[i]) > amax {
            amax = abs(x[i])
            mx = x[i]
        }
        return mx
    }

    static func quantizeQ4_0Block(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        let d = signedMax(x, 32) / -8
        let id: Float = d != 0 ? 1 / d : 0
        out.storeBytes(of: Half.fromFloat(d), as: UInt16.self)
        for j in 0..<16 {
            let q0 = min(15, UInt8(x[j] * id + 8.5))
            let q1 = min(15, UInt8(x[j + 16] * id + 8.5))
            out.storeBytes(of: q0 | (q1 << 4), toByteOffset: 2 + j, as: UInt8.self)
        }
    }

    static func quantizeQ5_0Block(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        let d = signedMax(x, 32) / -16
        let id: Float = d != 0 ? 1 / d : 0
        out.storeBytes(of: Half.fromFloat(d), as: UInt16.self)
        var qh: UInt32 = 0
        for j in 0..<16 {
            let q0 = min(31, UInt8(x[j] * id + 16.5))
            let q1 = min(31, UInt8(x[j + 16] * id + 16.5))
            out.storeBytes(of: (q0 & 0x0f) | ((q1 & 0x0f) << 4), toByteOffset: 6 + j, as: UInt8.self)
            qh |= UInt32(q0 >> 4) << UInt32(j)
            qh |= UInt32(q1 >> 4) << UInt32(j + 16)
        }
        out.storeBytes(of: qh, toByteOffset: 2, as: UInt32.self)
    }

    static func quantizeQ4_KBlock(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        // Per sub-block of 32: x ≈ scale·q − min with q in 0…15, min ≥ 0 (the range always covers 0).
        var scales = [Float](repeating: 0, count: 8), mins = [Float](repeating: 0, count: 8)
        for s in 0..<8 {
            var lo: Float = 0, hi: Float = 0
            for i in 0..<32 { lo = min(lo, x[s * 32 + i]); hi = max(hi, x[s * 32 + i]) }
            scales[s] = (hi - lo) / 15
            mins[s] = -lo
        }
        let d = Half.toFloat(Half.fromFloat((scales.max() ?? 0) / 63))
        let dmin = Half.toFloat(Half.fromFloat((mins.max() ?? 0) / 63))
        var sc = [UInt8](repeating: 0, count: 8), m = [UInt8](repeating: 0, count: 8)
        for s in 0..<8 {
            // Round the scale up so that the 0…15 grid still spans the sub-block's range.
            sc[s] = d > 0 ? UInt8(min(63, (scales[s] / d).rounded(.up))) : 0
            m[s] = dmin > 0 ? UInt8(min(63, (mins[s] / dmin).rounded())) : 0
        }
        out.storeBytes(of: Half.fromFloat(d), as: UInt16.self)
        out.storeBytes(of: Half.fromFloat(dmin), toByteOffset: 2, as: UInt16.self)
        var packed = [UInt8](repeating: 0, count: 12)
        for j in 0..<8 {
            if j < 4 {
                packed[j] |= sc[j] & 63
                packed[j + 4] |= m[j] & 63
            } else {
                packed[j + 4] = (sc[j] & 0x0f) | ((m[j] & 0x0f) << 4)
                packed[j - 4] |= (sc[j] >> 4) << 6
                packed[j] |= (m[j] >> 4) << 6
            }
        }
        for j in 0..<12 { out.storeBytes(of: packed[j], toByteOffset: 4 + j, as: UInt8.self) }
        var q = [UInt8](repeating: 0, count: 256)
        for s in 0..<8 {
            let ds = d * Float(sc[s]), ms = dmin * Float(m[s])
            let inv: Float = ds > 0 ? 1 / ds : 0
            for i in 0..<32 {
                q[s * 32 + i] = UInt8(max(0, min(15, ((x[s * 32 + i] + ms) * inv).rounded())))
            }
        }
        for c in 0..<4 {
            for l in 0..<32 {
                out.storeBytes(of: q[64 * c + l] | (q[64 * c + 32 + l] << 4), toByteOffset: 16 + 32 * c + l, as: UInt8.self)
            }
        }
    }

    static func quantizeQ6_KBlock(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        // Per sub-block of 16: x ≈ d·sc·(q − 32), q − 32 in −32…31, sc a signed 8-bit scale.
        var sub = [Float](repeating: 0, count: 16)
        for s in 0..<16 {
            var amax: Float = 0
            for i in 0..<16 { amax = max(amax, abs(x[s * 16 + i])) }
            sub[s] = amax / 31
        }
        let d = Half.toFloat(Half.fromFloat((sub.max() ?? 0) / 127))
        var sc = [Int8](repeating: 0, count: 16)
        for s in 0..<16 { sc[s] = d > 0 ? Int8(min(127, (sub[s] / d).rounded(.up))) : 0 }
        var q = [UInt8](repeating: 32, count: 256)
        for s in 0..<16 {
            let ds = d * Float(sc[s])
            let inv: Float = ds > 0 ? 1 / ds : 0
            for i in 0..<16 {
                q[s * 16 + i] = UInt8(max(-32, min(31, (x[s * 16 + i] * inv).rounded())) + 32)
            }
        }
        for n in 0..<2 {
            for l in 0..<32 {
                let base = 128 * n
                let q1 = q[base + l], q2 = q[base + 32 + l], q3 = q[base + 64 + l], q4 = q[base + 96 + l]
                out.storeBytes(of: (q1 & 0x0f) | ((q3 & 0x0f) << 4), toByteOffset: 64 * n + l, as: UInt8.self)
                out.storeBytes(of: (q2 & 0x0f) | ((q4 & 0x0f) << 4), toByteOffset: 64 * n + 32 + l, as: UInt8.self)
                out.storeBytes(of: (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6),
                               toByteOffset: 128 + 32 * n + l, as: UInt8.self)
            }
        }
        for s in 0..<16 { out.storeBytes(of: sc[s], toByteOffset: 192 + s, as: Int8.self) }
        out.storeBytes(of: Half.fromFloat(d), toByteOffset: 208, as: UInt16.self)
    }
}
