import Foundation
import Testing
import Gemma3Kernels

@Suite struct VectorMathTests {
    /// The vector exp stays within a few ulp of libm over the range softmax and cross-entropy use.
    @Test func expMatchesLibm() {
        var worst: Float = 0
        var x: Float = -87
        while x < 88 {
            let v = VectorMath.exp(SIMD8<Float>((0..<8).map { x + Float($0) * 0.0137 }))
            for k in 0..<8 {
                let ref = Foundation.exp(Double(x + Float(k) * 0.0137))
                worst = max(worst, Float(abs(Double(v[k]) - ref) / ref))
            }
            x += 0.173
        }
        #expect(worst < 4e-7, "max relative error \(worst)")
        #expect(VectorMath.exp(0) == 1)
        #expect(VectorMath.exp(-200) < 1e-37)
        #expect(VectorMath.exp(200).isFinite)
    }

    /// tanh's absolute error is below 2e-7 (GELU uses 1 ± tanh), saturating cleanly.
    @Test func tanhAbsoluteError() {
        var worst: Double = 0
        var x: Float = -12
        while x < 12 {
            let t = VectorMath.tanh(SIMD8<Float>(repeating: x))[0]
            worst = max(worst, abs(Double(t) - Foundation.tanh(Double(x))))
            x += 0.0031
        }
        #expect(worst < 2e-7, "max abs error \(worst)")
    }

    @Test func softmaxAndLogSumExp() {
        var row: [Float] = (0..<37).map { Float($0 % 7) * 1.3 - 4 }
        let lse = row.withUnsafeBufferPointer { Kernels.logSumExp($0.baseAddress!, $0.count) }
        let ref = Foundation.log(row.reduce(0.0) { $0 + Foundation.exp(Double($1)) })
        #expect(abs(Double(lse) - ref) < 1e-5)
        let expected = row.map { Foundation.exp(Double($0) - ref) }
        row.withUnsafeMutableBufferPointer { Kernels.softmax($0.baseAddress!, $0.count) }
        for (a, b) in zip(row, expected) { #expect(abs(Double(a) - b) < 1e-6) }
    }
}
