import Foundation
import Testing
@testable import Gemma3Training

@Suite struct OptimizerTests {
    /// Textbook AdamW (Loshchilov & Hutter with PyTorch's ε placement), in double precision.
    struct ReferenceAdamW {
        var m: [Double], v: [Double]
        var t = 0
        mutating func step(_ p: inout [Double], _ g: [Double], decay: [Bool], lr: Double, h: AdamWHyperparameters) {
            t += 1
            for i in p.indices {
                if decay[i] { p[i] -= lr * h.weightDecay * p[i] }
                m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[i]
                v[i] = h.beta2 * v[i] + (1 - h.beta2) * g[i] * g[i]
                let mHat = m[i] / (1 - pow(h.beta1, Double(t)))
                let vHat = v[i] / (1 - pow(h.beta2, Double(t)))
                p[i] -= lr * mHat / (vHat.squareRoot() + h.eps)
            }
        }
    }

    @Test func adamWMatchesTheTextbookFormulaAcrossSegmentsAndThreads() {
        // Large enough to be split over the workers, with segment edges inside chunks.
        let shapes: [[Int]] = [[70001], [300, 200], [13], [17, 1000], [50000], [2, 3, 4]]
        let segments = ParameterSegment.from(tensors: shapes.map { (count: $0.reduce(1, *), decay: $0.count >= 2) })
        let n = shapes.map { $0.reduce(1, *) }.reduce(0, +)
        var decay = [Bool](repeating: false, count: n)
        var offset = 0
        for s in shapes { let c = s.reduce(1, *); for i in offset..<(offset + c) { decay[i] = s.count >= 2 }; offset += c }
        var rng = SystemRandomNumberGenerator()
        var p = (0..<n).map { _ in Float.random(in: -0.1...0.1, using: &rng) }
        var m = [Float](repeating: 0, count: n), v = [Float](repeating: 0, count: n)
        var ref = ReferenceAdamW(m: .init(repeating: 0, count: n), v: .init(repeating: 0, count: n))
        var pRef = p.map(Double.init)
        let h = AdamWHyperparameters(beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        for step in 1...5 {
            let g = (0..<n).map { _ in Float.random(in: -1...1, using: &rng) * 0.01 }
            let scale: Float = step == 3 ? 0.25 : 1   // a clipped step
            let lr = 1e-3 * Double(step)
            p.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { gp in
                m.withUnsafeMutableBufferPointer { mp in v.withUnsafeMutableBufferPointer { vp in
                    AdamW.update(parameters: pp, gradients: gp, m: mp, v: vp, segments: segments, step: step,
                                 learningRate: lr, gradScale: scale, hyper: h)
                } }
            } }
            ref.step(&pRef, g.map { Double($0 * scale) }, decay: decay, lr: lr, h: h)
        }
        var worst = 0.0
        for i in 0..<n { worst = max(worst, abs(Double(p[i]) - pRef[i])) }
        #expect(worst < 2e-6, "max |Δp| = \(worst)")
        var worstM = 0.0, worstV = 0.0
        for i in 0..<n {
            worstM = max(worstM, abs(Double(m[i]) - ref.m[i]))
            worstV = max(worstV, abs(Double(v[i]) - ref.v[i]) / max(ref.v[i], 1e-12))
        }
        #expect(worstM < 1e-8 && worstV < 1e-5, "m \(worstM), v rel \(worstV)")
    }

    @Test func weightDecaySkipsVectors() {
        // Zero gradient: the Adam term is 0, so only the decoupled decay moves parameters.
        let shapes: [[Int]] = [[4, 4], [4], [3, 2]]
        let segments = ParameterSegment.from(tensors: shapes.map { (count: $0.reduce(1, *), decay: $0.count >= 2) })
        #expect(segments == [ParameterSegment(range: 0..<16, decay: true), ParameterSegment(range: 16..<20, decay: false),
                             ParameterSegment(range: 20..<26, decay: true)])
        var p = [Float](repeating: 1, count: 26)
        let g = [Float](repeating: 0, count: 26)
        var m = g, v = g
        p.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { gp in
            m.withUnsafeMutableBufferPointer { mp in v.withUnsafeMutableBufferPointer { vp in
                AdamW.update(parameters: pp, gradients: gp, m: mp, v: vp, segments: segments, step: 1,
                             learningRate: 0.01, hyper: AdamWHyperparameters(weightDecay: 0.5))
            } }
        } }
        #expect(p[0..<16].allSatisfy { $0 == Float(1 - 0.01 * 0.5) })
        #expect(p[16..<20].allSatisfy { $0 == 1 })
        #expect(p[20..<26].allSatisfy { $0 == Float(1 - 0.01 * 0.5) })
    }

    @Test func globalNormAndClipFactorFollowTorch() {
        let n = 200_003
        let g = (0..<n).map { Float(sin(Double($0))) * 0.01 }
        var naive = 0.0
        for x in g { naive += Double(x) * Double(x) }
        let norm = g.withUnsafeBufferPointer { GradientClipping.globalNorm($0) }
        #expect(abs(norm - naive.squareRoot()) <= 1e-6 * naive.squareRoot())
        #expect(GradientClipping.scale(totalNorm: 2, maxNorm: 0.5) == Float(0.5) / (Float(2) + Float(1e-6)))
        #expect(GradientClipping.scale(totalNorm: 0.1, maxNorm: 0.5) == 1)
        #expect(GradientClipping.scale(totalNorm: 100, maxNorm: 0) == 1)
        var bad = g
        bad[123_456] = .nan
        #expect(!bad.withUnsafeBufferPointer { GradientClipping.globalNorm($0) }.isFinite)
        bad[123_456] = .infinity
        #expect(!bad.withUnsafeBufferPointer { GradientClipping.globalNorm($0) }.isFinite)
    }
}
