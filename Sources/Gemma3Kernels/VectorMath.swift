/// Vectorised transcendental functions on `SIMD8<Float>` (8 AVX lanes), for the element-wise passes
/// that would otherwise call libm once per element: softmax, cross-entropy over the vocabulary, GELU.
///
/// `exp` uses Cephes' range reduction and degree-6 polynomial (relative error ≈ 2 ulp over the
/// float range); 2ⁿ is built from exponent bits, so everything stays in vector registers.
public enum VectorMath {
    /// e^x lane-wise. Inputs below −87.3 return ≈ 1e-38 (not 0); inputs above 88 return e^88.
    @inlinable @inline(__always)
    public static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        var x = x.clamped(lowerBound: SIMD8(repeating: -87.33654), upperBound: SIMD8(repeating: 88.0))  // keeps n ≤ 127
        // n = round(x / ln 2) via the 1.5·2²³ trick: the sum's low mantissa bits hold n.
        let magic = SIMD8<Float>(repeating: 12_582_912)
        let shifted = x * 1.44269504088896341 + magic
        let n = shifted - magic
        x = x - n * 0.693359375
        x = x - n * -2.12194440e-4
        let x2 = x * x
        var p = SIMD8<Float>(repeating: 1.9875691500e-4)
        p = p * x + 1.3981999507e-3
        p = p * x + 8.3334519073e-3
        p = p * x + 4.1665795894e-2
        p = p * x + 1.6666665459e-1
        p = p * x + 5.0000001201e-1
        let y = p * x2 + x + 1
        // 2ⁿ: (n + 127) << 23, with n read from the shifted sum's bits.
        let nBits = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        let scale = unsafeBitCast((nBits &+ 127) &<< 23, to: SIMD8<Float>.self)
        return y * scale
    }

    /// tanh lane-wise as 1 − 2/(e^{2x} + 1); absolute error ≈ 1e-7 (what GELU needs: it uses 1 ± tanh).
    @inlinable @inline(__always)
    public static func tanh(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let c = x.clamped(lowerBound: SIMD8(repeating: -9), upperBound: SIMD8(repeating: 9))
        let e = exp(c + c)
        return 1 - 2 / (e + 1)
    }

    /// Scalar e^x through the vector path (for tails), same accuracy as `exp(_:)`.
    @inlinable @inline(__always)
    public static func exp(_ x: Float) -> Float { exp(SIMD8(repeating: x))[0] }

    /// max of x[0..<n] (n ≥ 1).
    @inlinable
    public static func maximum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var m = x[0]
        var i = 0
        if n >= 16 {
            let r = UnsafeRawPointer(x)
            var m0 = r.loadUnaligned(as: SIMD8<Float>.self), m1 = m0
            while i + 16 <= n {
                m0 = pointwiseMax(m0, r.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self))
                m1 = pointwiseMax(m1, r.loadUnaligned(fromByteOffset: (i &+ 8) &* 4, as: SIMD8<Float>.self))
                i &+= 16
            }
            m = pointwiseMax(m0, m1).max()
        }
        while i < n { m = Swift.max(m, x[i]); i &+= 1 }
        return m
    }

    /// Σ e^(x[i] − shift) over n values; the running sum is kept in double every 4096 elements so a
    /// 262k-wide vocabulary row loses no precision.
    @inlinable
    public static func sumExp(_ x: UnsafePointer<Float>, _ n: Int, shift: Float) -> Double {
        let r = UnsafeRawPointer(x)
        let s = SIMD8<Float>(repeating: shift)
        var total: Double = 0
        var i = 0
        while i < n {
            let end = Swift.min(n, i + 4096)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
            while i + 16 <= end {
                a0 += exp(r.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self) - s)
                a1 += exp(r.loadUnaligned(fromByteOffset: (i &+ 8) &* 4, as: SIMD8<Float>.self) - s)
                i &+= 16
            }
            var tail: Float = 0
            while i < end { tail += exp(x[i] - shift); i &+= 1 }
            total += Double((a0 + a1).sum()) + Double(tail)
        }
        return total
    }

    /// x[i] ← e^(x[i] − shift) · scale in place, for i < n.
    @inlinable
    public static func expShiftScale(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float, scale: Float) {
        let r = UnsafeMutableRawPointer(x)
        let s = SIMD8<Float>(repeating: shift), k = SIMD8<Float>(repeating: scale)
        var i = 0
        while i + 8 <= n {
            let v = r.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
            r.storeBytes(of: exp(v - s) * k, toByteOffset: i &* 4, as: SIMD8<Float>.self)
            i &+= 8
        }
        while i < n { x[i] = exp(x[i] - shift) * scale; i &+= 1 }
    }

    /// x[i] ← e^(x[i] − shift) in place; returns Σ of the new values (partial sums in double).
    @inlinable
    public static func expShiftStoreSum(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Double {
        let r = UnsafeMutableRawPointer(x)
        let s = SIMD8<Float>(repeating: shift)
        var total: Double = 0
        var i = 0
        while i < n {
            let end = Swift.min(n, i + 4096)
            var a0 = SIMD8<Float>()
            while i + 8 <= end {
                let e = exp(r.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self) - s)
                r.storeBytes(of: e, toByteOffset: i &* 4, as: SIMD8<Float>.self)
                a0 += e
                i &+= 8
            }
            var tail: Float = 0
            while i < end { let e = exp(x[i] - shift); x[i] = e; tail += e; i &+= 1 }
            total += Double(a0.sum()) + Double(tail)
        }
        return total
    }

    /// x[i] ← x[i] · k for i < n.
    @inlinable
    public static func scale(_ x: UnsafeMutablePointer<Float>, _ n: Int, by k: Float) {
        let r = UnsafeMutableRawPointer(x)
        let kv = SIMD8<Float>(repeating: k)
        var i = 0
        while i + 8 <= n {
            let v = r.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
            r.storeBytes(of: v * kv, toByteOffset: i &* 4, as: SIMD8<Float>.self)
            i &+= 8
        }
        while i < n { x[i] *= k; i &+= 1 }
    }
}
