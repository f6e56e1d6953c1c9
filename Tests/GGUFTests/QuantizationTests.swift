import Foundation
import Testing
import Gemma3Kernels

@Suite("ggml block formats and quantized products")
struct QuantizationTests {
    @Test("half conversions agree with Swift's Float16 on every bit pattern")
    func halfConversions() {
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let got = Half.toFloat(bits)
            if expected.isNaN { #expect(got.isNaN) } else { #expect(got.bitPattern == expected.bitPattern, "\(bits)") }
        }
        var mismatches = 0
        for (i, x) in (randomFloats(20000, seed: 7, scale: 70000) + randomFloats(20000, seed: 8, scale: 1e-4)
                       + [0, -0, 65504, 65520, 1e-8, 5.96e-8, 2.98e-8, .infinity, -.infinity]).enumerated() {
            if Half.fromFloat(x) != Float16(x).bitPattern { mismatches += 1; if mismatches < 5 { print("fromFloat mismatch #\(i): \(x)") } }
        }
        #expect(mismatches == 0)
        // SIMD widening (F16 kernel) on a row holding every exponent, subnormals, inf and NaN.
        var row: [UInt16] = [0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0xbc00, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x3555, 0xc000, 0x0200, 0x1234, 0xabcd]
        row += (0..<16).map { UInt16(truncatingIfNeeded: $0 &* 4099) }
        var out = [Float](repeating: 0, count: row.count)
        row.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { dst in
            GGMLBlocks.dequantizeRowUnchecked(.f16, src.baseAddress!, dst.baseAddress!, count: row.count)
        } }
        for (h, f) in zip(row, out) {
            let e = Float(Float16(bitPattern: h))
            if e.isNaN { #expect(f.isNaN) } else { #expect(f.bitPattern == e.bitPattern, "\(h)") }
        }
    }

    /// Largest |x − dequantize(quantize(x))| allowed per block, from each format's step size.
    func errorBound(_ type: GGMLType, _ x: ArraySlice<Float>) -> Float {
        let amax = x.map { abs($0) }.max() ?? 0
        switch type {
        case .f32: return 0
        case .f16: return amax * 0x1p-11 + 1e-7
        case .bf16: return amax * 0x1p-8
        case .q8_0: return amax / 127 * 0.5 * 1.01 + amax * 0x1p-11   // half step + f16 rounding of d
        case .q4_0: return amax / 8 * 1.01                                // one step (the far extreme clamps)
        case .q5_0: return amax / 16 * 1.01
        case .q4_K: return amax * 2 / 15 * 0.5 * 1.3 + amax * 2 / 63      // half step of the sub-block + scale rounding
        case .q6_K: return amax / 31 * 0.6 + amax / 127
        default: return .infinity
        }
    }

    @Test("quantize → dequantize stays within each format's error bound",
          arguments: [GGMLType.f32, .f16, .bf16, .q8_0, .q4_0, .q5_0, .q4_K, .q6_K])
    func roundTripError(type: GGMLType) throws {
        let n = 1024
        // Mixed magnitudes across blocks, including an all-zero block and a constant block.
        var x = randomFloats(n, seed: 11, scale: 0.1)
        for i in 256..<512 { x[i] *= 40 }
        for i in 512..<544 { x[i] = 0 }
        for i in 544..<576 { x[i] = -0.25 }
        let packed = try x.withUnsafeBufferPointer { try GGMLBlocks.quantize(type, $0, rows: 1, cols: n) }
        #expect(packed.count == type.byteCount(elements: n))
        var y = [Float](repeating: .nan, count: n)
        try packed.withUnsafeBytes { src in try y.withUnsafeMutableBufferPointer { dst in
            try GGMLBlocks.dequantizeRow(type, src.baseAddress!, dst.baseAddress!, count: n)
        } }
        let block = max(type.blockSize, 32)
        for b in 0..<(n / block) {
            let r = (b * block)..<((b + 1) * block)
            let bound = errorBound(type, x[r])
            let err = zip(x[r], y[r]).map { abs($0 - $1) }.max()!
            #expect(err <= bound, "\(type.name) block \(b): error \(err) > bound \(bound)")
        }
        for i in 512..<544 { #expect(y[i] == 0) }
    }

    @Test("Q8_0, Q4_0 and Q5_0 quantizers match llama.cpp's reference rounding (gguf-py) byte for byte")
    func quantizersMatchGGUFPy() throws {
        guard ggufPyDirectory != nil else {
            notice("gguf-py not found (set LLAMA_CPP_DIR): skipped the byte comparison of our Q8_0/Q4_0/Q5_0 quantizers with llama.cpp's reference")
            return
        }
        var x = randomFloats(32 * 64, seed: 5, scale: 2)
        for i in 0..<32 { x[i] = Float(i - 16) / 4 }    // exact ties for the rounding rule
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("x.f32")
        try x.withUnsafeBytes { try Data($0).write(to: input) }
        for type in [GGMLType.q8_0, .q4_0, .q5_0] {
            let ours = try x.withUnsafeBufferPointer { try GGMLBlocks.quantize(type, $0, rows: 1, cols: x.count) }
            let hex = try python("""
            import sys, numpy as np
            from gguf.quants import quantize
            from gguf.constants import GGMLQuantizationType as T
            x = np.fromfile(sys.argv[1], dtype=np.float32).reshape(1, -1)
            print(quantize(x, T[sys.argv[2]]).tobytes().hex())
            """, [input.path, type.name]).trimmingCharacters(in: .whitespacesAndNewlines)
            let theirs = stride(from: 0, to: hex.count, by: 2).map { i -> UInt8 in
                let s = hex.index(hex.startIndex, offsetBy: i)
                return UInt8(hex[s..<hex.index(s, offsetBy: 2)], radix: 16)!
            }
            #expect(ours == theirs, "\(type.name): \(zip(ours, theirs).filter { $0 != $1 }.count) bytes differ")
        }
    }

    /// Reference y = W·x in Double on the dequantized weights.
    func reference(_ w: QuantizedLinear, _ x: [Float]) -> [Double] {
        var rows = [Float](repeating: 0, count: w.outFeatures * w.inFeatures)
        rows.withUnsafeMutableBufferPointer { w.dequantize(rows: 0..<w.outFeatures, into: $0.baseAddress!) }
        return (0..<w.outFeatures).map { r in
            var s = 0.0
            for j in 0..<w.inFeatures { s += Double(rows[r * w.inFeatures + j]) * Double(x[j]) }
            return s
        }
    }

    @Test("quantized GEMV (8- and 16-bit activations, float) and GEMM agree with float arithmetic on the dequantized weights",
          arguments: [GGMLType.f32, .f16, .bf16, .q8_0, .q4_0, .q5_0, .q4_K, .q6_K])
    func products(type: GGMLType) throws {
        let rows = 37, cols = 512   // rows not a multiple of 4 or of the thread count
        let values = randomFloats(rows * cols, seed: 3, scale: 0.05)
        let w = try values.withUnsafeBufferPointer { try QuantizedLinear(quantizing: $0, type: type, outFeatures: rows, inFeatures: cols) }
        var x = randomFloats(cols, seed: 4, scale: 2)
        for j in 0..<32 { x[j] *= 100 }   // one activation block much larger than the rest
        let ref = reference(w, x)
        let scale = ref.map { abs($0) }.max()!
        for precision in QuantizedLinear.ActivationPrecision.allCases {
            let m = w.with(activations: precision)
            var y = [Float](repeating: .nan, count: rows)
            x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { yb in Linear.gemv(m, x: xb.baseAddress!, y: yb.baseAddress!) } }
            let err = zip(y, ref).map { abs(Double($0) - $1) }.max()!
            // Float path: float32 rounding only. 16-bit activations: ≤ 2⁻¹⁶ of each block's largest |x|.
            // 8-bit activations (AVX-512 VNNI kernels, llama.cpp's arithmetic): ≤ 2⁻⁸ of it; measured 4e-3.
            let tolerance = precision == .float || !type.hasKernels || [.f32, .f16, .bf16].contains(type) ? 1e-5
                : precision == .int8 ? 1e-2 : 1e-4
            #expect(err <= tolerance * scale, "\(type.name) \(precision): max error \(err) (scale \(scale))")
        }
        // Batched (prefill) product through dequantized panels + sgemm.
        let n = 5
        let xs = randomFloats(n * cols, seed: 9, scale: 1)
        var ys = [Float](repeating: .nan, count: n * rows)
        xs.withUnsafeBufferPointer { xb in ys.withUnsafeMutableBufferPointer { yb in
            w.gemm(n: n, x: xb.baseAddress!, ldx: cols, y: yb.baseAddress!, ldy: rows)
        } }
        for t in 0..<n {
            let r = reference(w, Array(xs[(t * cols)..<((t + 1) * cols)]))
            let err = zip(ys[(t * rows)..<((t + 1) * rows)], r).map { abs(Double($0) - $1) }.max()!
            #expect(err <= 1e-5 * max(1, r.map { abs($0) }.max()!), "\(type.name) gemm row \(t): \(err)")
        }
    }

    @Test("shape errors are one-line throws, not crashes")
    func shapeErrors() {
        #expect(throws: GGMLBlocks.Unsupported.self) { try QuantizedLinear(type: .q4_K, bytes: [], outFeatures: 1, inFeatures: 640) }
        #expect(throws: GGMLBlocks.Unsupported.self) { try QuantizedLinear(type: .q8_0, bytes: [1, 2], outFeatures: 1, inFeatures: 32) }
        #expect(throws: GGMLBlocks.Unsupported.self) { try QuantizedLinear(type: .q2_K, bytes: [], outFeatures: 1, inFeatures: 256) }
    }
}
