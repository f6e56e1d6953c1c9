import Foundation
import Gemma3Kernels
import Gemma3Model

/// A contiguous run of the flat parameter buffer that shares one weight-decay setting
/// (one tensor, or several adjacent tensors of the same kind).
public struct ParameterSegment: Sendable, Equatable {
    public var range: Range<Int>
    /// Whether decoupled weight decay applies (`TensorRole.appliesWeightDecay`: matrices and the
    /// embedding; never the RMSNorm weights).
    public var decay: Bool
    public init(range: Range<Int>, decay: Bool) { self.range = range; self.decay = decay }

    /// Segments for every tensor of `layout`, decaying where the tensor table says so.
    public static func from(layout: ParameterLayout) -> [ParameterSegment] {
        from(tensors: layout.tensors.map { (count: $0.count, decay: $0.appliesWeightDecay) })
    }

    /// Segments for tensors of `count` floats laid out back to back in this order, merging neighbours
    /// with the same decay flag.
    public static func from(tensors: [(count: Int, decay: Bool)]) -> [ParameterSegment] {
        var out: [ParameterSegment] = []
        var offset = 0
        for (n, decay) in tensors {
            if let last = out.last, last.decay == decay, last.range.upperBound == offset {
                out[out.count - 1].range = last.range.lowerBound..<(offset + n)
            } else if n > 0 {
                out.append(ParameterSegment(range: offset..<(offset + n), decay: decay))
            }
            offset += n
        }
        return out
    }
}

/// AdamW hyper-parameters (besides the learning rate, which the schedule supplies per step).
public struct AdamWHyperparameters: Sendable, Equatable {
    public var beta1: Double
    public var beta2: Double
    public var eps: Double
    public var weightDecay: Double
    public init(beta1: Double = 0.9, beta2: Double = 0.95, eps: Double = 1e-8, weightDecay: Double = 0.1) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }
    public init(recipe: TrainingRecipe) {
        self.init(beta1: recipe.beta1, beta2: recipe.beta2, eps: recipe.eps, weightDecay: recipe.weightDecay)
    }
}

/// PyTorch's `torch.optim.AdamW` (single-tensor, non-fused path) over flat float32 buffers.
///
/// Per element, at optimizer step `t` (from 1), with g = gradient · `gradScale` (the clip factor):
///
///     p ← p · (1 − lr·wd)                       (only where the segment decays)
///     m ← m + (1 − β1)·(g − m)                  (torch's lerp, = β1·m + (1−β1)·g)
///     v ← β2·v + (1 − β2)·g·g
///     p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
///
/// Scalars are formed in double as Python does and rounded to float32 once; element arithmetic is
/// float32 in torch's operation order, so results match torch to the last bit or two.
public enum AdamW {
    /// Applies one update in place. `step` is the 1-based count of updates including this one.
    /// Work is split over the cores; nothing is allocated.
    public static func update(
        parameters: UnsafeMutableBufferPointer<Float>,
        gradients: UnsafeBufferPointer<Float>,
        m: UnsafeMutableBufferPointer<Float>,
        v: UnsafeMutableBufferPointer<Float>,
        segments: [ParameterSegment],
        step: Int,
        learningRate lr: Double,
        gradScale: Float = 1,
        hyper: AdamWHyperparameters
    ) {
        precondition(gradients.count == parameters.count && m.count == parameters.count && v.count == parameters.count,
                     "AdamW: parameter, gradient and moment buffers must have the same size")
        precondition(step >= 1, "AdamW: step counts from 1")
        let decayFactor = Float(1 - lr * hyper.weightDecay)
        let oneMinusBeta1 = Float(1 - hyper.beta1)
        let beta2 = Float(hyper.beta2)
        let oneMinusBeta2 = Float(1 - hyper.beta2)
        let biasCorrection1 = 1 - pow(hyper.beta1, Double(step))
        let biasCorrection2 = 1 - pow(hyper.beta2, Double(step))
        let negStepSize = Float(-(lr / biasCorrection1))
        let bc2Sqrt = Float(biasCorrection2.squareRoot())
        let eps = Float(hyper.eps)

        let p = UncheckedSendable(parameters.baseAddress!)
        let g = UncheckedSendable(gradients.baseAddress!)
        let mm = UncheckedSendable(m.baseAddress!)
        let vv = UncheckedSendable(v.baseAddress!)
        Parallel.chunks(parameters.count, minimumPerChunk: 1 << 15) { chunk in
            let p = p.value, g = g.value, m = mm.value, v = vv.value
            for seg in segments {
                let lo = max(seg.range.lowerBound, chunk.lowerBound)
                let hi = min(seg.range.upperBound, chunk.upperBound)
                if lo >= hi { continue }
                let decay = seg.decay ? decayFactor : 1
                // Eight at a time with explicit vectors: the compiler keeps the scalar loop scalar
                // (the four buffers might alias), and scalar sqrt/div made this pass compute-bound.
                // Same operations in the same order, so the results are bit-identical to the tail.
                let (pr, gr, mr, vr) = (UnsafeMutableRawPointer(p), UnsafeRawPointer(g), UnsafeMutableRawPointer(m), UnsafeMutableRawPointer(v))
                var i = lo
                while i + 8 <= hi {
                    let o = i &* 4
                    let gi = gr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) * gradScale
                    var pi = pr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                    if seg.decay { pi = pi * decay }
                    let m0 = mr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                    let v0 = vr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
                    let mi = m0 + oneMinusBeta1 * (gi - m0)
                    let vi = v0 * beta2 + oneMinusBeta2 * gi * gi
                    mr.storeBytes(of: mi, toByteOffset: o, as: SIMD8<Float>.self)
                    vr.storeBytes(of: vi, toByteOffset: o, as: SIMD8<Float>.self)
                    // Lane by lane: SIMD8.squareRoot() compiles to eight sqrtf calls here, while
                    // Float.squareRoot() is one instruction (which the vectoriser then widens).
                    var root = SIMD8<Float>()
                    for k in 0..<8 { root[k] = vi[k].squareRoot() }
                    let denom = root / bc2Sqrt + eps
                    pr.storeBytes(of: pi + negStepSize * mi / denom, toByteOffset: o, as: SIMD8<Float>.self)
                    i &+= 8
                }
                while i < hi {
                    let gi = g[i] * gradScale
                    var pi = p[i]
                    if seg.decay { pi = pi * decay }
                    let mi = m[i] + oneMinusBeta1 * (gi - m[i])
                    let vi = v[i] * beta2 + oneMinusBeta2 * gi * gi
                    m[i] = mi
                    v[i] = vi
                    let denom = vi.squareRoot() / bc2Sqrt + eps
                    p[i] = pi + negStepSize * mi / denom
                    i &+= 1
                }
            }
        }
    }
}

/// Global gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`.
public enum GradientClipping {
    /// ‖g‖₂ over the whole buffer: float32 partial sums over short blocks, accumulated in double.
    /// A NaN or ±inf anywhere (or a gradient so large its square overflows) gives a non-finite result.
    public static func globalNorm(_ gradients: UnsafeBufferPointer<Float>) -> Double {
        let n = gradients.count
        if n == 0 { return 0 }
        let workers = max(1, min(Parallel.threadCount, 64))
        let base = UncheckedSendable(gradients.baseAddress!)
        return withUnsafeTemporaryAllocation(of: Double.self, capacity: workers) { partial in
            let out = UncheckedSendable(partial.baseAddress!)
            // One chunk per worker so the reduction order (hence the result) depends only on the
            // thread count, never on scheduling.
            Parallel.forEach(workers) { w in
                let lo = n * w / workers, hi = n * (w + 1) / workers
                let g = base.value
                var total = 0.0
                var i = lo
                // Float accumulators over short blocks (vectorisable), flushed to double.
                while i < hi {
                    let end = min(hi, i + 4096)
                    var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0
                    var j = i
                    while j + 4 <= end {
                        a0 += g[j] * g[j]; a1 += g[j + 1] * g[j + 1]
                        a2 += g[j + 2] * g[j + 2]; a3 += g[j + 3] * g[j + 3]
                        j += 4
                    }
                    while j < end { a0 += g[j] * g[j]; j += 1 }
                    total += Double(a0) + Double(a1) + Double(a2) + Double(a3)
                    i = end
                }
                out.value[w] = total
            }
            var sum = 0.0
            for w in 0..<workers { sum += partial[w] }
            return sum.squareRoot()
        }
    }

    /// The factor torch multiplies every gradient by: `min(1, maxNorm / (total + 1e-6))` in
    /// float32; 1 when clipping is disabled (`maxNorm` ≤ 0).
    public static func scale(totalNorm: Double, maxNorm: Double) -> Float {
        guard maxNorm > 0 else { return 1 }
        let total = Float(totalNorm)
        let coef = Float(maxNorm) / (total + Float(1e-6))
        return min(coef, 1)
    }
}
