import Testing
import Gemma3Kernels
@testable import Gemma3Model

/// Native bfloat16 products (oneDNN on bfloat16 operands) and emulated ones (float32 products of
/// bfloat16-rounded operands) compute the same mixed-precision step: only the order of the float32
/// sums differs, which can move an intermediate across a bfloat16 rounding boundary, so the bound is a
/// small fraction of bfloat16's own error (the autocast comparisons allow 6e-2).
@Suite struct NativeBFloat16Tests {
    @Test("bf16 training step: native products give the emulated loss and gradients")
    func nativeMatchesEmulated() throws {
        guard PrefillPrecision.bfloat16Supported else {
            print("NOTICE: this CPU has no AVX-512 BF16: native bfloat16 training products were not compared (bf16 stays emulated here)")
            #expect(!RuntimeSettings().resolvedNativeBFloat16Products)
            return
        }
        // Wide enough that the products split over the workers and reach oneDNN's blocked kernels.
        let config = tinyConfig(heads: 4, kvHeads: 2, headDim: 16, hidden: 64, layers: 2, window: 8, tied: false, vocab: 300)
        let params = randomParameters(config, seed: 17)
        let (B, T) = (2, 24)
        var rng = SplitMix64(seed: 4)
        let ids = (0..<(B * T)).map { _ in Int32(rng.next() % 300) }
        let targets = Gemma3TrainingModel.nextTokenTargets(ids, batchSize: B, sequenceLength: T)
        var results: [(loss: Float, gradients: [Float])] = []
        for native in [false, true] {
            let model = try Gemma3TrainingModel(config: config, batchSize: B, sequenceLength: T, parameters: params,
                                                productPrecision: .bfloat16, nativeBFloat16: native)
            #expect(model.nativeBFloat16Products == native)
            model.gemmProfile = [:]
            model.zeroGradients()
            let loss = try model.forward(inputs: ids, targets: targets)
            model.backward()
            results.append((loss, Array(model.gradients!.buffer)))
            // The native model really ran its projections in bfloat16 (the profile names them so).
            let nativeProducts = model.gemmProfile!.keys.filter { $0.hasPrefix("bf16 ") }.count
            #expect(native ? nativeProducts >= 6 : nativeProducts == 0, "\(model.gemmProfile!.keys.sorted())")
        }
        #expect(abs(results[0].loss - results[1].loss) < 1e-3, "loss \(results[0].loss) vs \(results[1].loss)")
        for t in params.layout.tensors {
            let e = results[0].gradients[t.offset..<(t.offset + t.count)], n = results[1].gradients[t.offset..<(t.offset + t.count)]
            let diff = zip(e, n).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
            let norm = e.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
            #expect(diff <= 1e-2 * norm + 1e-7, "\(t.name): relative L2 \(diff / max(norm, 1e-30))")
        }
    }
}
