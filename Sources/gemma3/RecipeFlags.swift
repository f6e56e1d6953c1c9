import ArgumentParser
import Gemma3Training

/// The hyper-parameter flags of `train` and `finetune`: each overrides the recipe's value.
struct RecipeFlags: ParsableArguments {
    @Option(name: .customLong("learning-rate"), help: "Peak learning rate.") var learningRate: Double?
    @Option(name: .customLong("max-iters"), help: "Optimizer steps.") var maxIters: Int?
    @Option(name: .customLong("warmup-steps"), help: "Linear warm-up steps.") var warmupSteps: Int?
    @Option(name: .customLong("min-lr"), help: "Cosine floor (≤ learning rate).") var minLR: Double?
    @Option(name: .customLong("eval-interval"), help: "Evaluate every N steps.") var evalInterval: Int?
    @Option(name: .customLong("eval-iters"), help: "Batches per split per evaluation.") var evalIters: Int?
    @Option(name: .customLong("batch-size"), help: "Sequences per micro-batch.") var batchSize: Int?
    @Option(name: .customLong("block-size"), help: "Tokens per sequence.") var blockSize: Int?
    @Option(name: .customLong("gradient-accumulation-steps"), help: "Micro-batches per optimizer step.") var gradientAccumulationSteps: Int?
    @Option(name: .customLong("grad-clip"), help: "Global gradient-norm clip (0 = off).") var gradClip: Double?
    @Option(name: .customLong("weight-decay"), help: "AdamW decoupled weight decay (matrices only).") var weightDecay: Double?
    @Option(name: .customLong("beta1"), help: "AdamW β1.") var beta1: Double?
    @Option(name: .customLong("beta2"), help: "AdamW β2.") var beta2: Double?
    @Option(name: .customLong("eps"), help: "AdamW ε.") var eps: Double?
    @Option(name: .customLong("seed"), help: "Seed of the initial weights and the batch order.") var seed: UInt64?
    @Option(name: .customLong("dtype"), help: "f32 or bf16 (bf16: float32 master weights and moments, bf16 best/ checkpoint).") var dtype: String?
    @Option(name: .customLong("checkpoint-interval"), help: "Rewrite latest/ every N steps (default: the eval interval).") var checkpointInterval: Int?

    func validate() throws {
        if let dtype, TrainingDType(rawValue: dtype) == nil { throw ValidationError("--dtype must be f32 or bf16, got \"\(dtype)\"") }
    }

    /// `recipe` with every given flag applied.
    func apply(to r: inout TrainingRecipe) {
        if let v = learningRate { r.learningRate = v }
        if let v = maxIters { r.maxIters = v }
        if let v = warmupSteps { r.warmupSteps = v }
        if let v = minLR { r.minLR = v }
        if let v = evalInterval { r.evalInterval = v }
        if let v = evalIters { r.evalIters = v }
        if let v = batchSize { r.batchSize = v }
        if let v = blockSize { r.blockSize = v }
        if let v = gradientAccumulationSteps { r.gradientAccumulationSteps = v }
        if let v = gradClip { r.gradClip = v }
        if let v = weightDecay { r.weightDecay = v }
        if let v = beta1 { r.beta1 = v }
        if let v = beta2 { r.beta2 = v }
        if let v = eps { r.eps = v }
        if let v = seed { r.seed = v }
        if let v = dtype { r.dtype = TrainingDType(rawValue: v)! }
        if let v = checkpointInterval { r.checkpointInterval = v }
    }
}
