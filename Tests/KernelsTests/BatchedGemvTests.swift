import Foundation
import Testing
@testable import Gemma3Kernels

/// The batched matrix-vector product (`LinearWeight.gemv(rows:batch:x:ldx:y:ldy:)` and the parallel
/// `Linear.gemv(_:batch:x:ldx:)`): every output row is, bit for bit, the single-row product of its
/// input alone, whatever the batch and however the rows are split into ranges. Batched decoding is
/// exactly single-sequence decoding only if this holds for every storage and activation path.
@Suite struct BatchedGemvTests {
    /// Every weight form decoding can use, on random values of `rows × cols`.
    func weights(rows: Int, cols: Int, seed: UInt64) throws -> [(String, any LinearWeight)] {
        var rng = SplitMix64(seed: seed)
        var values = [Float](repeating: 0, count: rows * cols)
        values.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 0.5) }
        // A few rows of mixed magnitude so that block scales differ widely.
        for r in stride(from: 0, to: rows, by: 7) { for j in 0..<cols { values[r * cols + j] *= 30 } }
        var result: [(String, any LinearWeight)] = values.withUnsafeBufferPointer { v in
            [("F32Linear", F32Linear(copying: v, outFeatures: rows, inFeatures: cols)),
             ("BF16Linear", BF16Linear(converting: v.baseAddress!, outFeatures: rows, inFeatures: cols))]
        }
        var activations: [QuantizedLinear.ActivationPrecision] = [.int16, .float]
        if QuantizedLinear.int8Supported { activations.append(.int8) }
        for type in [GGMLType.f32, .f16, .bf16, .q8_0, .q4_0, .q5_0, .q4_K, .q6_K] {
            for a in activations {
                let m = try values.withUnsafeBufferPointer {
                    try QuantizedLinear(quantizing: $0, type: type, outFeatures: rows, inFeatures: cols, activations: a)
                }
                result.append(("\(type.name) \(a)", m))
                if type.blockSize > 1 {
                    // The decode forms: huge-page copy (VNNI) or unpacked bytes, and Q4_0/Q5_0 widened to Q8_0.
                    result.append(("\(type.name) \(a) decode form", m.widenedForDecode()))
                    if let unpacked = UnpackedBlockLinear(m) { result.append(("\(type.name) \(a) unpacked", unpacked)) }
                    if type == .q4_0 || type == .q5_0 { result.append(("\(type.name) \(a) as Q8_0", m.widenedToQ8_0())) }
                    result.append(("\(type.name) \(a) with f32 prefill copy", Float32PrefillLinear(m)))
                    if PrefillPrecision.bfloat16Supported { result.append(("\(type.name) \(a) with bf16 prefill copy", BF16PrefillLinear(m))) }
                }
            }
        }
        if !QuantizedLinear.int8Supported {
            print("NOTICE: this CPU has no AVX-512 VNNI: the int8 activation path was not checked for batch invariance")
        }
        return result
    }

    /// Random contiguous ranges covering 0..<n (lengths 1 up to about n/2).
    func randomSplit(_ n: Int, rng: inout SplitMix64) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var lo = 0
        while lo < n {
            let len = 1 + Int(rng.next() % UInt64(max(1, n / 2)))
            ranges.append(lo..<min(n, lo + len))
            lo = min(n, lo + len)
        }
        return ranges
    }

    @Test("batched rows equal single-row products bit for bit, for every format and activation path and any row split",
          arguments: [(rows: 611, cols: 256), (rows: 97, cols: 512)])
    func perRowInvariance(rows: Int, cols: Int) throws {
        let batch = 6, ldx = cols + 3, ldy = rows + 5
        var rng = SplitMix64(seed: UInt64(rows * 31 + cols))
        var x = [Float](repeating: 0, count: batch * ldx)
        x.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
        for j in 0..<cols { x[2 * ldx + j] *= 100 }   // rows of very different scale in one batch
        for (name, w) in try weights(rows: rows, cols: cols, seed: UInt64(rows)) {
            // Reference: each input row alone, all rows of W in one single-threaded call.
            var single = [Float](repeating: .nan, count: batch * rows)
            x.withUnsafeBufferPointer { xb in single.withUnsafeMutableBufferPointer { yb in
                for b in 0..<batch { w.gemv(rows: 0..<rows, x: xb.baseAddress! + b * ldx, y: yb.baseAddress! + b * rows) }
            } }
            // The single-row kernel itself on random ranges (a kernel that treats range tails apart would differ).
            var ranged = [Float](repeating: .nan, count: rows)
            let split = randomSplit(rows, rng: &rng)
            x.withUnsafeBufferPointer { xb in ranged.withUnsafeMutableBufferPointer { yb in
                for r in split { w.gemv(rows: r, x: xb.baseAddress!, y: yb.baseAddress!) }
            } }
            #expect(bitsEqual(ranged[...], single[0..<rows]), "\(name): single-row gemv depends on the row range")
            // Batched primitive on random ranges, for several batch sizes (sub-batches of the rows).
            for sub in [1, 2, batch] {
                var y = [Float](repeating: .nan, count: batch * ldy)
                let ranges = randomSplit(rows, rng: &rng)
                x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { yb in
                    for r in ranges { w.gemv(rows: r, batch: sub, x: xb.baseAddress!, ldx: ldx, y: yb.baseAddress!, ldy: ldy) }
                } }
                for b in 0..<sub {
                    #expect(bitsEqual(y[(b * ldy)..<(b * ldy + rows)], single[(b * rows)..<((b + 1) * rows)]),
                            "\(name): batch \(sub), row \(b) differs from its single-row product")
                }
                let untouched = y[rows..<ldy].allSatisfy { $0.isNaN }
                #expect(untouched, "\(name): wrote outside its rows")
            }
            // The parallel driver, alone and fused with a second matrix.
            var y = [Float](repeating: .nan, count: batch * ldy)
            var other = [Float](repeating: .nan, count: batch * rows)
            x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { yb in
                Linear.gemv(w, batch: batch, x: xb.baseAddress!, ldx: ldx, y: yb.baseAddress!, ldy: ldy)
            } }
            for b in 0..<batch {
                #expect(bitsEqual(y[(b * ldy)..<(b * ldy + rows)], single[(b * rows)..<((b + 1) * rows)]), "\(name): Linear.gemv, row \(b)")
            }
            y = [Float](repeating: .nan, count: batch * ldy)
            x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { yb in other.withUnsafeMutableBufferPointer { ob in
                Linear.gemv([.init(weight: w, y: ob.baseAddress!, ldy: rows), .init(weight: w, y: yb.baseAddress!, ldy: ldy)],
                            batch: batch, x: xb.baseAddress!, ldx: ldx)
            } } }
            for b in 0..<batch {
                #expect(bitsEqual(y[(b * ldy)..<(b * ldy + rows)], single[(b * rows)..<((b + 1) * rows)]), "\(name): fused driver, row \(b)")
                #expect(bitsEqual(other[(b * rows)..<((b + 1) * rows)], single[(b * rows)..<((b + 1) * rows)]), "\(name): fused driver, first matrix, row \(b)")
            }
            // Batch 1 through the driver is the existing single-row driver.
            var one = [Float](repeating: .nan, count: rows)
            x.withUnsafeBufferPointer { xb in one.withUnsafeMutableBufferPointer { Linear.gemv(w, x: xb.baseAddress!, y: $0.baseAddress!) } }
            #expect(bitsEqual(one[...], single[0..<rows]), "\(name): Linear.gemv single row")
        }
    }

    @Test("a tile is about 32 KiB of weights and at least one row")
    func tileRows() throws {
        let ones = [Float](repeating: 1, count: 3 * 20000)
        let wide = ones.withUnsafeBufferPointer { F32Linear(copying: $0, outFeatures: 3, inFeatures: 20000) }
        #expect(wide.batchTileRows == 1)
        let values = [Float](repeating: 0.5, count: 64 * 256)
        let q = try values.withUnsafeBufferPointer { try QuantizedLinear(quantizing: $0, type: .q4_K, outFeatures: 64, inFeatures: 256) }
        #expect(q.batchTileRows == (32 << 10) / 144)
    }

    func bitsEqual(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
    }
}
