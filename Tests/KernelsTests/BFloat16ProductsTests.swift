import Testing
@testable import Gemma3Kernels

/// Native bfloat16 training products (`BFloat16Products`, oneDNN's matmul on bfloat16 inputs) against a
/// double-precision product of the same bfloat16-rounded inputs; and the float → bfloat16 conversion
/// against the scalar definition in `NumberFormats`.
@Suite struct BFloat16ProductsTests {
    func values(_ count: Int, seed: UInt64, scale: Float) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in rng.float(scale) }
    }

    @Test("conversion to bfloat16 bits: round to nearest even, NaN quiet, inf and subnormals kept, at every length")
    func conversionMatchesScalarDefinition() {
        var x = values(1000, seed: 3, scale: 1000)
        x += [0, -0, .infinity, -.infinity, .nan, Float(bitPattern: 0x7f80_0001), Float(bitPattern: 0x0000_8000),
              Float(bitPattern: 0x3f80_8000), Float(bitPattern: 0x3f81_8000), Float(bitPattern: 0x3f80_8001),
              .greatestFiniteMagnitude, .leastNonzeroMagnitude]
        for count in [x.count, 1, 15, 16, 17, 33] {
            var out = [UInt16](repeating: 0, count: count)
            NumberFormats.convertToBFloat16(from: x, into: &out, count: count)
            for i in 0..<count {
                let want = NumberFormats.floatToBF16(x[i])
                if x[i].isNaN {
                    #expect(NumberFormats.bf16ToFloat(out[i]).isNaN && out[i] & 0x40 != 0, "NaN at \(i)")
                } else {
                    #expect(out[i] == want, "value \(x[i]) (\(String(x[i].bitPattern, radix: 16))): \(out[i]) vs \(want)")
                }
            }
        }
    }

    @Test("native bf16 products: every transpose, alpha, beta, stride and split equals the product of the rounded inputs")
    func productsMatchRoundedProduct() {
        guard BFloat16Products.pay || PrefillPrecision.bfloat16Supported else {
            print("NOTICE: this CPU has no AVX-512 BF16: native bfloat16 training products were not run (bf16 training stays emulated)")
            #expect(!RuntimeSettings().resolvedNativeBFloat16Products)
            return
        }
        // Small shapes run on one thread; 96×160×64 is split over the workers.
        for (m, n, k) in [(37, 50, 29), (96, 160, 64), (130, 40, 200)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    for (alpha, beta) in [(Float(1), Float(0)), (0.5, 1)] {
                        check(m: m, n: n, k: k, transA: transA, transB: transB, alpha: alpha, beta: beta)
                    }
                }
            }
        }
    }

    func check(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, alpha: Float, beta: Float) {
        // Stored shapes, with rows padded by 3 to test the leading dimensions.
        let (aRows, aCols) = transA ? (k, m) : (m, k), (bRows, bCols) = transB ? (n, k) : (k, n)
        let lda = aCols + 3, ldb = bCols + 3, ldc = n + 3
        let a = values(aRows * lda, seed: UInt64(m * 7 + k), scale: 2), b = values(bRows * ldb, seed: UInt64(n * 5 + k), scale: 2)
        let c0 = values(m * ldc, seed: 11, scale: 1)
        var a16 = [UInt16](repeating: 0, count: a.count), b16 = [UInt16](repeating: 0, count: b.count)
        NumberFormats.convertToBFloat16(from: a, into: &a16, count: a.count)
        NumberFormats.convertToBFloat16(from: b, into: &b16, count: b.count)
        var c = c0
        let done = a16.withUnsafeBufferPointer { ap in
            b16.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    ParallelGEMM.bfloat16(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                                          a: ap.baseAddress!, lda: lda, b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc)
                }
            }
        }
        #expect(done, "oneDNN has no native kernel for \(m)×\(n)×\(k) transA \(transA) transB \(transB)")
        guard done else { return }
        func av(_ i: Int, _ p: Int) -> Double { Double(NumberFormats.bf16ToFloat(transA ? a16[p * lda + i] : a16[i * lda + p])) }
        func bv(_ p: Int, _ j: Int) -> Double { Double(NumberFormats.bf16ToFloat(transB ? b16[j * ldb + p] : b16[p * ldb + j])) }
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0, magnitude = 0.0
                for p in 0..<k { sum += av(i, p) * bv(p, j); magnitude += abs(av(i, p) * bv(p, j)) }
                let want = Double(alpha) * sum + Double(beta) * Double(c0[i * ldc + j])
                let scale = Double(alpha) * magnitude + abs(Double(beta) * Double(c0[i * ldc + j])) + 1e-30
                worst = max(worst, abs(Double(c[i * ldc + j]) - want) / scale)
            }
            // Padding between rows is never written.
            for j in n..<ldc { #expect(c[i * ldc + j] == c0[i * ldc + j]) }
        }
        // float32 accumulation of exact products: a few float32 ulps of the sum of magnitudes.
        #expect(worst < 1e-5, "\(m)×\(n)×\(k) transA \(transA) transB \(transB) alpha \(alpha) beta \(beta): \(worst)")
    }
}
