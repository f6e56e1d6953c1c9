import Foundation
import Testing
@testable import Gemma3Kernels

/// Both product libraries against a float64 reference, over every transposition, alpha/beta and
/// padded leading dimensions, at sizes that are not multiples of any kernel's tile.
@Suite struct MatrixProductBackendTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let backend: MatrixProductBackend
        let transA: Bool, transB: Bool
        var testDescription: String { "\(backend.rawValue) transA \(transA) transB \(transB)" }
    }
    static let cases = MatrixProductBackend.allCases.flatMap { b in
        [(false, false), (false, true), (true, false), (true, true)].map { Case(backend: b, transA: $0.0, transB: $0.1) }
    }

    @Test(arguments: cases)
    func productMatchesFloat64Reference(_ c: Case) {
        let m = 37, n = 53, k = 131, pad = 3
        let alpha: Float = 0.75, beta: Float = -0.5
        // Stored shapes: A [m×k] or [k×m]; B [k×n] or [n×k]; each row padded by `pad` floats.
        let (aRows, aCols) = c.transA ? (k, m) : (m, k)
        let (bRows, bCols) = c.transB ? (n, k) : (k, n)
        let lda = aCols + pad, ldb = bCols + pad, ldc = n + pad
        var rng = SplitMix64(seed: 7)
        let a = (0..<aRows * lda).map { _ in Float(rng.nextUniform() * 2 - 1) }
        let b = (0..<bRows * ldb).map { _ in Float(rng.nextUniform() * 2 - 1) }
        let c0 = (0..<m * ldc).map { _ in Float(rng.nextUniform() * 2 - 1) }
        var out = c0
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                out.withUnsafeMutableBufferPointer { cp in
                    BLAS.withBackend(c.backend) {
                        BLAS.sgemm(transA: c.transA, transB: c.transB, m: m, n: n, k: k, alpha: alpha,
                                   a: ap.baseAddress!, lda: lda, b: bp.baseAddress!, ldb: ldb,
                                   beta: beta, c: cp.baseAddress!, ldc: ldc)
                    }
                }
            }
        }
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let x = Double(c.transA ? a[p * lda + i] : a[i * lda + p])
                    let y = Double(c.transB ? b[j * ldb + p] : b[p * ldb + j])
                    s += x * y
                }
                let expected = Double(alpha) * s + Double(beta) * Double(c0[i * ldc + j])
                worst = max(worst, abs(Double(out[i * ldc + j]) - expected))
            }
            // The padding between rows of C is never written.
            for j in n..<ldc { #expect(out[i * ldc + j] == c0[i * ldc + j]) }
        }
        #expect(worst < 1e-4, "max abs error \(worst)")
    }

    /// Products inside `withBackend` use that backend on the workers of `Parallel` regions too.
    @Test func scopedBackendReachesWorkers() {
        for backend in MatrixProductBackend.allCases {
            let seen = BLAS.withBackend(backend) { () -> [MatrixProductBackend?] in
                var seen = [MatrixProductBackend?](repeating: nil, count: 8)
                seen.withUnsafeMutableBufferPointer { s in
                    let p = UncheckedSendable(s)
                    Parallel.forEach(8) { i in p.value[i] = BLAS.scopedBackend }
                }
                return seen
            }
            #expect(seen.allSatisfy { $0 == backend })
        }
        #expect(BLAS.scopedBackend == nil)
    }

    /// The automatic choice keeps OpenBLAS only where its kernels use the CPU's widest vectors.
    @Test func automaticChoiceFollowsInstructionSets() {
        // OpenBLAS 0.3.21's kernel families by the vectors they use.
        for (core, level) in [("Prescott", 0), ("Nehalem", 0), ("Sandybridge", 0), ("Haswell", 1), ("Zen", 1),
                              ("SkylakeX", 2), ("Cooperlake", 2), ("SapphireRapids", 2)] {
            #expect(MatrixProductBackend.vectorLevel(ofOpenBLASCore: core) == level, "\(core)")
        }
        // The Intel host: AVX-512, OpenBLAS fell back to Prescott → oneDNN; AVX2 host with Zen kernels → OpenBLAS;
        // AVX-512 CPU with only Haswell kernels loaded → oneDNN.
        #expect(MatrixProductBackend.choice(openBLASVectorLevel: 0, cpuVectorLevel: 2) == .oneDNN)
        #expect(MatrixProductBackend.choice(openBLASVectorLevel: 1, cpuVectorLevel: 1) == .openBLAS)
        #expect(MatrixProductBackend.choice(openBLASVectorLevel: 1, cpuVectorLevel: 2) == .oneDNN)
        #expect(MatrixProductBackend.choice(openBLASVectorLevel: 2, cpuVectorLevel: 2) == .openBLAS)
        #expect(!MatrixProductBackend.openBLASCoreName.isEmpty)
        // oneDNN reports the instruction set it compiles for; on AVX2 or AVX-512 CPUs at least AVX2.
        if CPUFeatures.vectorLevel >= 1 {
            #expect(MatrixProductBackend.oneDNNInstructionSet.hasPrefix("avx2") || MatrixProductBackend.oneDNNInstructionSet.hasPrefix("avx512"))
        }
    }
}
