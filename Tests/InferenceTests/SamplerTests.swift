import Foundation
import Testing
import Gemma3Kernels
@testable import Gemma3Model

/// A direct transcription of HF's warpers (temperature, top-k, top-p, min-p in that order) over the
/// whole vocabulary, sorting everything: the reference for the sampler's shortcut filter.
func referenceDistribution(_ logits: [Float], _ o: SamplingOptions) -> [Int: Double] {
    let n = logits.count
    var s = logits.map { Double($0) / Double(o.temperature) }
    func softmax(_ v: [Double]) -> [Double] {
        let m = v.max()!
        let e = v.map { $0 == -.infinity ? 0 : exp($0 - m) }
        let z = e.reduce(0, +)
        return e.map { $0 / z }
    }
    if o.topK > 0 && o.topK < n {
        let kth = s.sorted(by: >)[o.topK - 1]
        s = s.map { $0 < kth ? -.infinity : $0 }
    }
    if o.topP < 1 {
        let order = (0..<n).sorted { s[$0] < s[$1] }  // ascending, as HF
        let p = softmax(order.map { s[$0] })
        var cumulative = 0.0
        for (rank, i) in order.enumerated() {
            cumulative += p[rank]
            if cumulative <= 1 - Double(o.topP) && rank < n - 1 { s[i] = -.infinity }
        }
    }
    if o.minP > 0 {
        let p = softmax(s)
        let threshold = Double(o.minP) * p.max()!
        for i in 0..<n where p[i] < threshold { s[i] = -.infinity }
    }
    let p = softmax(s)
    var out: [Int: Double] = [:]
    for i in 0..<n where p[i] > 0 { out[i] = p[i] }
    return out
}

@Suite struct SamplerTests {
    func randomLogits(_ n: Int, seed: UInt64, scale: Double) -> [Float] {
        var rng = SplitMix64(seed: seed)
        var l = [Float](repeating: 0, count: n)
        l.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: scale) }
        return l
    }

    @Test func filtersMatchHuggingFaceSemantics() {
        let cases: [SamplingOptions] = [
            .init(temperature: 1, topK: 40),
            .init(temperature: 0.7, topP: 0.9),
            .init(temperature: 1.3, topP: 0.5),
            .init(temperature: 1, minP: 0.05),
            .init(temperature: 0.8, topK: 50, topP: 0.95),
            .init(temperature: 1, topK: 200, topP: 0.8, minP: 0.02),
            .init(temperature: 2, topP: 0.99, minP: 0.1),
            .init(temperature: 0.5, topK: 3),
        ]
        for (c, options) in cases.enumerated() {
            for (trial, scale) in [0.5, 2.0, 6.0].enumerated() {
                let logits = randomLogits(3000, seed: UInt64(100 * c + trial), scale: scale)
                var sampler = Sampler(options: options)
                var copy = logits
                let got = copy.withUnsafeMutableBufferPointer { sampler.distribution($0) }
                let want = referenceDistribution(logits, options)
                #expect(got.count == want.count, "case \(c) scale \(scale): kept \(got.count), HF keeps \(want.count)")
                for (id, p) in got {
                    #expect(abs(p - (want[Int(id)] ?? -1)) < 1e-9, "case \(c): token \(id)")
                }
            }
        }
    }

    @Test func topKOneIsGreedy() {
        for seed in 0..<20 as Range<UInt64> {
            let logits = randomLogits(500, seed: seed, scale: 3)
            var sampler = Sampler(options: .init(temperature: 1.7, topK: 1, seed: seed))
            var a = logits, b = logits
            let sampled = a.withUnsafeMutableBufferPointer { sampler.sample($0) }
            let greedy = b.withUnsafeBufferPointer { TokenID(Sampler.argmax($0)) }
            #expect(sampled == greedy)
        }
    }

    @Test func aSeedReproducesTheSamples() {
        let logits = randomLogits(1000, seed: 7, scale: 2)
        func draw(_ seed: UInt64) -> [TokenID] {
            var sampler = Sampler(options: .init(temperature: 1, topP: 0.95, seed: seed))
            return (0..<200).map { _ in var l = logits; return l.withUnsafeMutableBufferPointer { sampler.sample($0) } }
        }
        #expect(draw(42) == draw(42))
        #expect(draw(42) != draw(43))
    }

    @Test func sampleFrequenciesFollowTheTemperedSoftmax() {
        let logits: [Float] = [1.0, 0.5, 0.0, -0.5, -1.0, 2.0]
        let options = SamplingOptions(temperature: 0.8, seed: 9)
        var sampler = Sampler(options: options)
        let draws = 40_000
        var counts = [Int](repeating: 0, count: logits.count)
        for _ in 0..<draws {
            var l = logits
            counts[Int(l.withUnsafeMutableBufferPointer { sampler.sample($0) })] += 1
        }
        let p = referenceDistribution(logits, options)
        for i in 0..<logits.count {
            let expected = p[i]! * Double(draws)
            let sigma = (expected * (1 - p[i]!)).squareRoot()
            #expect(abs(Double(counts[i]) - expected) < 5 * sigma, "token \(i): \(counts[i]) vs \(expected)")
        }
    }

    @Test func topPAndMinPKeepTheDocumentedSets() {
        // probabilities 0.5, 0.3, 0.12, 0.05, 0.03 at temperature 1
        let probs: [Double] = [0.5, 0.3, 0.12, 0.05, 0.03]
        let logits = probs.map { Float(log($0)) }
        func kept(_ o: SamplingOptions) -> [Int] {
            var s = Sampler(options: o)
            var l = logits
            return l.withUnsafeMutableBufferPointer { s.distribution($0) }.map { Int($0.0) }.sorted()
        }
        #expect(kept(.init(temperature: 1, topP: 0.7)) == [0, 1])       // 0.5 < 0.7 ≤ 0.8
        #expect(kept(.init(temperature: 1, topP: 0.85)) == [0, 1, 2])   // 0.8 < 0.85 ≤ 0.92
        #expect(kept(.init(temperature: 1, topP: 0.4)) == [0])
        #expect(kept(.init(temperature: 1, minP: 0.2)) == [0, 1, 2])    // threshold 0.1
        #expect(kept(.init(temperature: 1, minP: 0.7)) == [0])          // threshold 0.35
        #expect(kept(.init(temperature: 1, topK: 2)) == [0, 1])
        // The kept probabilities are renormalised.
        var s = Sampler(options: .init(temperature: 1, topK: 2))
        var l = logits
        let d = l.withUnsafeMutableBufferPointer { s.distribution($0) }
        #expect(abs(d.first { $0.0 == 0 }!.1 - 0.5 / 0.8) < 1e-6)
    }

    @Test func repetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOnce() {
        var logits: [Float] = [2, -2, 1, 0.5]
        logits.withUnsafeMutableBufferPointer {
            Sampler.applyRepetitionPenalty($0, seen: [0, 1, 0, 0], penalty: 2)
        }
        #expect(logits == [1, -4, 1, 0.5])
        // With greedy decoding the penalty moves the argmax off a repeated token.
        var sampler = Sampler(options: .init(repetitionPenalty: 3))
        var l: [Float] = [3, 2, -1]
        #expect(l.withUnsafeMutableBufferPointer { sampler.sample($0, seen: [0]) } == 1)
    }

    @Test func invalidOptionsAreRejected() {
        #expect(throws: GenerationError.self) { try SamplingOptions(temperature: -1).validate() }
        #expect(throws: GenerationError.self) { try SamplingOptions(topP: 0).validate() }
        #expect(throws: GenerationError.self) { try SamplingOptions(topP: 1.5).validate() }
        #expect(throws: GenerationError.self) { try SamplingOptions(minP: 2).validate() }
        #expect(throws: GenerationError.self) { try SamplingOptions(repetitionPenalty: 0).validate() }
        #expect(throws: GenerationError.self) { try SamplingOptions(topK: -3).validate() }
    }
}
