import Foundation
import Testing
import Gemma3Kernels
import Gemma3Model
import Gemma3Training

/// An independent, naive float64 implementation of HF Gemma 3 (written from shared/golden/README.md),
/// used to check the float32 model's forward pass and, by central finite differences, its gradients.
struct Reference64 {
    let c: Gemma3Config
    let layout: ParameterLayout

    init(_ c: Gemma3Config) { self.c = c; layout = ParameterLayout(config: c) }

    func rms(_ x: [Double], _ w: ArraySlice<Double>) -> [Double] {
        let ms = x.reduce(0) { $0 + $1 * $1 } / Double(x.count)
        let s = 1 / (ms + c.rmsNormEps).squareRoot()
        return x.indices.map { x[$0] * s * (1 + w[w.startIndex + $0]) }
    }

    /// y = W·x with W [out, in] stored at `offset`.
    func linear(_ p: [Double], _ offset: Int, out: Int, _ x: [Double]) -> [Double] {
        (0..<out).map { r in
            var s = 0.0
            for i in 0..<x.count { s += p[offset + r * x.count + i] * x[i] }
            return s
        }
    }

    func gelu(_ x: Double) -> Double { 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))) }

    /// Mean cross-entropy over the non-ignored targets, and the logits [B·T·V].
    func forward(_ p: [Double], ids: [Int32], targets: [Int32], B: Int, T: Int) -> (loss: Double, logits: [Double]) {
        let H = c.hiddenSize, hd = c.headDim, nh = c.numAttentionHeads, nkv = c.numKeyValueHeads, V = c.vocabSize
        let I = c.intermediateSize
        var logits: [Double] = []
        var total = 0.0, count = 0
        for b in 0..<B {
            var x: [[Double]] = (0..<T).map { t in
                let id = Int(ids[b * T + t])
                return (0..<H).map { p[layout.embedding + id * H + $0] * Double(Float(Double(H).squareRoot())) }
            }
            for l in 0..<c.numHiddenLayers {
                let o = layout.layers[l]
                let sliding = c.isSliding(layer: l)
                let theta = c.ropeTheta(layer: l)
                var q: [[Double]] = [], k: [[Double]] = [], v: [[Double]] = []
                for t in 0..<T {
                    let xn = rms(x[t], p[o.inputNorm..<(o.inputNorm + H)])
                    var qt = linear(p, o.qProj, out: nh * hd, xn)
                    var kt = linear(p, o.kProj, out: nkv * hd, xn)
                    v.append(linear(p, o.vProj, out: nkv * hd, xn))
                    func normRope(_ vec: inout [Double], heads: Int, w: Int) {
                        for h in 0..<heads {
                            var head = rms(Array(vec[(h * hd)..<((h + 1) * hd)]), p[w..<(w + hd)])
                            let half = hd / 2
                            let rotated = (0..<hd).map { d -> Double in
                                let k = d % half
                                let angle = Double(t) / pow(theta, Double(2 * k) / Double(hd))
                                let partner = d < half ? -head[d + half] : head[d - half]
                                return head[d] * cos(angle) + partner * sin(angle)
                            }
                            head = rotated
                            for d in 0..<hd { vec[h * hd + d] = head[d] }
                        }
                    }
                    normRope(&qt, heads: nh, w: o.qNorm)
                    normRope(&kt, heads: nkv, w: o.kNorm)
                    q.append(qt); k.append(kt)
                }
                let scale = 1 / c.queryPreAttnScalar.squareRoot()
                var attn = [[Double]](repeating: [Double](repeating: 0, count: nh * hd), count: T)
                for h in 0..<nh {
                    let g = h / (nh / nkv)
                    for i in 0..<T {
                        let visible = (0...i).filter { j in !sliding || j > i - c.slidingWindow }
                        let scores = visible.map { j in
                            (0..<hd).reduce(0.0) { $0 + q[i][h * hd + $1] * k[j][g * hd + $1] } * scale
                        }
                        let m = scores.max()!
                        let e = scores.map { exp($0 - m) }
                        let z = e.reduce(0, +)
                        for (n, j) in visible.enumerated() {
                            for d in 0..<hd { attn[i][h * hd + d] += e[n] / z * v[j][g * hd + d] }
                        }
                    }
                }
                for t in 0..<T {
                    let a = rms(linear(p, o.oProj, out: H, attn[t]), p[o.postAttentionNorm..<(o.postAttentionNorm + H)])
                    for i in 0..<H { x[t][i] += a[i] }
                    let xn = rms(x[t], p[o.preFeedforwardNorm..<(o.preFeedforwardNorm + H)])
                    let gate = linear(p, o.gateProj, out: I, xn), up = linear(p, o.upProj, out: I, xn)
                    let f = rms(linear(p, o.downProj, out: H, (0..<I).map { gelu(gate[$0]) * up[$0] }),
                                p[o.postFeedforwardNorm..<(o.postFeedforwardNorm + H)])
                    for i in 0..<H { x[t][i] += f[i] }
                }
            }
            for t in 0..<T {
                let xf = rms(x[t], p[layout.finalNorm..<(layout.finalNorm + H)])
                let row = linear(p, layout.outputProjection, out: V, xf)
                logits += row
                let target = Int(targets[b * T + t])
                if target >= 0 {
                    let m = row.max()!
                    let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
                    total += lse - row[target]
                    count += 1
                }
            }
        }
        return (count > 0 ? total / Double(count) : 0, logits)
    }
}

/// A tiny configuration for the checks.
func tinyConfig(heads: Int = 4, kvHeads: Int = 1, headDim: Int = 4, hidden: Int = 12, layers: Int = 3,
                window: Int = 3, tied: Bool = true, queryScalar: Double? = nil, vocab: Int = 23) -> Gemma3Config {
    Gemma3Config(
        vocabSize: vocab, hiddenSize: hidden, intermediateSize: 16, numHiddenLayers: layers,
        numAttentionHeads: heads, numKeyValueHeads: kvHeads, headDim: headDim, queryPreAttnScalar: queryScalar,
        slidingWindow: window, layerTypes: (0..<layers).map { $0 == layers - 1 ? .fullAttention : .slidingAttention },
        ropeThetaFull: 1_000_000, ropeThetaSliding: 10_000, tieWordEmbeddings: tied, maxPositionEmbeddings: 64)
}

/// Random weights large enough that every path matters: matrices N(0, 0.3²), norm weights N(0, 0.3²).
func randomParameters(_ config: Gemma3Config, seed: UInt64) -> ParameterStore {
    let store = ParameterStore(config: config)
    var rng = SplitMix64(seed: seed)
    for t in store.layout.tensors { rng.fillNormal(store.view(t), std: t.isMatrix ? 0.3 : 0.3) }
    return store
}

struct GradientCase: CustomStringConvertible, Sendable {
    let name: String
    let config: Gemma3Config
    var batch = 2
    var sequence = 7
    var description: String { name }
}

@Suite struct GradientCheckTests {
    static let cases: [GradientCase] = [
        GradientCase(name: "window 3 < sequence 7, MQA", config: tinyConfig()),
        GradientCase(name: "GQA with 2 KV heads", config: tinyConfig(kvHeads: 2)),
        GradientCase(name: "untied LM head", config: tinyConfig(tied: false)),
        GradientCase(name: "query_pre_attn_scalar 7 != head_dim 4", config: tinyConfig(queryScalar: 7)),
        GradientCase(name: "MHA, head_dim 6, window 1", config: tinyConfig(heads: 2, kvHeads: 2, headDim: 6, layers: 2, window: 1)),
        // Longer than one 32-row attention block: several query blocks, each with its own key range.
        GradientCase(name: "sequence 70, window 37, GQA", config: tinyConfig(kvHeads: 2, hidden: 8, layers: 2, window: 37),
                     batch: 1, sequence: 70),
    ]

    /// Forward matches the float64 reference; every parameter tensor's gradient matches central differences
    /// of the float64 loss on its largest and on random elements.
    @Test(arguments: cases)
    func gradientsMatchFiniteDifferences(_ testCase: GradientCase) throws {
        let config = testCase.config
        let B = testCase.batch, T = testCase.sequence
        let params = randomParameters(config, seed: 7)
        var rng = SplitMix64(seed: 11)
        let ids = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
        var targets = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
        targets[3] = -100  // ignored positions take no part in the mean
        targets[B * T - 1] = -100

        let model = try Gemma3TrainingModel(config: config, batchSize: B, sequenceLength: T, parameters: params)
        // Unfused: logits kept, cross-entropy gradient formed in backward.
        model.keepsLogits = true
        let loss = try model.forward(inputs: ids, targets: targets)
        let logits = Array(model.logits)
        model.zeroGradients()
        model.backward()
        let unfused = Array(model.gradients!.buffer)
        // Fused (the training default): the gradient is formed in the forward pass.
        model.keepsLogits = false
        let fusedLoss = try model.forward(inputs: ids, targets: targets)
        #expect(fusedLoss == loss)
        model.zeroGradients()
        model.backward()
        let grads = model.gradients!
        let fusedVsUnfused = zip(unfused, grads.buffer).map { abs($0 - $1) / (1e-5 + 1e-4 * abs($0)) }.max()!
        #expect(fusedVsUnfused <= 1, "fused vs unfused gradients differ (ratio to 1e-5 + 1e-4·|g|: \(fusedVsUnfused))")

        let reference = Reference64(config)
        var p = params.buffer.map(Double.init)
        let (refLoss, refLogits) = reference.forward(p, ids: ids, targets: targets, B: B, T: T)
        #expect(abs(Double(loss) - refLoss) < 1e-5, "loss \(loss) vs float64 \(refLoss)")
        let logitErr = zip(logits, refLogits).map { abs(Double($0) - $1) }.max()!
        #expect(logitErr < 1e-4, "logits max abs error \(logitErr)")

        let h = 1e-6
        for t in params.layout.tensors {
            let g = grads.view(t)
            var picks = Array((0..<t.count).sorted { abs(g[$0]) > abs(g[$1]) }.prefix(2))
            for _ in 0..<3 { picks.append(Int(rng.next() % UInt64(t.count))) }
            for e in picks {
                let i = t.offset + e
                let saved = p[i]
                p[i] = saved + h
                let up = reference.forward(p, ids: ids, targets: targets, B: B, T: T).loss
                p[i] = saved - h
                let down = reference.forward(p, ids: ids, targets: targets, B: B, T: T).loss
                p[i] = saved
                let fd = (up - down) / (2 * h)
                let ours = Double(g[e])
                #expect(abs(ours - fd) <= 1e-5 + 1e-3 * abs(fd), "\(t.name)[\(e)]: analytic \(ours) vs finite difference \(fd)")
            }
        }
    }

    /// A target equal to the ignore index contributes nothing; with all ignored, loss and gradients are zero.
    @Test func ignoredTargetsContributeNothing() throws {
        let config = tinyConfig()
        let params = randomParameters(config, seed: 3)
        let model = try Gemma3TrainingModel(config: config, batchSize: 1, sequenceLength: 5, parameters: params)
        model.ignoreIndex = 0
        model.keepsLogits = true
        let loss = try model.forward(inputs: [1, 2, 3, 4, 5], targets: [0, 0, 0, 0, 0])
        #expect(loss == 0)
        model.zeroGradients()
        model.backward()
        #expect(GradientClipping.globalNorm(UnsafeBufferPointer(model.gradients!.buffer)) == 0)
        // Only position 2 counts: the loss is that one position's cross-entropy.
        let one = try model.forward(inputs: [1, 2, 3, 4, 5], targets: [0, 0, 7, 0, 0])
        let row = Array(model.logits[(2 * config.vocabSize)..<(3 * config.vocabSize)]).map(Double.init)
        let m = row.max()!
        let expected = m + log(row.reduce(0) { $0 + exp($1 - m) }) - row[7]
        #expect(abs(Double(one) - expected) < 1e-5)
    }

    /// backward(lossScale:) scales every gradient (both classifier paths), and gradients accumulate across calls.
    @Test(arguments: [false, true])
    func lossScaleAndAccumulation(_ keepsLogits: Bool) throws {
        let config = tinyConfig(kvHeads: 2)
        let params = randomParameters(config, seed: 21)
        let model = try Gemma3TrainingModel(config: config, batchSize: 2, sequenceLength: 5, parameters: params)
        model.keepsLogits = keepsLogits
        let ids: [Int32] = [1, 5, 9, 2, 7, 3, 3, 8, 4, 4]
        let targets = Gemma3TrainingModel.nextTokenTargets(ids, batchSize: 2, sequenceLength: 5)
        model.zeroGradients()
        try model.forward(inputs: ids, targets: targets)
        model.backward()
        let full = Array(model.gradients!.buffer)
        model.zeroGradients()
        for _ in 0..<2 {
            try model.forward(inputs: ids, targets: targets)
            model.backward(lossScale: 0.25)
        }
        let accumulated = Array(model.gradients!.buffer)
        let worst = zip(full, accumulated).map { abs($0 * 0.5 - $1) }.max()!
        #expect(worst < 1e-7, "two backward(lossScale: 0.25) vs 0.5 × one backward: \(worst)")
        #expect(full.contains { $0 != 0 })
    }

    /// The buckets `backward(gradientsFinal:)` reports cover the store once, in `gradientBuckets` order, and
    /// none changes after it is reported (so a data-parallel sum started then sums the final values).
    @Test(arguments: [true, false])
    func gradientBucketsAreFinalWhenReported(_ tied: Bool) throws {
        let config = tinyConfig(kvHeads: 2, tied: tied)
        let params = randomParameters(config, seed: 5)
        let model = try Gemma3TrainingModel(config: config, batchSize: 2, sequenceLength: 5, parameters: params)
        let ids: [Int32] = [1, 5, 9, 2, 7, 3, 3, 8, 4, 4]
        let targets = Gemma3TrainingModel.nextTokenTargets(ids, batchSize: 2, sequenceLength: 5)
        model.zeroGradients()
        try model.forward(inputs: ids, targets: targets)
        model.backward()  // a first micro-batch: the buckets then hold partial sums
        try model.forward(inputs: ids, targets: targets)
        let gradients = model.gradients!.buffer
        var reported: [(Range<Int>, [Float])] = []
        model.backward { range in reported.append((range, Array(gradients[range]))) }
        #expect(reported.map(\.0) == model.parameters.layout.gradientBuckets)
        #expect(reported.map(\.0.count).reduce(0, +) == model.parameters.layout.count)
        #expect(Set(reported.flatMap { Array($0.0) }).count == model.parameters.layout.count)
        for (range, snapshot) in reported {
            #expect(Array(gradients[range]) == snapshot, "bucket \(range) changed after it was reported")
            #expect(snapshot.contains { $0 != 0 }, "bucket \(range) reported before any gradient reached it")
        }
    }

    /// Issue 18's probe: `train --batch-size 1000000000` aborted in the allocator; now a one-line error first.
    @Test func absurdBatchesAreRefusedBeforeAllocating() throws {
        let config = tinyConfig()
        for (b, t) in [(1_000_000_000, 64), (Int.max / 2, 4), (1 << 20, 1 << 10)] {
            #expect(throws: Gemma3ModelError.self) { _ = try Gemma3TrainingModel(config: config, batchSize: b, sequenceLength: t) }
        }
        // Within the token bound but past the machine's memory (a 262,144-token vocabulary's logits alone: 16 TiB).
        var wide = tinyConfig(vocab: 262_144)
        wide.maxPositionEmbeddings = 1 << 16
        do {
            _ = try Gemma3TrainingModel(config: wide, batchSize: 1 << 8, sequenceLength: 1 << 16)
            Issue.record("a 16 TiB workspace was accepted")
        } catch let e as Gemma3ModelError {
            #expect("\(e)".contains("GiB") && !"\(e)".contains("\n"), "\(e)")
        }
    }

    @Test func badTokensAreRejected() throws {
        let model = try Gemma3TrainingModel(config: tinyConfig(), batchSize: 1, sequenceLength: 3)
        #expect(throws: Gemma3ModelError.self) { try model.forward(inputs: [1, 2], targets: nil) }
        #expect(throws: Gemma3ModelError.self) { try model.forward(inputs: [1, 2, 23], targets: nil) }
        #expect(throws: Gemma3ModelError.self) { try model.forward(inputs: [1, 2, 3], targets: [1, -5, 2]) }
    }

    /// An evaluation model (no saved activations) computes the same loss as a training model.
    @Test func evaluationModelMatchesTrainingModel() throws {
        let config = tinyConfig(kvHeads: 2, tied: false)
        let params = randomParameters(config, seed: 5)
        let ids: [Int32] = [1, 5, 9, 2, 7, 3, 3, 8]
        let targets = Gemma3TrainingModel.nextTokenTargets(ids, batchSize: 2, sequenceLength: 4)
        let train = try Gemma3TrainingModel(config: config, batchSize: 2, sequenceLength: 4, parameters: params)
        train.keepsLogits = true
        let eval = try Gemma3TrainingModel(config: config, batchSize: 2, sequenceLength: 4, parameters: params, training: false)
        #expect(eval.gradients == nil)
        let a = try train.forward(inputs: ids, targets: targets)
        let b = try eval.forward(inputs: ids, targets: targets)
        #expect(a == b)
        #expect(Array(train.logits) == Array(eval.logits))
    }
}
