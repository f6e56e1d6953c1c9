import Foundation
import Testing
@testable import Gemma3Kernels

/// The bfloat16 prefill product (`BF16Panels`, the AVX-512 BF16 kernel in CGemma3Kernels) against
/// a double-precision product of the same bfloat16-rounded inputs, rounded by `NumberFormats`.
@Suite struct BF16PrefillTests {
    /// Deterministic values in [-scale, scale).
    func values(_ count: Int, seed: UInt64, scale: Float) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in rng.float(scale) }
    }

    func rounded(_ x: Float) -> Double { Double(NumberFormats.bf16ToFloat(NumberFormats.floatToBF16(x))) }

    /// The choice must not be timed: processes that decide differently compute different bits (a
    /// resumed bf16 training run diverged in CI while the probe sat near its old threshold).
    @Test("bf16 prefill and native bf16 products are chosen by the CPU's vendor and features, as /proc/cpuinfo tells")
    func bfloat16ChoiceFollowsTheCPU() throws {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let flags = Set(cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") }?.split(separator: " ").map(String.init) ?? [])
        let amd = cpuinfo.contains("AuthenticAMD")
        #expect(PrefillPrecision.bfloat16Supported == flags.contains("avx512_bf16"))
        #expect(PrefillPrecision.bfloat16IsFaster == (flags.contains("avx512_bf16") && amd))
        print("bf16 choice: vendor \(amd ? "AMD" : "other"), avx512_bf16 \(flags.contains("avx512_bf16")), probe \(PrefillPrecision.bfloat16DotSpeedup)×, native products \(BFloat16Products.pay)")
    }

    @Test("bf16 panels: every output of odd shapes and strides equals the product of the rounded inputs")
    func panelsMatchRoundedProduct() {
        guard PrefillPrecision.bfloat16Supported else {
            print("NOTICE: this CPU has no AVX-512 BF16: the bfloat16 prefill kernel was not run (prefill stays float32)")
            #expect(PrefillPrecision.automatic == .float32)
            return
        }
        // (rows of W, input features, tokens): panel and token-block remainders, odd k, a single token.
        for (out, inp, n) in [(59, 37, 13), (45, 33, 3), (64, 640, 25), (32, 2, 1), (7, 1, 12), (100, 258, 36)] {
            let w = values(out * inp, seed: UInt64(out * 1000 + inp), scale: 1)
            let ldx = inp + 3, ldy = out + 5
            let x = values(n * ldx, seed: UInt64(n * 7 + 1), scale: 4)
            let sentinel: Float = 12345
            var y = [Float](repeating: sentinel, count: n * ldy)
            let weight = w.withUnsafeBufferPointer { F32Linear(copying: $0, outFeatures: out, inFeatures: inp) }
            let panels = BF16Panels(weight)
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { panels.gemm(n: n, x: xb.baseAddress!, ldx: ldx, y: $0.baseAddress!, ldy: ldy) }
            }
            var worst = 0.0
            for t in 0..<n {
                for r in 0..<out {
                    var sum = 0.0, magnitude = 0.0
                    for j in 0..<inp {
                        let term = rounded(w[r * inp + j]) * rounded(x[t * ldx + j])
                        sum += term; magnitude += abs(term)
                    }
                    // float32 accumulation of exact bf16 products: relative rounding ≲ k · 2⁻²⁴.
                    worst = max(worst, abs(Double(y[t * ldy + r]) - sum) / max(magnitude, 1e-30))
                }
                // Columns past the matrix's rows are not written.
                #expect(y[(t * ldy + out)..<(t * ldy + ldy)].allSatisfy { $0 == sentinel }, "\(out)×\(inp), token \(t)")
            }
            #expect(worst < 1e-5, "\(out)×\(inp) × \(n) tokens: worst relative error \(worst)")
        }
    }

    @Test("BF16PrefillLinear: gemm through the panels, gemv and rows unchanged from the wrapped weight")
    func wrapperKeepsDecodePath() {
        guard PrefillPrecision.bfloat16Supported else {
            print("NOTICE: this CPU has no AVX-512 BF16: BF16PrefillLinear was not exercised")
            return
        }
        let out = 70, inp = 96, n = BF16PrefillLinear.minimumTokensToBuild + 1
        let w = values(out * inp, seed: 3, scale: 0.5)
        let base = w.withUnsafeBufferPointer { F32Linear(copying: $0, outFeatures: out, inFeatures: inp) }
        let wrapped = BF16PrefillLinear(base)
        let x = values(n * inp, seed: 4, scale: 2)
        var exact = [Float](repeating: 0, count: n * out), viaPanels = exact, viaWrapper = exact
        x.withUnsafeBufferPointer { xb in
            let xp = xb.baseAddress!
            exact.withUnsafeMutableBufferPointer { base.gemm(n: n, x: xp, ldx: inp, y: $0.baseAddress!, ldy: out) }
            viaPanels.withUnsafeMutableBufferPointer { wrapped.bf16Panels.gemm(n: n, x: xp, ldx: inp, y: $0.baseAddress!, ldy: out) }
            viaWrapper.withUnsafeMutableBufferPointer { wrapped.gemm(n: n, x: xp, ldx: inp, y: $0.baseAddress!, ldy: out) }
        }
        #expect(viaWrapper == viaPanels)
        // Fewer tokens than the threshold: float32, before the panels exist and after (a product's
        // numbers must not depend on what ran before it).
        let fresh = BF16PrefillLinear(base)
        var short = [Float](repeating: 0, count: 2 * out), shortExact = short, shortPanels = short
        x.withUnsafeBufferPointer { xb in
            let xp = xb.baseAddress!
            shortExact.withUnsafeMutableBufferPointer { base.gemm(n: 2, x: xp, ldx: inp, y: $0.baseAddress!, ldy: out) }
            short.withUnsafeMutableBufferPointer { fresh.gemm(n: 2, x: xp, ldx: inp, y: $0.baseAddress!, ldy: out) }
            #expect(short == shortExact)
            _ = fresh.bf16Panels
            short.withUnsafeMutableBufferPointer { fresh.gemm(n: 2, x: xp, ldx: inp, y: $0.baseAddress!, ldy: out) }
            shortPanels.withUnsafeMutableBufferPointer { fresh.bf16Panels.gemm(n: 2, x: xp, ldx: inp, y: $0.baseAddress!, ldy: out) }
            #expect(short == shortExact && short != shortPanels)
        }
        // bfloat16 rounding of both operands: well under 1% of the output scale, but not exact.
        let scale = exact.map { abs($0) }.max()!
        let diff = zip(exact, viaWrapper).map { abs($0 - $1) }.max()!
        #expect(diff > 0 && diff < 0.01 * scale, "max |Δ| \(diff) of \(scale)")
        var y1 = [Float](repeating: 0, count: out), y2 = y1
        x.withUnsafeBufferPointer { xb in
            y1.withUnsafeMutableBufferPointer { Linear.gemv(base, x: xb.baseAddress!, y: $0.baseAddress!) }
            y2.withUnsafeMutableBufferPointer { Linear.gemv(wrapped, x: xb.baseAddress!, y: $0.baseAddress!) }
        }
        #expect(y1 == y2)
        #expect(wrapped.storageBytes == base.storageBytes && wrapped.formatName == "F32")
    }
}
