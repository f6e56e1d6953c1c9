import Testing
@testable import Gemma3Kernels

@Suite struct KernelsTests {
    @Test func sgemmMatchesNaiveProduct() {
        let m = 5, n = 7, k = 3
        let a = (0..<m * k).map { Float($0 % 11) * 0.25 - 1 }
        let b = (0..<n * k).map { Float($0 % 7) * 0.5 - 1.5 }  // stored [n×k], used transposed
        var c = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    BLAS.sgemm(transB: true, m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, c: cp.baseAddress!)
                }
            }
        }
        for i in 0..<m {
            for j in 0..<n {
                var s: Float = 0
                for p in 0..<k { s += a[i * k + p] * b[j * k + p] }
                #expect(abs(c[i * n + j] - s) < 1e-5)
            }
        }
    }

    @Test func parallelChunksCoverEveryIndexOnce() {
        var hits = [Int](repeating: 0, count: 1000)
        hits.withUnsafeMutableBufferPointer { h in
            let p = UncheckedSendable(h)
            Parallel.forEach(1000) { i in p.value[i] += 1 }
        }
        #expect(hits.allSatisfy { $0 == 1 })
    }

    @Test func bf16RoundsToNearestEven() {
        #expect(NumberFormats.bf16ToFloat(NumberFormats.floatToBF16(1.0)) == 1.0)
        // 1 + 2^-8 is exactly halfway between two bf16 values; ties go to even (1.0).
        #expect(NumberFormats.bf16ToFloat(NumberFormats.floatToBF16(1.00390625)) == 1.0)
        #expect(NumberFormats.bf16ToFloat(NumberFormats.floatToBF16(25.298222)) == 25.25)
        #expect(NumberFormats.f16ToFloat(NumberFormats.floatToF16(0.5)) == 0.5)
    }
}
