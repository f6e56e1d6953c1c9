import Foundation
import Testing
import Gemma3Formats
import Gemma3Model
@testable import Gemma3Training

/// Replays `../shared/golden/train-tiny`: 12 optimizer steps of HF Gemma3ForCausalLM trained by
/// torch.optim.AdamW with accumulation, clipping and nanoGPT's schedule, and compares every
/// per-step figure and the final weights and moments.
@Suite struct TrajectoryReplayTests {
    @Test func twelveStepsMatchPyTorch() throws {
        let dir = SharedData.trainTiny
        let config = try Gemma3Config.load(from: dir.appendingPathComponent("config.json"))
        let hp = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("hyperparameters.json"))) as? [String: Any])
        func d(_ k: String) -> Double { (hp[k] as! NSNumber).doubleValue }
        func i(_ k: String) -> Int { (hp[k] as! NSNumber).intValue }
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("trajectory.safetensors"))

        let parameters = ParameterStore(config: config)
        try parameters.load(from: file, allowUnexpected: true, prefix: "init.")
        let batchSize = i("batch_size"), block = i("block_size"), accum = i("gradient_accumulation_steps"), steps = i("max_iters")
        let batches = try file.integers("batches")  // [steps, accum, batch, block + 1]
        #expect(batches.count == steps * accum * batchSize * (block + 1))
        let goldenLoss = try file.floats("loss"), goldenNorm = try file.floats("grad_norm"), goldenLR = try file.floats("lr")

        let model = try Gemma3TrainingModel(config: config, batchSize: batchSize, sequenceLength: block, parameters: parameters, training: true)
        let optimizer = OptimizerState(layout: parameters.layout,
                                       hyper: AdamWHyperparameters(beta1: d("beta1"), beta2: d("beta2"), eps: d("eps"), weightDecay: d("weight_decay")))
        let schedule = LearningRateSchedule(peak: d("learning_rate"), minLR: d("min_lr"), warmupSteps: i("warmup_iters"), decaySteps: steps)
        var inputs = [Int32](repeating: 0, count: batchSize * block), targets = inputs
        var windows = [Int32](repeating: 0, count: batchSize * (block + 1))
        for step in 0..<steps {
            let outcome = try inputs.withUnsafeMutableBufferPointer { inp in
                try targets.withUnsafeMutableBufferPointer { tgt in
                    try trainingStep(model: model, optimizer: optimizer, learningRate: schedule(step), gradClip: d("grad_clip"),
                                     accumulation: accum, inputs: inp, targets: tgt) { k in
                        let base = (step * accum + k) * batchSize * (block + 1)
                        for j in 0..<windows.count { windows[j] = Int32(batches[base + j]) }
                        windows.withUnsafeBufferPointer { w in
                            BatchSampler.split(windows: w, batchSize: batchSize, blockSize: block, inputs: inp, targets: tgt)
                        }
                    }
                }
            }
            #expect(outcome.applied)
            #expect(abs(outcome.loss - Double(goldenLoss[step])) <= 1e-4 * Double(goldenLoss[step]), "step \(step) loss \(outcome.loss) vs \(goldenLoss[step])")
            #expect(abs(outcome.gradNorm - Double(goldenNorm[step])) <= 1e-4 * Double(goldenNorm[step]), "step \(step) grad norm \(outcome.gradNorm) vs \(goldenNorm[step])")
            #expect(abs(Float(outcome.learningRate) - goldenLR[step]) <= 1e-7 * goldenLR[step], "step \(step) lr")
        }
        #expect(optimizer.adamStep == steps)

        var worstP = 0.0, worstM = 0.0, worstV = 0.0
        for t in parameters.layout.tensors {
            let p = try file.floats("final." + t.name), m = try file.floats("adam.m." + t.name), v = try file.floats("adam.v." + t.name)
            let ours = parameters.view(t), om = optimizer.m.view(t), ov = optimizer.v.view(t)
            for j in 0..<t.count {
                worstP = max(worstP, Double(abs(ours[j] - p[j])))
                worstM = max(worstM, Double(abs(om[j] - m[j])))
                worstV = max(worstV, Double(abs(ov[j] - v[j])) / (Double(abs(v[j])) + 1e-12))
            }
        }
        #expect(worstP <= 1e-4, "final weights max |Δ| \(worstP)")
        #expect(worstM <= 1e-4, "m max |Δ| \(worstM)")
        #expect(worstV <= 1e-3, "v max relative Δ \(worstV)")
        print("train-tiny replay: weights max |Δ| \(worstP), m \(worstM), v rel \(worstV)")
    }
}
