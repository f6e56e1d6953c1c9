import CGemma3Kernels
import Testing
@testable import Gemma3Kernels

/// The 8-bit decode kernels (`gemma3_q8_gemv`, AVX-512 VNNI) against a double-precision product of
/// the weights as `GGMLBlocks` dequantizes them (Swift, independent of the C code) and the
/// activations as quantized.
@Suite struct Int8DecodeKernelTests {

    /// Random bytes for every block (all bit patterns of quants, high bits and packed scales), with
    /// the fp16 scale fields set to finite values of either sign.
    func randomBlocks(_ type: GGMLType, rows: Int, cols: Int, rng: inout SplitMix64) -> [UInt8] {
        let blocks = rows * cols / type.blockSize
        var bytes = (0..<(blocks * type.bytesPerBlock)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let halfOffsets: [Int] = switch type {
        case .q4_K: [0, 2]
        case .q6_K: [208]
        default: [0]
        }
        for b in 0..<blocks {
            for o in halfOffsets {
                let value = Float16(rng.float(0.05))
                let bits = value.bitPattern
                bytes[b * type.bytesPerBlock + o] = UInt8(bits & 0xff)
                bytes[b * type.bytesPerBlock + o + 1] = UInt8(bits >> 8)
            }
        }
        return bytes
    }

    struct Activations { var qs: [Int8]; var scale: [Float]; var blockSums: [Float]; var halfSums: [Float] }

    func quantize(_ x: [Float]) -> Activations {
        let blocks = x.count / 32
        var a = Activations(qs: .init(repeating: 0, count: x.count), scale: .init(repeating: 0, count: blocks),
                            blockSums: .init(repeating: 0, count: blocks), halfSums: .init(repeating: 0, count: 2 * blocks))
        gemma3_quantize_q8_blocks(x, x.count, &a.qs, &a.scale, &a.blockSums, &a.halfSums)
        return a
    }

    @Test("activations: 8 bits per block of 32 within half a step; scaled sums of each block and of its halves")
    func activationQuantization() {
        guard QuantizedLinear.int8Supported else {
            print("NOTICE: this CPU has no AVX-512 VNNI: the 8-bit decode kernels were not run (decoding uses the 16-bit kernels)")
            #expect(QuantizedLinear.defaultActivations == .int16)
            return
        }
        var rng = SplitMix64(seed: 5)
        var x = (0..<256).map { _ in rng.float(3) }
        for j in 32..<64 { x[j] = 0 }   // an all-zero block
        x[70] = -9                      // a block whose largest magnitude is negative
        let a = quantize(x)
        for b in 0..<8 {
            let block = x[(32 * b)..<(32 * b + 32)]
            let amax = block.map { abs($0) }.max()!
            #expect(abs(a.scale[b] - amax / 127) <= 1e-6 * amax, "block \(b)")
            var sum: Int32 = 0, low: Int32 = 0
            for j in 0..<32 {
                let q = a.qs[32 * b + j]
                #expect(abs(Float(q) * a.scale[b] - x[32 * b + j]) <= a.scale[b] * 0.5001 + 1e-7, "block \(b) value \(j)")
                sum += Int32(q); if j < 16 { low += Int32(q) }
            }
            let d = a.scale[b]
            #expect(a.blockSums[b] == d * Float(sum) && a.halfSums[2 * b] == d * Float(low)
                    && a.halfSums[2 * b + 1] == d * Float(sum - low), "block \(b) sums")
        }
        #expect(a.qs[70] == -127)
    }

    @Test("Q4_0, Q5_0, Q8_0, Q4_K, Q6_K: every row equals the product of the dequantized blocks and the 8-bit activations")
    func kernelsMatchDequantizedProduct() throws {
        guard QuantizedLinear.int8Supported else {
            print("NOTICE: this CPU has no AVX-512 VNNI: the 8-bit decode kernels were not run")
            return
        }
        var rng = SplitMix64(seed: 11)
        // 11 blocks per row for the 32-value types: the kernels' odd last block.
        for type in [GGMLType.q4_0, .q5_0, .q8_0, .q4_K, .q6_K] {
            let rows = 37, cols = type.blockSize == 256 ? 768 : 352
            let bytes = randomBlocks(type, rows: rows, cols: cols, rng: &rng)
            let matrix = try QuantizedLinear(type: type, bytes: bytes, outFeatures: rows, inFeatures: cols, activations: .int8)
            let x = (0..<cols).map { _ in rng.float(2) }
            let a = quantize(x)
            var w = [Float](repeating: 0, count: rows * cols)
            w.withUnsafeMutableBufferPointer { matrix.dequantize(rows: 0..<rows, into: $0.baseAddress!) }
            var y = [Float](repeating: .nan, count: rows)
            // Two disjoint row ranges, as the parallel driver calls it.
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { yb in
                    matrix.gemv(rows: 0..<20, x: xb.baseAddress!, y: yb.baseAddress!)
                    matrix.gemv(rows: 20..<rows, x: xb.baseAddress!, y: yb.baseAddress!)
                }
            }
            var worst = 0.0, worstAgainstFloat = 0.0, largest = 0.0
            for r in 0..<rows {
                var reference = 0.0, magnitude = 0.0, exact = 0.0
                for k in 0..<cols {
                    let term = Double(w[r * cols + k]) * Double(a.qs[k]) * Double(a.scale[k / 32])
                    reference += term; magnitude += abs(term)
                    exact += Double(w[r * cols + k]) * Double(x[k])
                }
                worst = max(worst, abs(Double(y[r]) - reference) / max(magnitude, 1e-30))
                worstAgainstFloat = max(worstAgainstFloat, abs(Double(y[r]) - exact))
                largest = max(largest, abs(exact))
            }
            // float32 sums of exact integer dot products: a few ulps of the magnitude.
            #expect(worst < 2e-6, "\(type.name): worst relative error \(worst) against the quantized-activation product")
            // And the 8-bit activations themselves cost ≲ 1% against exact float arithmetic.
            #expect(worstAgainstFloat < 0.01 * largest, "\(type.name): \(worstAgainstFloat) of \(largest)")
        }
    }

    @Test("decode form: .int8 matrices are packed copies with the same values; other CPUs unpack")
    func decodeForm() throws {
        var rng = SplitMix64(seed: 17)
        let bytes = randomBlocks(.q5_0, rows: 8, cols: 64, rng: &rng)
        let matrix = try QuantizedLinear(type: .q5_0, bytes: bytes, outFeatures: 8, inFeatures: 64, activations: .int8)
        let form = matrix.widenedForDecode()
        var a = [Float](repeating: 0, count: 8 * 64), b = a
        a.withUnsafeMutableBufferPointer { matrix.dequantize(rows: 0..<8, into: $0.baseAddress!) }
        b.withUnsafeMutableBufferPointer { form.dequantize(rows: 0..<8, into: $0.baseAddress!) }
        #expect(a == b)
        if QuantizedLinear.int8Supported {
            let copy = try #require(form as? QuantizedLinear)
            #expect(copy.type == .q5_0 && copy.activations == .int8 && copy.data != matrix.data)
        } else {
            #expect(QuantizedLinear.unpackForDecode ? form is UnpackedBlockLinear : form is QuantizedLinear)
        }
    }
}

extension SplitMix64 {
    /// Uniform in [-scale, scale).
    mutating func float(_ scale: Float) -> Float { Float(nextUniform() * 2 - 1) * scale }
}
