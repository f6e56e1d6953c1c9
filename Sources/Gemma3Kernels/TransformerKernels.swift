#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Single-threaded float32 kernels for the Gemma 3 layers, each matching Hugging Face's float32
/// arithmetic. They work on row ranges, so callers split rows over the cores with `Parallel.chunks`
/// and the same code serves training (many rows) and decoding (one row).
///
/// Conventions: row-major, `dim` contiguous values per row, explicit row strides where rows live
/// inside wider buffers. Loops are written `acc += a * b` over `SIMD8<Float>` (see docs/performance.md:
/// no `fma`, several accumulators).
public enum Kernels {
    // MARK: Reductions

    /// Σ a[i]·b[i] for i < n.
    @inlinable
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        let ar = UnsafeRawPointer(a), br = UnsafeRawPointer(b)
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        var i = 0
        while i + 16 <= n {
            let o = i &* 4
            s0 += ar.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * br.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
            s1 += ar.loadUnaligned(fromByteOffset: o &+ 32, as: SIMD8<Float>.self) * br.loadUnaligned(fromByteOffset: o &+ 32, as: SIMD8<Float>.self)
            i &+= 16
        }
        if i + 8 <= n {
            let o = i &* 4
            s0 += ar.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * br.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
            i &+= 8
        }
        var s = (s0 + s1).sum()
        while i < n { s += a[i] * b[i]; i &+= 1 }
        return s
    }

    /// 1 / sqrt(mean(x²) + eps) over n values: the RMSNorm scale, in float32 like HF's `torch.rsqrt`.
    @inlinable
    public static func rmsScale(_ x: UnsafePointer<Float>, _ n: Int, eps: Float) -> Float {
        let ms = dot(x, x, n) / Float(n)
        return 1 / (ms + eps).squareRoot()
    }

    // MARK: RMSNorm (Gemma: scale by 1 + w)

    /// y[r] = x[r] · rstd[r] · (1 + w) for `rows`; stores rstd[r] when `rstd` is given.
    /// `x` and `y` may alias.
    @inlinable
    public static func rmsNorm(
        x: UnsafePointer<Float>, ldx: Int, weight w: UnsafePointer<Float>,
        y: UnsafeMutablePointer<Float>, ldy: Int, rstd: UnsafeMutablePointer<Float>?,
        dim: Int, eps: Float, rows: Range<Int>
    ) {
        for r in rows {
            let xr = x + r * ldx, yr = y + r * ldy
            let s = rmsScale(xr, dim, eps: eps)
            rstd?[r] = s
            // HF: (x · rsqrt) first, then · (1 + w), all in float32.
            for i in 0..<dim { yr[i] = (xr[i] * s) * (1 + w[i]) }
        }
    }

    /// Backward of `rmsNorm` for `rows`:
    /// dx = rstd · ((1+w)·dy − x̂ · mean(x̂ · (1+w)·dy)), with x̂ = x · rstd;
    /// dw += Σ_rows dy · x̂ (into `dw`, a private per-worker accumulator).
    /// `dx` is overwritten, or accumulated into when `accumulate` is true. `dx` may alias `dy` when not accumulating.
    @inlinable
    public static func rmsNormBackward(
        x: UnsafePointer<Float>, ldx: Int, weight w: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
        dy: UnsafePointer<Float>, lddy: Int, dx: UnsafeMutablePointer<Float>, lddx: Int, accumulate: Bool,
        dw: UnsafeMutablePointer<Float>, dim: Int, rows: Range<Int>
    ) {
        let invDim = 1 / Float(dim)
        for r in rows {
            let xr = x + r * ldx, dyr = dy + r * lddy, dxr = dx + r * lddx
            let s = rstd[r]
            // Σ (1+w)·dy·x̂ = s · Σ (1+w)·dy·x
            var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0
            var i = 0
            while i + 4 <= dim {
                a0 += (1 + w[i]) * dyr[i] * xr[i]
                a1 += (1 + w[i + 1]) * dyr[i + 1] * xr[i + 1]
                a2 += (1 + w[i + 2]) * dyr[i + 2] * xr[i + 2]
                a3 += (1 + w[i + 3]) * dyr[i + 3] * xr[i + 3]
                i += 4
            }
            while i < dim { a0 += (1 + w[i]) * dyr[i] * xr[i]; i += 1 }
            let c = ((a0 + a1) + (a2 + a3)) * s * invDim
            for i in 0..<dim {
                let xhat = xr[i] * s
                let g = dyr[i]
                dw[i] += g * xhat
                let v = s * ((1 + w[i]) * g - xhat * c)
                if accumulate { dxr[i] += v } else { dxr[i] = v }
            }
        }
    }

    // MARK: RoPE (rotate-half / NeoX layout)

    /// cos/sin of pos · inv_freq[k] for k < headDim/2, computed in float32 exactly as HF:
    /// inv_freq = 1 / base^(float(2k) / headDim) (float32 pow), angle = float(pos) · inv_freq (float32).
    @inlinable
    public static func ropeAngles(
        theta: Double, headDim: Int, position: Int,
        cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>
    ) {
        let half = headDim / 2
        let base = Float(theta)
        for k in 0..<half {
            let exponent = Float(2 * k) / Float(headDim)
            let invFreq: Float = 1 / powf(base, exponent)
            let angle = Float(position) * invFreq
            cos[k] = cosf(angle)
            sin[k] = sinf(angle)
        }
    }

    /// Rotates one head in place: for d < hd/2, (x1, x2) = (x[d], x[d+hd/2]) →
    /// (x1·c − x2·s, x2·c + x1·s). With `inverse`, rotates by −angle (the backward pass).
    @inlinable
    public static func ropeRotate(
        _ x: UnsafeMutablePointer<Float>, headDim: Int,
        cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, inverse: Bool = false
    ) {
        let half = headDim / 2
        let x2p = x + half
        if inverse {
            for d in 0..<half {
                let x1 = x[d], x2 = x2p[d], c = cos[d], s = sin[d]
                x[d] = x1 * c + x2 * s
                x2p[d] = x2 * c - x1 * s
            }
        } else {
            for d in 0..<half {
                let x1 = x[d], x2 = x2p[d], c = cos[d], s = sin[d]
                x[d] = x1 * c - x2 * s
                x2p[d] = x2 * c + x1 * s
            }
        }
    }

    // MARK: GELU (tanh approximation) and GeGLU

    /// gelu_tanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), PyTorch's `gelu(approximate="tanh")`.
    @inlinable
    public static func geluTanh(_ x: Float) -> Float {
        let kBeta: Float = 0.7978845608028654  // √(2/π)
        let inner = kBeta * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + tanhf(inner))
    }

    /// h[r, i] = gelu_tanh(gate[r, i]) · up[r, i] for `rows`; gate and up are `dim` wide, row strides given.
    @inlinable
    public static func geglu(
        gate: UnsafePointer<Float>, up: UnsafePointer<Float>, ldIn: Int,
        out: UnsafeMutablePointer<Float>, ldOut: Int, dim: Int, rows: Range<Int>
    ) {
        let kBeta: Float = 0.7978845608028654  // √(2/π)
        let kKappa: Float = 0.044715
        for r in rows {
            let g = gate + r * ldIn, u = up + r * ldIn, o = out + r * ldOut
            let gr = UnsafeRawPointer(g), ur = UnsafeRawPointer(u), orw = UnsafeMutableRawPointer(o)
            var i = 0
            while i + 8 <= dim {
                let x = gr.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
                let t = VectorMath.tanh(kBeta * (x + kKappa * x * x * x))
                let h = 0.5 * x * (1 + t) * ur.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
                orw.storeBytes(of: h, toByteOffset: i &* 4, as: SIMD8<Float>.self)
                i &+= 8
            }
            while i < dim { o[i] = geluTanh(g[i]) * u[i]; i &+= 1 }
        }
    }

    /// Backward of `geglu`: dgate = dh · up · gelu'(gate), dup = dh · gelu(gate).
    @inlinable
    public static func gegluBackward(
        gate: UnsafePointer<Float>, up: UnsafePointer<Float>, ldIn: Int,
        dOut: UnsafePointer<Float>, ldDOut: Int,
        dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>, ldDIn: Int,
        dim: Int, rows: Range<Int>
    ) {
        let kBeta: Float = 0.7978845608028654
        let kKappa: Float = 0.044715
        for r in rows {
            let g = gate + r * ldIn, u = up + r * ldIn, dh = dOut + r * ldDOut
            let dg = dGate + r * ldDIn, du = dUp + r * ldDIn
            let gr = UnsafeRawPointer(g), ur = UnsafeRawPointer(u), dhr = UnsafeRawPointer(dh)
            let dgr = UnsafeMutableRawPointer(dg), dur = UnsafeMutableRawPointer(du)
            var i = 0
            while i + 8 <= dim {
                let o = i &* 4
                let x = gr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                let x2 = x * x
                let t = VectorMath.tanh(kBeta * (x + kKappa * x2 * x))
                let half = 0.5 * x
                let onePlusT = 1 + t
                let gelu = half * onePlusT
                let slope: SIMD8<Float> = kBeta * (1 + (3 * kKappa) * x2)
                let sech2: SIMD8<Float> = 1 - t * t
                let dGelu: SIMD8<Float> = 0.5 * onePlusT + half * sech2 * slope
                let d = dhr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                dgr.storeBytes(of: d * ur.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * dGelu, toByteOffset: o, as: SIMD8<Float>.self)
                dur.storeBytes(of: d * gelu, toByteOffset: o, as: SIMD8<Float>.self)
                i &+= 8
            }
            while i < dim {
                let x = g[i]
                let x2 = x * x
                let t = tanhf(kBeta * (x + kKappa * x2 * x))
                let gelu = 0.5 * x * (1 + t)
                let dGelu = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (kBeta * (1 + 3 * kKappa * x2))
                let d = dh[i]
                dg[i] = d * u[i] * dGelu
                du[i] = d * gelu
                i &+= 1
            }
        }
    }

    // MARK: Softmax and cross-entropy

    /// In-place softmax of x[0..<n] (max-subtracted, float32).
    @inlinable
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        guard n > 0 else { return }
        let m = VectorMath.maximum(x, n)
        let s = VectorMath.sumExp(x, n, shift: m)
        VectorMath.expShiftScale(x, n, shift: m, scale: Float(1 / s))
    }

    /// log Σ exp(x[i]) over n values (max-subtracted; partial sums in double for a 262k-wide vocabulary).
    @inlinable
    public static func logSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        guard n > 0 else { return -.infinity }
        let m = VectorMath.maximum(x, n)
        return m + Float(_logd(VectorMath.sumExp(x, n, shift: m)))
    }

    /// Turns a row of logits into the cross-entropy gradient in place:
    /// x[i] ← (exp(x[i] − lse) − [i == target]) · scale.
    @inlinable
    public static func crossEntropyBackward(
        _ x: UnsafeMutablePointer<Float>, _ n: Int, logSumExp lse: Float, target: Int, scale: Float
    ) {
        VectorMath.expShiftScale(x, n, shift: lse, scale: scale)
        if target >= 0 && target < n { x[target] -= scale }
    }
}

@usableFromInline func _logd(_ x: Double) -> Double { log(x) }
