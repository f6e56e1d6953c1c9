import Foundation
import Testing
import Gemma3Formats
@testable import Gemma3Training

/// Paths of the read-only reference data beside the repository.
enum SharedData {
    static let root = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared")
    static let trainTiny = root.appendingPathComponent("golden/train-tiny")
    static let gpt2 = root.appendingPathComponent("data/gpt2")
}

@Suite struct RecipeTests {
    @Test func minLRAboveLearningRateIsRejected() throws {
        var r = TrainingRecipe.smoke
        r.minLR = r.learningRate * 5
        #expect(throws: TrainingError.self) { try r.validate() }
        do { try r.validate() } catch {
            #expect("\(error)".contains("min_lr"))
        }
        // The original project's uncorrected values are rejected the same way.
        let json = #"{"learning_rate": 1e-4, "min_lr": 5e-4}"#
        let uncorrected = try TrainingRecipe.decode(Data(json.utf8))
        #expect(throws: TrainingError.self) { try uncorrected.validate() }
    }

    @Test func nonsenseValuesAreRejectedWithTheFieldName() throws {
        let cases: [(WritableKeyPath<TrainingRecipe, Int>, Int, String)] = [
            (\.maxIters, 0, "max_iters"), (\.batchSize, 0, "batch_size"), (\.blockSize, 1, "block_size"),
            (\.gradientAccumulationSteps, 0, "gradient_accumulation_steps"), (\.evalIters, 0, "eval_iters"),
            (\.evalInterval, -1, "eval_interval"), (\.warmupSteps, -3, "warmup_steps"),
        ]
        for (key, value, name) in cases {
            var r = TrainingRecipe.smoke
            r[keyPath: key] = value
            do { try r.validate(); Issue.record("\(name) = \(value) accepted") } catch {
                #expect("\(error)".contains(name), "message for \(name): \(error)")
            }
        }
        var r = TrainingRecipe.smoke
        r.beta2 = 1
        #expect(throws: TrainingError.self) { try r.validate() }
        r = .smoke; r.learningRate = .nan
        #expect(throws: TrainingError.self) { try r.validate() }
        r = .smoke; r.gradClip = -1
        #expect(throws: TrainingError.self) { try r.validate() }
        for named in TrainingRecipe.named.values { try named.validate() }
    }

    @Test func jsonUsesSnakeCaseKeysAndRoundTrips() throws {
        let data = try JSONEncoder().encode(TrainingRecipe.original)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let expected: Set<String> = ["learning_rate", "max_iters", "warmup_steps", "min_lr", "eval_interval", "eval_iters",
                                     "batch_size", "block_size", "gradient_accumulation_steps", "grad_clip", "weight_decay",
                                     "beta1", "beta2", "eps", "seed", "dtype", "checkpoint_interval"]
        #expect(Set(object.keys) == expected)
        let back = try TrainingRecipe.decode(data)
        var original = TrainingRecipe.original
        original.checkpointInterval = original.effectiveCheckpointInterval
        #expect(back == original)
    }

    @Test func partialFilesTakeTheRestFromTheBaseAndTyposAreRejected() throws {
        let r = try TrainingRecipe.decode(Data(#"{"_base": "original", "max_iters": 10, "dtype": "f32"}"#.utf8))
        #expect(r.maxIters == 10 && r.dtype == .f32 && r.batchSize == 32 && r.learningRate == 1e-4)
        #expect(throws: TrainingError.self) { try TrainingRecipe.decode(Data(#"{"learning_rat": 1}"#.utf8)) }
        #expect(throws: TrainingError.self) { try TrainingRecipe.decode(Data(#"{"dtype": "fp8"}"#.utf8)) }
        #expect(throws: TrainingError.self) { try TrainingRecipe.decode(Data(#"{"batch_size": "many"}"#.utf8)) }
        #expect(throws: TrainingError.self) { try TrainingRecipe.load("no-such-recipe") }
    }

    @Test func originalRecipeCountsOptimizerSteps() {
        let o = TrainingRecipe.original
        // 150 000 micro-batches with 32-way accumulation.
        #expect(o.maxIters == 150_000 / 32)
        #expect(o.minLR <= o.learningRate)
        #expect(o.tokensPerStep == 32 * 128 * 32)
        #expect(o.gradClip == 0.5 && o.weightDecay == 0.1 && o.beta1 == 0.9 && o.beta2 == 0.95)
    }
}

@Suite struct ScheduleTests {
    @Test func matchesNanoGPTFormula() {
        let s = LearningRateSchedule(peak: 6e-4, minLR: 6e-5, warmupSteps: 10, decaySteps: 110)
        for it in 0..<130 {
            let expected: Double
            if it < 10 { expected = 6e-4 * Double(it + 1) / 11 }
            else if it > 110 { expected = 6e-5 }
            else { expected = 6e-5 + 0.5 * (1 + cos(Double.pi * Double(it - 10) / 100)) * (6e-4 - 6e-5) }
            #expect(abs(s(it) - expected) <= 1e-18, "step \(it)")
        }
        #expect(s(10) == 6e-4)                      // peak right after warm-up
        #expect(abs(s(110) - 6e-5) < 1e-18)         // floor at the end
        #expect(s(60) > s(61))                      // decays
    }

    @Test func matchesTheGoldenTrajectoryLearningRates() throws {
        let file = try SafeTensorsFile(url: SharedData.trainTiny.appendingPathComponent("trajectory.safetensors"))
        let golden = try file.floats("lr")
        let s = LearningRateSchedule(peak: 3e-3, minLR: 3e-4, warmupSteps: 3, decaySteps: 12)
        #expect(golden.count == 12)
        for (it, lr) in golden.enumerated() {
            #expect(abs(Float(s(it)) - lr) <= 1e-9 + 1e-7 * lr, "step \(it): \(s(it)) vs \(lr)")
        }
    }

    @Test func noWarmupAndDegenerateDecay() {
        let s = LearningRateSchedule(peak: 1e-3, minLR: 1e-4, warmupSteps: 0, decaySteps: 0)
        #expect(s(0) == 1e-4)
        let t = LearningRateSchedule(peak: 1e-3, minLR: 1e-4, warmupSteps: 0, decaySteps: 10)
        #expect(t(0) == 1e-3)
    }
}
