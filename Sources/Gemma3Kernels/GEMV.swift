/// Matrix-vector products for the decode path: y[r] = Σ_j W[r, j] · x[j] over a range of rows.
///
/// Decoding one token reads every weight exactly once, so these kernels are bound by memory
/// bandwidth, not arithmetic; OpenBLAS's `sgemm` with m = 1 reaches only a fifth of that bound.
/// Each kernel walks four rows at once (four independent accumulators, one shared load of `x`)
/// and is single-threaded: callers split the rows over the cores (see `LinearWeight` and
/// `Linear.gemv`).
///
/// Written as `acc += w * x` on `SIMD8<Float>` so that the default x86-64 target vectorises it
/// without any libm `fma` call (see docs/performance.md).
public enum GEMV {
    /// float32 weights, row-major with row stride `ld` (elements). Rows `rows` of `y` are written.
    @inlinable
    public static func f32(
        _ w: UnsafePointer<Float>, ld: Int, cols: Int, rows: Range<Int>,
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>
    ) {
        let xr = UnsafeRawPointer(x)
        let vecCols = cols & ~7
        var r = rows.lowerBound
        while r + 4 <= rows.upperBound {
            let p0 = UnsafeRawPointer(w + r * ld), p1 = UnsafeRawPointer(w + (r + 1) * ld)
            let p2 = UnsafeRawPointer(w + (r + 2) * ld), p3 = UnsafeRawPointer(w + (r + 3) * ld)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var j = 0
            while j < vecCols {
                let o = j &* 4
                let xv = xr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                a0 += p0.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * xv
                a1 += p1.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * xv
                a2 += p2.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * xv
                a3 += p3.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * xv
                j &+= 8
            }
            var s0 = a0.sum(), s1 = a1.sum(), s2 = a2.sum(), s3 = a3.sum()
            while j < cols {
                let xj = x[j]
                s0 += w[r * ld + j] * xj
                s1 += w[(r + 1) * ld + j] * xj
                s2 += w[(r + 2) * ld + j] * xj
                s3 += w[(r + 3) * ld + j] * xj
                j += 1
            }
            y[r] = s0; y[r + 1] = s1; y[r + 2] = s2; y[r + 3] = s3
            r += 4
        }
        while r < rows.upperBound {
            y[r] = Kernels.dot(w + r * ld, x, cols)
            r += 1
        }
    }

    /// bfloat16 weights (raw bits, row stride `ld` elements), converted to float32 in registers by
    /// shifting each 16-bit pattern into the high half of a 32-bit lane (exact).
    @inlinable
    public static func bf16(
        _ w: UnsafePointer<UInt16>, ld: Int, cols: Int, rows: Range<Int>,
        x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>
    ) {
        let xr = UnsafeRawPointer(x)
        let vecCols = cols & ~7
        var r = rows.lowerBound
        while r + 4 <= rows.upperBound {
            let p0 = UnsafeRawPointer(w + r * ld), p1 = UnsafeRawPointer(w + (r + 1) * ld)
            let p2 = UnsafeRawPointer(w + (r + 2) * ld), p3 = UnsafeRawPointer(w + (r + 3) * ld)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var j = 0
            while j < vecCols {
                let xv = xr.loadUnaligned(fromByteOffset: j &* 4, as: SIMD8<Float>.self)
                let o = j &* 2
                a0 += widenBF16(p0, o) * xv
                a1 += widenBF16(p1, o) * xv
                a2 += widenBF16(p2, o) * xv
                a3 += widenBF16(p3, o) * xv
                j &+= 8
            }
            var s0 = a0.sum(), s1 = a1.sum(), s2 = a2.sum(), s3 = a3.sum()
            while j < cols {
                let xj = x[j]
                s0 += NumberFormats.bf16ToFloat(w[r * ld + j]) * xj
                s1 += NumberFormats.bf16ToFloat(w[(r + 1) * ld + j]) * xj
                s2 += NumberFormats.bf16ToFloat(w[(r + 2) * ld + j]) * xj
                s3 += NumberFormats.bf16ToFloat(w[(r + 3) * ld + j]) * xj
                j += 1
            }
            y[r] = s0; y[r + 1] = s1; y[r + 2] = s2; y[r + 3] = s3
            r += 4
        }
        while r < rows.upperBound {
            var s: Float = 0
            let row = w + r * ld
            for j in 0..<cols { s += NumberFormats.bf16ToFloat(row[j]) * x[j] }
            y[r] = s
            r += 1
        }
    }

    /// Eight bfloat16 values at `p + byteOffset`, widened to float32.
    @inlinable @inline(__always)
    public static func widenBF16(_ p: UnsafeRawPointer, _ byteOffset: Int) -> SIMD8<Float> {
        let bits = p.loadUnaligned(fromByteOffset: byteOffset, as: SIMD8<UInt16>.self)
        return unsafeBitCast(SIMD8<UInt32>(truncatingIfNeeded: bits) &<< 16, to: SIMD8<Float>.self)
    }

    /// y[0..<n] += alpha · x[0..<n].
    @inlinable
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        let xr = UnsafeRawPointer(x), yr = UnsafeMutableRawPointer(y)
        let a = SIMD8<Float>(repeating: alpha)
        var j = 0
        while j + 8 <= n {
            let o = j &* 4
            let v = yr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                + a * xr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
            yr.storeBytes(of: v, toByteOffset: o, as: SIMD8<Float>.self)
            j &+= 8
        }
        while j < n {
            y[j] += alpha * x[j]
            j += 1
        }
    }
}
