import Foundation
import Testing
import Gemma3Kernels
@testable import Gemma3Model

@Suite struct GEMVTests {
    /// Naive y = W·x in double.
    func naive(_ w: [Float], rows: Int, cols: Int, ld: Int, _ x: [Float]) -> [Double] {
        (0..<rows).map { r in (0..<cols).reduce(0.0) { $0 + Double(w[r * ld + $1]) * Double(x[$1]) } }
    }

    @Test func f32KernelMatchesNaiveWithTailsAndStride() {
        var rng = SplitMix64(seed: 1)
        for (rows, cols, ld) in [(37, 83, 90), (4, 8, 8), (1, 3, 3), (130, 640, 640)] {
            var w = [Float](repeating: 0, count: rows * ld), x = [Float](repeating: 0, count: cols)
            w.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
            x.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
            var y = [Float](repeating: .nan, count: rows)
            let linear = w.withUnsafeBufferPointer { F32Linear(borrowing: $0.baseAddress!, outFeatures: rows, inFeatures: cols, ld: ld, owner: nil) }
            withExtendedLifetime(w) {
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { Linear.gemv(linear, x: xp.baseAddress!, y: $0.baseAddress!) } }
            }
            let ref = naive(w, rows: rows, cols: cols, ld: ld, x)
            for r in 0..<rows { #expect(abs(Double(y[r]) - ref[r]) < 1e-4 * Double(cols).squareRoot(), "row \(r) of \(rows)×\(cols)") }
        }
    }

    @Test func bf16KernelMatchesNaiveOnRoundedWeights() {
        var rng = SplitMix64(seed: 2)
        let rows = 45, cols = 77
        var w = [Float](repeating: 0, count: rows * cols), x = [Float](repeating: 0, count: cols)
        w.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
        x.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
        let linear = w.withUnsafeBufferPointer { BF16Linear(converting: $0.baseAddress!, outFeatures: rows, inFeatures: cols) }
        #expect(linear.storageBytes == rows * cols * 2)
        let rounded = w.map { NumberFormats.bf16ToFloat(NumberFormats.floatToBF16($0)) }
        #expect(rounded != w)  // the rounding is real
        var y = [Float](repeating: .nan, count: rows)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { Linear.gemv(linear, x: xp.baseAddress!, y: $0.baseAddress!) } }
        let ref = naive(rounded, rows: rows, cols: cols, ld: cols, x)
        for r in 0..<rows { #expect(abs(Double(y[r]) - ref[r]) < 1e-4 * 10) }
        // dequantize gives the rounded values exactly
        var row = [Float](repeating: 0, count: 3 * cols)
        row.withUnsafeMutableBufferPointer { linear.dequantize(rows: 10..<13, into: $0.baseAddress!) }
        #expect(Array(row) == Array(rounded[(10 * cols)..<(13 * cols)]))
    }

    @Test func multiMatrixGemvSplitsRowsAcrossMatrices() {
        var rng = SplitMix64(seed: 3)
        let cols = 40
        let sizes = [13, 5, 22]
        var mats: [F32Linear] = []
        var storage: [[Float]] = []
        for n in sizes {
            var w = [Float](repeating: 0, count: n * cols)
            w.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
            storage.append(w)
            mats.append(w.withUnsafeBufferPointer { F32Linear(copying: $0, outFeatures: n, inFeatures: cols) })
        }
        var x = [Float](repeating: 0, count: cols)
        x.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
        let outs = sizes.map { UnsafeMutablePointer<Float>.allocate(capacity: $0) }
        defer { outs.forEach { $0.deallocate() } }
        x.withUnsafeBufferPointer { xp in
            Linear.gemv(zip(mats, outs).map { ($0.0 as any LinearWeight, $0.1) }, x: xp.baseAddress!)
        }
        for (i, n) in sizes.enumerated() {
            let ref = naive(storage[i], rows: n, cols: cols, ld: cols, x)
            for r in 0..<n { #expect(abs(Double(outs[i][r]) - ref[r]) < 1e-4) }
        }
    }

    @Test func defaultPanelGemmMatchesGemv() {
        // BF16Linear uses the protocol's default gemm (dequantize panels + sgemm).
        var rng = SplitMix64(seed: 4)
        let rows = 300, cols = 24, n = 7
        var w = [Float](repeating: 0, count: rows * cols), x = [Float](repeating: 0, count: n * cols)
        w.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
        x.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
        let linear = w.withUnsafeBufferPointer { BF16Linear(converting: $0.baseAddress!, outFeatures: rows, inFeatures: cols) }
        var batched = [Float](repeating: .nan, count: n * (rows + 3))
        x.withUnsafeBufferPointer { xp in
            batched.withUnsafeMutableBufferPointer { linear.gemm(n: n, x: xp.baseAddress!, ldx: cols, y: $0.baseAddress!, ldy: rows + 3) }
        }
        for i in 0..<n {
            var single = [Float](repeating: .nan, count: rows)
            x.withUnsafeBufferPointer { xp in single.withUnsafeMutableBufferPointer { Linear.gemv(linear, x: xp.baseAddress! + i * cols, y: $0.baseAddress!) } }
            for r in 0..<rows { #expect(abs(batched[i * (rows + 3) + r] - single[r]) < 1e-4) }
        }
    }
}

@Suite struct KVCacheTests {
    @Test func a32KContextOn270MCostsThreeFullLayersAndFifteenRings() throws {
        let config = try #require(Gemma3Config.preset(named: "tinystories-270m"))
        let rowBytes = 2 * config.numKeyValueHeads * config.headDim * 4  // K and V, float32
        let expected = (3 * 32_768 + 15 * 512) * rowBytes
        #expect(KVCache.bytes(config: config, context: 32_768) == expected)
        #expect(expected < 18 * 32_768 * rowBytes / 5)  // far below 18 full caches
        let cache = KVCache(config: config, maxContext: 32_768)
        #expect(cache.bytes == 0)  // nothing allocated before use
        cache.reserve(positions: 100)
        // Rings are allocated whole (512 rows); full layers only grow as needed.
        #expect(cache.layers.filter { $0.window != nil }.allSatisfy { $0.capacity == 512 })
        #expect(cache.layers.filter { $0.window == nil }.allSatisfy { $0.capacity >= 100 && $0.capacity < 512 })
        cache.reserve(positions: 32_768)
        #expect(cache.bytes == expected)
    }

    @Test func ringRowsWrapAtTheWindow() {
        let ring = LayerKVCache(kvDim: 4, window: 8, maxContext: 100)
        #expect((0..<20).map(ring.row(of:)) == (0..<20).map { $0 % 8 })
        let full = LayerKVCache(kvDim: 4, window: nil, maxContext: 100)
        #expect(full.row(of: 57) == 57)
        // A window longer than the context never needs more rows than the context.
        #expect(LayerKVCache(kvDim: 4, window: 512, maxContext: 100).maxRows == 100)
    }
}
