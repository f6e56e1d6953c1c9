import Testing
import Gemma3Kernels
@testable import Gemma3Training

@Suite struct AdamWVectorTests {
    /// The 8-wide loop claims the same float32 operations as the scalar tail. Every element of a
    /// large update (vector loop, segments and chunk boundaries not multiples of 8) must equal,
    /// bit for bit, the same element updated alone (a one-element buffer only takes the tail).
    @Test func vectorLoopIsBitIdenticalToScalarTail() {
        let shapes: [[Int]] = [[37, 41], [5], [70001], [3, 3], [13], [33000, 2], [7]]
        let segments = ParameterSegment.from(tensors: shapes.map { (count: $0.reduce(1, *), decay: $0.count >= 2) })
        let n = shapes.map { $0.reduce(1, *) }.reduce(0, +)
        var rng = SplitMix64(seed: 7)
        func draw(_ scale: Double) -> [Float] {
            var out = [Float](repeating: 0, count: n)
            out.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: scale) }
            return out
        }
        let p0 = draw(0.1), g = draw(0.01), m0 = draw(0.001)
        let v0 = draw(1e-4).map { $0 * $0 }
        var p = p0, m = m0, v = v0
        let hyper = AdamWHyperparameters(beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        p.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { gp in
            m.withUnsafeMutableBufferPointer { mp in v.withUnsafeMutableBufferPointer { vp in
                AdamW.update(parameters: pp, gradients: gp, m: mp, v: vp, segments: segments, step: 3,
                             learningRate: 3e-4, gradScale: 0.7, hyper: hyper)
            } }
        } }
        var mismatches = 0, firstMismatch = -1
        for seg in segments {
            for i in seg.range {
                var pi = [p0[i]], mi = [m0[i]], vi = [v0[i]]
                let gi = [g[i]]
                pi.withUnsafeMutableBufferPointer { pp in gi.withUnsafeBufferPointer { gp in
                    mi.withUnsafeMutableBufferPointer { mp in vi.withUnsafeMutableBufferPointer { vp in
                        AdamW.update(parameters: pp, gradients: gp, m: mp, v: vp,
                                     segments: [ParameterSegment(range: 0..<1, decay: seg.decay)], step: 3,
                                     learningRate: 3e-4, gradScale: 0.7, hyper: hyper)
                    } }
                } }
                if pi[0].bitPattern != p[i].bitPattern || mi[0].bitPattern != m[i].bitPattern || vi[0].bitPattern != v[i].bitPattern {
                    mismatches += 1
                    if firstMismatch < 0 { firstMismatch = i }
                }
            }
        }
        #expect(mismatches == 0, "\(mismatches) elements differ from the scalar update, first at \(firstMismatch)")
        #expect(p != p0)  // the update did something
    }
}
