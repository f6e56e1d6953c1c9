import Foundation

/// nanoGPT's learning-rate rule: linear warm-up, then cosine decay to `minLR` at `decaySteps`,
/// then constant `minLR`. `step` is the optimizer step, counted from 0.
///
///     step < warmup:        lr · (step + 1) / (warmup + 1)
///     step > decaySteps:    min_lr
///     otherwise:            min_lr + ½(1 + cos(π · (step − warmup) / (decaySteps − warmup))) · (lr − min_lr)
///
/// Computed in double precision, as Python does; AdamW converts the result to float32 once.
public struct LearningRateSchedule: Sendable, Equatable {
    public var peak: Double
    public var minLR: Double
    public var warmupSteps: Int
    /// End of the cosine (nanoGPT's `lr_decay_iters`); the trainer uses `max_iters`.
    public var decaySteps: Int

    public init(peak: Double, minLR: Double, warmupSteps: Int, decaySteps: Int) {
        self.peak = peak; self.minLR = minLR; self.warmupSteps = warmupSteps; self.decaySteps = decaySteps
    }

    public init(recipe: TrainingRecipe) {
        self.init(peak: recipe.learningRate, minLR: recipe.minLR, warmupSteps: recipe.warmupSteps, decaySteps: recipe.maxIters)
    }

    /// The learning rate of optimizer step `step` (0-based).
    public func callAsFunction(_ step: Int) -> Double {
        if step < warmupSteps {
            return peak * Double(step + 1) / Double(warmupSteps + 1)
        }
        if step > decaySteps || decaySteps <= warmupSteps {
            return minLR
        }
        let ratio = Double(step - warmupSteps) / Double(decaySteps - warmupSteps)
        let coeff = 0.5 * (1.0 + cos(Double.pi * ratio))
        return minLR + coeff * (peak - minLR)
    }
}
