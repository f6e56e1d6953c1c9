/// Matrix-vector products computed directly on ggml blocks (the decode path).
///
/// The activation vector is first quantized to **16-bit** integers with one float scale per block of
/// 32 (`QuantizedActivations`); each weight block is then unpacked to small integers and multiplied
/// with integer arithmetic, and the block's integer sum is scaled once by `d_w · d_x`.
///
/// Why integers: on the default x86-64 target (SSE2) the integer multiply-add `pmaddwd` handles
/// eight 16-bit products per instruction and needs no int→float conversion per weight, so the
/// Q8_0 kernel runs at ≈ 15 GB/s of weights per core against ≈ 4 GB/s for dequantize-to-float-and-
/// multiply, comfortably above the machine's ≈ 10 GB/s-per-core share of DRAM bandwidth.
/// Why 16 and not 8 bits (llama.cpp quantizes activations to 8 bits): the products still fit
/// (|w| ≤ 128, |x| ≤ 32767, 32 of them sum below 2³¹) at the same speed, and the activation
/// rounding error drops from ≈ 0.4% to ≈ 0.002% of each block's largest value, so results agree with
/// float32 arithmetic on dequantized weights to about 1e-5 relative.
///
/// Every kernel is single-threaded over a range of rows; `QuantizedLinear` and `Linear.gemv` split
/// rows over the cores. Loops are written as `acc &+= a &* b` on SIMD vectors, which the compiler maps
/// to `pmaddwd`/`paddd` (the even/odd lane sums are the pattern it recognises).
public enum GGMLDot {
    /// Values per activation block (one scale each).
    public static let block = 32

    /// An activation vector quantized for the integer kernels: `q[i] ≈ x[i] / scale[i / 32]`,
    /// |q| ≤ 32767, plus sums of `q` over groups of 16 (for formats with an offset or a min).
    /// Storage is borrowed (callers provide it, usually from a stack allocation).
    public struct QuantizedActivations {
        public let count: Int
        public let q: UnsafeMutablePointer<Int16>
        public let scale: UnsafeMutablePointer<Float>
        public let sum16: UnsafeMutablePointer<Int32>
        /// scale[b] · Σ q over block b: the block's sum of activations as a float (for offsets).
        public let blockSum: UnsafeMutablePointer<Float>

        /// Bytes of scratch memory needed for `count` values (see `withQuantized`).
        @inlinable public static func scratchBytes(count: Int) -> Int { count * 2 + (count / 32) * 8 + (count / 16) * 4 + 64 }

        /// Quantizes `x[0..<count]` (`count` a multiple of 32) into `scratch`, which must hold
        /// `scratchBytes(count:)` bytes aligned to 16, with |q| ≤ `limit` (at most 32767; the
        /// high-byte kernels of `UnpackedBlockLinear` need 8191, see `dotHighByte16`).
        @inlinable
        public init(_ x: UnsafePointer<Float>, count: Int, scratch: UnsafeMutableRawPointer, limit: Float = 32767) {
            self.count = count
            q = scratch.bindMemory(to: Int16.self, capacity: count)
            scale = (scratch + count * 2).bindMemory(to: Float.self, capacity: count / 32)
            sum16 = (scratch + count * 2 + (count / 32) * 4).bindMemory(to: Int32.self, capacity: count / 16)
            blockSum = (scratch + count * 2 + (count / 32) * 4 + (count / 16) * 4).bindMemory(to: Float.self, capacity: count / 32)
            let xr = UnsafeRawPointer(x)
            let qr = UnsafeMutableRawPointer(q)
            for b in 0..<(count / 32) {
                let o = b &* 128
                let v0 = xr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                let v1 = xr.loadUnaligned(fromByteOffset: o &+ 32, as: SIMD8<Float>.self)
                let v2 = xr.loadUnaligned(fromByteOffset: o &+ 64, as: SIMD8<Float>.self)
                let v3 = xr.loadUnaligned(fromByteOffset: o &+ 96, as: SIMD8<Float>.self)
                let m = pointwiseMax(pointwiseMax(pointwiseMax(v0, -v0), pointwiseMax(v1, -v1)),
                                     pointwiseMax(pointwiseMax(v2, -v2), pointwiseMax(v3, -v3))).max()
                let d = m / limit
                scale[b] = d
                let id: Float = d > 0 ? 1 / d : 0
                // Round to nearest even with the 1.5·2²³ trick: adding it leaves the rounded integer in the
                // low mantissa bits (exact for |v| < 2²²; SSE2 has no roundps).
                let magic = SIMD8<Float>(repeating: 12_582_912)
                @inline(__always) func store(_ v: SIMD8<Float>, _ k: Int) -> Int32 {
                    let qi = unsafeBitCast(v * id + magic, to: SIMD8<Int32>.self) &- 0x4B40_0000
                    qr.storeBytes(of: SIMD8<Int16>(truncatingIfNeeded: qi), toByteOffset: (b &* 32 &+ k &* 8) &* 2, as: SIMD8<Int16>.self)
                    return qi.wrappedSum()
                }
                sum16[b &* 2] = store(v0, 0) &+ store(v1, 1)
                sum16[b &* 2 &+ 1] = store(v2, 2) &+ store(v3, 3)
                blockSum[b] = d * Float(sum16[b &* 2] &+ sum16[b &* 2 &+ 1])
            }
        }

        /// A view of activations already quantized into `scratch` by `init(_:count:scratch:limit:)`
        /// with the same `count` (batched products quantize each row once, then reuse it per tile).
        @inlinable
        public init(prepared scratch: UnsafeMutableRawPointer, count: Int) {
            self.count = count
            q = scratch.assumingMemoryBound(to: Int16.self)
            scale = (scratch + count * 2).assumingMemoryBound(to: Float.self)
            sum16 = (scratch + count * 2 + (count / 32) * 4).assumingMemoryBound(to: Int32.self)
            blockSum = (scratch + count * 2 + (count / 32) * 4 + (count / 16) * 4).assumingMemoryBound(to: Float.self)
        }

        /// Sum of q over the 32 values of block `b`.
        @inlinable @inline(__always) public func sum32(_ b: Int) -> Int32 { sum16[2 &* b] &+ sum16[2 &* b &+ 1] }
    }

    /// Quantizes `x` into stack scratch and calls `body` with the result.
    @inlinable
    public static func withQuantized<R>(_ x: UnsafePointer<Float>, count: Int, limit: Float = 32767,
                                        _ body: (QuantizedActivations) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(byteCount: QuantizedActivations.scratchBytes(count: count), alignment: 64) { raw in
            try body(QuantizedActivations(x, count: count, scratch: raw.baseAddress!, limit: limit))
        }
    }

    // MARK: Integer dot helpers (16 weights × 16 activations → 4 partial int32 sums)

    /// Σ u[i]·x[i] for 16 unsigned weights (each < 128) and 16 activations at `x + byteOffset`.
    @inlinable @inline(__always)
    static func dotU8(_ u: SIMD16<UInt8>, _ x: UnsafeRawPointer, _ byteOffset: Int) -> SIMD4<Int32> {
        let w0 = SIMD8<Int32>(truncatingIfNeeded: u.lowHalf)
        let w1 = SIMD8<Int32>(truncatingIfNeeded: u.highHalf)
        let x0 = SIMD8<Int32>(truncatingIfNeeded: x.loadUnaligned(fromByteOffset: byteOffset, as: SIMD8<Int16>.self))
        let x1 = SIMD8<Int32>(truncatingIfNeeded: x.loadUnaligned(fromByteOffset: byteOffset &+ 16, as: SIMD8<Int16>.self))
        let p0 = w0 &* x0, p1 = w1 &* x1
        return (p0.evenHalf &+ p0.oddHalf) &+ (p1.evenHalf &+ p1.oddHalf)
    }

    /// Σ q[i]·x[i] for 8 signed weights at `w + wOffset` and 8 activations at `x + xOffset`.
    @inlinable @inline(__always)
    static func dotI8x8(_ w: UnsafeRawPointer, _ wOffset: Int, _ x: UnsafeRawPointer, _ xOffset: Int) -> SIMD4<Int32> {
        let q = SIMD8<Int32>(truncatingIfNeeded: w.loadUnaligned(fromByteOffset: wOffset, as: SIMD8<Int8>.self))
        let xv = SIMD8<Int32>(truncatingIfNeeded: x.loadUnaligned(fromByteOffset: xOffset, as: SIMD8<Int16>.self))
        let p = q &* xv
        return p.evenHalf &+ p.oddHalf
    }

    /// Largest |activation| for `dotHighByte16`: 14-bit activations, rounding error ≤ 0.006% of
    /// each block's largest value (16-bit: 0.0015%; llama.cpp's 8-bit: 0.4%).
    /// The bound is tight: a Q8_0 block of −128s against −8191s sums 8 × 32768 × 8191 =
    /// 2,147,221,504 per Int32 lane (limit 2,147,483,647); 8192, or more products per lane, overflows.
    public static let highByteLimit: Float = 8191

    /// 256 · Σ q[i]·x[i] for 16 signed weight bytes at `w + wOffset` and 16 activations at `x + xOffset`.
    ///
    /// Each byte goes to the high half of a 16-bit lane (q·256, exact): a byte interleave with zero,
    /// where sign-extending would need a shift more. That is a third fewer instructions than
    /// `dotI8x8`, which matters because the unpacked kernels are compute-bound on the base target.
    /// Bound: 8 products per lane per block, |q·256| ≤ 2¹⁵, |x| ≤ 8191, so |sum| < 2³¹.
    @inlinable @inline(__always)
    static func dotHighByte16(_ w: UnsafeRawPointer, _ wOffset: Int, _ x: UnsafeRawPointer, _ xOffset: Int) -> SIMD4<Int32> {
        let q0 = SIMD8<Int32>(truncatingIfNeeded: w.loadUnaligned(fromByteOffset: wOffset, as: SIMD8<Int8>.self)) &<< 8
        let q1 = SIMD8<Int32>(truncatingIfNeeded: w.loadUnaligned(fromByteOffset: wOffset &+ 8, as: SIMD8<Int8>.self)) &<< 8
        let x0 = SIMD8<Int32>(truncatingIfNeeded: x.loadUnaligned(fromByteOffset: xOffset, as: SIMD8<Int16>.self))
        let x1 = SIMD8<Int32>(truncatingIfNeeded: x.loadUnaligned(fromByteOffset: xOffset &+ 16, as: SIMD8<Int16>.self))
        let p0 = q0 &* x0, p1 = q1 &* x1
        return (p0.evenHalf &+ p0.oddHalf) &+ (p1.evenHalf &+ p1.oddHalf)
    }

    /// Sixteen bytes (two little-endian 64-bit halves) as a byte vector.
    @inlinable @inline(__always)
    static func bytes(_ lo: UInt64, _ hi: UInt64) -> SIMD16<UInt8> {
        unsafeBitCast(SIMD2<UInt64>(lo, hi), to: SIMD16<UInt8>.self)
    }

    /// `fifthBit[b]` spreads the 8 bits of `b` over 8 bytes: byte i is 16 when bit i is set
    /// (the Q5_0 high bits, ready to OR onto the low nibbles).
    public static let fifthBit: [UInt64] = (0..<256).map { b in
        var v: UInt64 = 0
        for i in 0..<8 where (b >> i) & 1 == 1 { v |= UInt64(0x10) << (8 * UInt64(i)) }
        return v
    }

    // MARK: Row kernels. Each computes y[r] = W[r, :] · x for r in `rows`; W rows are `rowBytes` apart.

    /// Q8_0 weights.
    @inlinable
    public static func q8_0(_ w: UnsafeRawPointer, rowBytes: Int, rows: Range<Int>, x: QuantizedActivations, y: UnsafeMutablePointer<Float>) {
        let nb = x.count / 32
        let xq = UnsafeRawPointer(x.q)
        for r in rows {
            let row = w + r &* rowBytes
            var total = SIMD4<Float>()
            for b in 0..<nb {
                let p = row + b &* 34
                let d = Half.toFloatFinite(p.loadUnaligned(as: UInt16.self)) * x.scale[b]
                let xo = b &* 64
                var s = SIMD4<Int32>()
                for k in 0..<4 { s &+= dotI8x8(p, 2 &+ 8 &* k, xq, xo &+ 16 &* k) }
                total += SIMD4<Float>(s) * d
            }
            y[r] = total.sum()
        }
    }

    /// Q4_0 weights: Σ (u − 8)·x = Σ u·x − 8·Σ x, with u the raw nibble.
    @inlinable
    public static func q4_0(_ w: UnsafeRawPointer, rowBytes: Int, rows: Range<Int>, x: QuantizedActivations, y: UnsafeMutablePointer<Float>) {
        let nb = x.count / 32
        let xq = UnsafeRawPointer(x.q)
        for r in rows {
            let row = w + r &* rowBytes
            var total = SIMD4<Float>()
            var offset: Float = 0
            for b in 0..<nb {
                let p = row + b &* 18
                let d = Half.toFloatFinite(p.loadUnaligned(as: UInt16.self)) * x.scale[b]
                let qs = p.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self)
                let xo = b &* 64
                var s = SIMD4<Int32>()
                for k in 0..<2 { s &+= dotU8(k == 0 ? qs & 0x0f : qs &>> 4, xq, xo &+ 32 &* k) }
                total += SIMD4<Float>(s) * d
                offset += Float(x.sum32(b)) * d
            }
            y[r] = total.sum() - 8 * offset
        }
    }

    /// Q5_0 weights: Σ (u − 16)·x with u = nibble | fifth bit·16.
    @inlinable
    public static func q5_0(_ w: UnsafeRawPointer, rowBytes: Int, rows: Range<Int>, x: QuantizedActivations, y: UnsafeMutablePointer<Float>) {
        let nb = x.count / 32
        let xq = UnsafeRawPointer(x.q)
        fifthBit.withUnsafeBufferPointer { table in
            for r in rows {
                let row = w + r &* rowBytes
                var total = SIMD4<Float>()
                var offset: Float = 0
                for b in 0..<nb {
                    let p = row + b &* 22
                    let d = Half.toFloatFinite(p.loadUnaligned(as: UInt16.self)) * x.scale[b]
                    let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
                    let qs = p.loadUnaligned(fromByteOffset: 6, as: SIMD16<UInt8>.self)
                    let h0 = bytes(table[Int(qh & 0xff)], table[Int((qh >> 8) & 0xff)])
                    let h1 = bytes(table[Int((qh >> 16) & 0xff)], table[Int(qh >> 24)])
                    let xo = b &* 64
                    var s = SIMD4<Int32>()
                    for k in 0..<2 { s &+= dotU8(k == 0 ? (qs & 0x0f) | h0 : (qs &>> 4) | h1, xq, xo &+ 32 &* k) }
                    total += SIMD4<Float>(s) * d
                    offset += Float(x.sum32(b)) * d
                }
                y[r] = total.sum() - 16 * offset
            }
        }
    }

    /// Q4_K weights: per sub-block, d·sc·Σ u·x − dmin·m·Σ x.
    @inlinable
    public static func q4_K(_ w: UnsafeRawPointer, rowBytes: Int, rows: Range<Int>, x: QuantizedActivations, y: UnsafeMutablePointer<Float>) {
        let nsb = x.count / 256
        for r in rows {
            let row = w + r &* rowBytes
            var total = SIMD4<Float>()
            var offset: Float = 0
            for sb in 0..<nsb { q4KSuperBlock(row + sb &* 144, sb, x, &total, &offset) }
            y[r] = total.sum() - offset
        }
    }

    /// One Q4_K super-block (256 values). Kept out of line: a small function is what lets the
    /// compiler inline the SIMD widening conversions (in a large caller it emits calls instead).
    @usableFromInline @inline(never)
    static func q4KSuperBlock(_ p: UnsafeRawPointer, _ sb: Int, _ x: QuantizedActivations,
                              _ total: inout SIMD4<Float>, _ offset: inout Float) {
        let xq = UnsafeRawPointer(x.q)
        let d = Half.toFloatFinite(p.loadUnaligned(as: UInt16.self))
        let dmin = Half.toFloatFinite(p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        // Sub-block j (0…7) holds values 32j…32j+31: the low nibbles of qs[32(j/2) ..< +32] for even j,
        // the high nibbles for odd j.
        for j in 0..<8 {
            let c = j >> 1
            let odd = j & 1 == 1
            let b = sb &* 8 &+ j                                 // activation block
            let (sc, m) = GGMLBlocks.q4KScaleMin(p + 4, j)
            var s = SIMD4<Int32>()
            for k in 0..<2 {
                let q = p.loadUnaligned(fromByteOffset: 16 &+ 32 &* c &+ 16 &* k, as: SIMD16<UInt8>.self)
                s &+= dotU8(odd ? q &>> 4 : q & 0x0f, xq, b &* 64 &+ 32 &* k)
            }
            let dx = x.scale[b]
            total += SIMD4<Float>(s) * (d * Float(sc) * dx)
            offset += dmin * Float(m) * dx * Float(x.sum32(b))
        }
    }

    /// Q6_K weights: per 16 values, d·scale·(Σ u·x − 32·Σ x) with u the unsigned 6-bit value.
    @inlinable
    public static func q6_K(_ w: UnsafeRawPointer, rowBytes: Int, rows: Range<Int>, x: QuantizedActivations, y: UnsafeMutablePointer<Float>) {
        let nsb = x.count / 256
        for r in rows {
            let row = w + r &* rowBytes
            var total = SIMD4<Float>()
            var offset: Float = 0
            for sb in 0..<nsb { q6KSuperBlock(row + sb &* 210, sb, x, &total, &offset) }
            y[r] = total.sum() - 32 * offset
        }
    }

    /// One Q6_K super-block (256 values); out of line for the same reason as `q4KSuperBlock`.
    @usableFromInline @inline(never)
    static func q6KSuperBlock(_ p: UnsafeRawPointer, _ sb: Int, _ x: QuantizedActivations,
                              _ total: inout SIMD4<Float>, _ offset: inout Float) {
        let d = Half.toFloatFinite(p.loadUnaligned(fromByteOffset: 208, as: UInt16.self))
        // Half n covers values 128n…128n+127 in four groups k of 32; value 128n + 32k + l takes its low
        // 4 bits from ql[64n + l (+32 for odd k)] (low nibble for k < 2, high for k ≥ 2) and its high
        // 2 bits from bits 2k…2k+1 of qh[32n + l]. Each group of 16 values has its own int8 scale.
        for n in 0..<2 {
            let first = sb &* 256 &+ n &* 128
            for l in stride(from: 0, to: 32, by: 16) {
                let a = p.loadUnaligned(fromByteOffset: 64 &* n &+ l, as: SIMD16<UInt8>.self)
                let b = p.loadUnaligned(fromByteOffset: 64 &* n &+ 32 &+ l, as: SIMD16<UInt8>.self)
                let h = p.loadUnaligned(fromByteOffset: 128 &+ 32 &* n &+ l, as: SIMD16<UInt8>.self)
                let u0 = (a & 0x0f) | ((h & 0x03) &<< 4)
                let u1 = (b & 0x0f) | ((h & 0x0c) &<< 2)
                let u2 = (a &>> 4) | (h & 0x30)
                let u3 = (b &>> 4) | ((h & 0xc0) &>> 2)
                let sc = p + (192 &+ 8 &* n &+ (l >> 4))
                q6KGroup(u0, u1, first &+ l, d, sc, x, &total, &offset)
                q6KGroup(u2, u3, first &+ 64 &+ l, d, sc + 4, x, &total, &offset)
            }
        }
    }

    /// Two groups of 16 Q6_K values: `u0` at value `v`, `u1` at value `v + 32`, with int8 scales at
    /// `sc[0]` and `sc[2]`. Small and out of line so that the widening conversions inline.
    @usableFromInline @inline(never)
    static func q6KGroup(_ u0: SIMD16<UInt8>, _ u1: SIMD16<UInt8>, _ v: Int, _ d: Float, _ sc: UnsafeRawPointer,
                         _ x: QuantizedActivations, _ total: inout SIMD4<Float>, _ offset: inout Float) {
        let xq = UnsafeRawPointer(x.q)
        for k in 0..<2 {
            let w = v &+ 32 &* k
            let f = d * Float(sc.load(fromByteOffset: 2 &* k, as: Int8.self)) * x.scale[w >> 5]
            total += SIMD4<Float>(dotU8(k == 0 ? u0 : u1, xq, w &* 2)) * f
            offset += Float(x.sum16[w >> 4]) * f
        }
    }

    /// F16 weights against float32 activations (no activation quantization).
    ///
    /// Halves are widened with integer bit operations only (no F16C on the base target): each 32-bit
    /// word holds an even and an odd element, so `x` is first permuted, per 8 values, into
    /// [x0 x2 x4 x6 x1 x3 x5 x7] to match.
    @inlinable
    public static func f16(_ w: UnsafeRawPointer, rowBytes: Int, cols: Int, rows: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let vec = cols & ~7
        withUnsafeTemporaryAllocation(of: Float.self, capacity: max(vec, 1)) { perm in
            for g in stride(from: 0, to: vec, by: 8) {
                for i in 0..<4 { perm[g + i] = x[g + 2 * i]; perm[g + 4 + i] = x[g + 2 * i + 1] }
            }
            let xr = UnsafeRawPointer(perm.baseAddress!)
            for r in rows {
                let row = w + r &* rowBytes
                var a0 = SIMD4<Float>(), a1 = SIMD4<Float>()
                var j = 0
                while j < vec {
                    let words = row.loadUnaligned(fromByteOffset: j &* 2, as: SIMD4<UInt32>.self)
                    a0 += widenHalves(words & 0xffff) * xr.loadUnaligned(fromByteOffset: j &* 4, as: SIMD4<Float>.self)
                    a1 += widenHalves(words &>> 16) * xr.loadUnaligned(fromByteOffset: j &* 4 &+ 16, as: SIMD4<Float>.self)
                    j &+= 8
                }
                var s = (a0 + a1).sum()
                while j < cols {
                    s += Half.toFloat(row.loadUnaligned(fromByteOffset: j &* 2, as: UInt16.self)) * x[j]
                    j &+= 1
                }
                y[r] = s
            }
        }
    }

    /// Four half bit patterns (in the low 16 bits of each lane) → float32; exact for finite values
    /// (inf/NaN lanes are fixed up).
    @inlinable @inline(__always)
    static func widenHalves(_ h: SIMD4<UInt32>) -> SIMD4<Float> {
        let magnitude = (h & 0x7fff) &<< 13
        var f = unsafeBitCast(magnitude, to: SIMD4<Float>.self) * 0x1p112
        let special = magnitude .>= 0x0f80_0000
        if any(special) { f.replace(with: unsafeBitCast(magnitude | 0x7f80_0000, to: SIMD4<Float>.self), where: special) }
        return unsafeBitCast(unsafeBitCast(f, to: SIMD4<UInt32>.self) | ((h & 0x8000) &<< 16), to: SIMD4<Float>.self)
    }
}
