/// Matrix-vector products for the decode path: y[r] = Σ_j W[r, j] · x[j] over a range of rows.
///
/// Decoding one token reads every weight exactly once, so these kernels are bound by memory
/// bandwidth, not arithmetic; OpenBLAS's `sgemm` with m = 1 reaches only a fifth of that bound.
/// Each kernel finishes one row before starting the next, reading it front to back with four
/// independent accumulators: one purely sequential stream per core is what the hardware
/// prefetcher serves best (measured here: ≈ 21 GB/s on one core, against ≈ 11 GB/s when four
/// rows are interleaved). Single-threaded: callers split the rows over the cores (see
/// `LinearWeight` and `Linear.gemv`).
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
        let blockCols = cols & ~31, vecCols = cols & ~7
        for r in rows {
            let row = w + r * ld
            let p = UnsafeRawPointer(row)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var j = 0
            while j < blockCols {
                let o = j &* 4
                a0 += p.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * xr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                a1 += p.loadUnaligned(fromByteOffset: o &+ 32, as: SIMD8<Float>.self) * xr.loadUnaligned(fromByteOffset: o &+ 32, as: SIMD8<Float>.self)
                a2 += p.loadUnaligned(fromByteOffset: o &+ 64, as: SIMD8<Float>.self) * xr.loadUnaligned(fromByteOffset: o &+ 64, as: SIMD8<Float>.self)
                a3 += p.loadUnaligned(fromByteOffset: o &+ 96, as: SIMD8<Float>.self) * xr.loadUnaligned(fromByteOffset: o &+ 96, as: SIMD8<Float>.self)
                j &+= 32
            }
            while j < vecCols {
                let o = j &* 4
                a0 += p.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * xr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                j &+= 8
            }
            var s = ((a0 + a1) + (a2 + a3)).sum()
            while j < cols {
                s += row[j] * x[j]
                j &+= 1
            }
            y[r] = s
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
        let blockCols = cols & ~31, vecCols = cols & ~7
        for r in rows {
            let row = w + r * ld
            let p = UnsafeRawPointer(row)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var j = 0
            while j < blockCols {
                let o = j &* 4, h = j &* 2
                a0 += widenBF16(p, h) * xr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                a1 += widenBF16(p, h &+ 16) * xr.loadUnaligned(fromByteOffset: o &+ 32, as: SIMD8<Float>.self)
                a2 += widenBF16(p, h &+ 32) * xr.loadUnaligned(fromByteOffset: o &+ 64, as: SIMD8<Float>.self)
                a3 += widenBF16(p, h &+ 48) * xr.loadUnaligned(fromByteOffset: o &+ 96, as: SIMD8<Float>.self)
                j &+= 32
            }
            while j < vecCols {
                a0 += widenBF16(p, j &* 2) * xr.loadUnaligned(fromByteOffset: j &* 4, as: SIMD8<Float>.self)
                j &+= 8
            }
            var s = ((a0 + a1) + (a2 + a3)).sum()
            while j < cols {
                s += NumberFormats.bf16ToFloat(row[j]) * x[j]
                j &+= 1
            }
            y[r] = s
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
