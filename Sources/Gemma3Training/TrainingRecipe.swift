import Foundation
import Gemma3Kernels

/// The training precision. Master weights, gradients and AdamW moments are always float32, and so are
/// checkpoints' `latest/` (exact resume).
public enum TrainingDType: String, Codable, Sendable, CaseIterable {
    /// Everything in float32.
    case f32
    /// Mixed precision as the original project's `torch.autocast("cpu", dtype=torch.bfloat16)`: every
    /// matrix product of the forward and the backward takes bfloat16 inputs and accumulates in float32
    /// (`ProductPrecision.bfloat16`); norms, RoPE, softmax, GELU, cross-entropy, the gradient norm and
    /// AdamW stay float32. `best/` is stored as bfloat16.
    case bf16

    /// The precision of the training products.
    public var productPrecision: ProductPrecision { self == .bf16 ? .bfloat16 : .float32 }
}

/// Every hyper-parameter of a pre-training run. JSON keys are the snake_case names of the original
/// project (`learning_rate`, `max_iters`, …), so a recipe file reads like its Python config.
///
/// All counts are **optimizer steps**: one step = `gradient_accumulation_steps` micro-batches of
/// `batch_size × block_size` tokens.
public struct TrainingRecipe: Codable, Equatable, Sendable {
    /// Peak learning rate, reached at the end of the warm-up.
    public var learningRate: Double
    /// Number of optimizer steps.
    public var maxIters: Int
    /// Linear warm-up length in optimizer steps.
    public var warmupSteps: Int
    /// Floor of the cosine decay (reached at `max_iters`). Must be ≤ `learning_rate`.
    public var minLR: Double
    /// Evaluate train/val loss every this many optimizer steps (and at the last step).
    public var evalInterval: Int
    /// Number of batches averaged per split at each evaluation.
    public var evalIters: Int
    /// Sequences per micro-batch.
    public var batchSize: Int
    /// Tokens per sequence (the model sees `block_size` inputs and predicts `block_size` targets).
    public var blockSize: Int
    /// Micro-batches whose gradients are summed (each scaled by 1/accum) before one optimizer step.
    public var gradientAccumulationSteps: Int
    /// Global gradient-norm clipping threshold; 0 disables clipping.
    public var gradClip: Double
    /// Decoupled weight decay, applied to parameters with ≥ 2 dimensions only.
    public var weightDecay: Double
    public var beta1: Double
    public var beta2: Double
    public var eps: Double
    /// Seeds the weight initialisation and the batch sampler.
    public var seed: UInt64
    public var dtype: TrainingDType
    /// Rewrite `latest/` every this many steps; nil means "the eval interval".
    public var checkpointInterval: Int?

    enum CodingKeys: String, CodingKey {
        case learningRate = "learning_rate"
        case maxIters = "max_iters"
        case warmupSteps = "warmup_steps"
        case minLR = "min_lr"
        case evalInterval = "eval_interval"
        case evalIters = "eval_iters"
        case batchSize = "batch_size"
        case blockSize = "block_size"
        case gradientAccumulationSteps = "gradient_accumulation_steps"
        case gradClip = "grad_clip"
        case weightDecay = "weight_decay"
        case beta1, beta2, eps, seed, dtype
        case checkpointInterval = "checkpoint_interval"
    }

    public init(
        learningRate: Double, maxIters: Int, warmupSteps: Int, minLR: Double,
        evalInterval: Int, evalIters: Int, batchSize: Int, blockSize: Int,
        gradientAccumulationSteps: Int, gradClip: Double = 0.5, weightDecay: Double = 0.1,
        beta1: Double = 0.9, beta2: Double = 0.95, eps: Double = 1e-8, seed: UInt64 = 1337,
        dtype: TrainingDType = .f32, checkpointInterval: Int? = nil
    ) {
        self.learningRate = learningRate; self.maxIters = maxIters; self.warmupSteps = warmupSteps
        self.minLR = minLR; self.evalInterval = evalInterval; self.evalIters = evalIters
        self.batchSize = batchSize; self.blockSize = blockSize
        self.gradientAccumulationSteps = gradientAccumulationSteps; self.gradClip = gradClip
        self.weightDecay = weightDecay; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
        self.seed = seed; self.dtype = dtype; self.checkpointInterval = checkpointInterval
    }

    /// Decodes a recipe; keys that are missing take the value of `base` (default: `cpu-small`),
    /// so a recipe file only needs the fields it changes. Unknown keys are rejected (typos would
    /// otherwise be silently ignored).
    public init(from decoder: Decoder) throws {
        try self.init(from: decoder, base: TrainingRecipe.cpuSmall)
    }

    init(from decoder: Decoder, base: TrainingRecipe) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let any = try decoder.container(keyedBy: AnyKey.self)
        let unknown = any.allKeys.map(\.stringValue).filter { CodingKeys(rawValue: $0) == nil && !$0.hasPrefix("_") }
        if let first = unknown.sorted().first {
            throw TrainingError.invalidRecipe("unknown recipe key \"\(first)\" (known: \(CodingKeys.allNames))")
        }
        learningRate = try c.decodeIfPresent(Double.self, forKey: .learningRate) ?? base.learningRate
        maxIters = try c.decodeIfPresent(Int.self, forKey: .maxIters) ?? base.maxIters
        warmupSteps = try c.decodeIfPresent(Int.self, forKey: .warmupSteps) ?? base.warmupSteps
        minLR = try c.decodeIfPresent(Double.self, forKey: .minLR) ?? base.minLR
        evalInterval = try c.decodeIfPresent(Int.self, forKey: .evalInterval) ?? base.evalInterval
        evalIters = try c.decodeIfPresent(Int.self, forKey: .evalIters) ?? base.evalIters
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? base.batchSize
        blockSize = try c.decodeIfPresent(Int.self, forKey: .blockSize) ?? base.blockSize
        gradientAccumulationSteps = try c.decodeIfPresent(Int.self, forKey: .gradientAccumulationSteps)
            ?? base.gradientAccumulationSteps
        gradClip = try c.decodeIfPresent(Double.self, forKey: .gradClip) ?? base.gradClip
        weightDecay = try c.decodeIfPresent(Double.self, forKey: .weightDecay) ?? base.weightDecay
        beta1 = try c.decodeIfPresent(Double.self, forKey: .beta1) ?? base.beta1
        beta2 = try c.decodeIfPresent(Double.self, forKey: .beta2) ?? base.beta2
        eps = try c.decodeIfPresent(Double.self, forKey: .eps) ?? base.eps
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? base.seed
        dtype = try c.decodeIfPresent(TrainingDType.self, forKey: .dtype) ?? base.dtype
        checkpointInterval = try c.decodeIfPresent(Int.self, forKey: .checkpointInterval) ?? base.checkpointInterval
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(maxIters, forKey: .maxIters)
        try c.encode(warmupSteps, forKey: .warmupSteps)
        try c.encode(minLR, forKey: .minLR)
        try c.encode(evalInterval, forKey: .evalInterval)
        try c.encode(evalIters, forKey: .evalIters)
        try c.encode(batchSize, forKey: .batchSize)
        try c.encode(blockSize, forKey: .blockSize)
        try c.encode(gradientAccumulationSteps, forKey: .gradientAccumulationSteps)
        try c.encode(gradClip, forKey: .gradClip)
        try c.encode(weightDecay, forKey: .weightDecay)
        try c.encode(beta1, forKey: .beta1)
        try c.encode(beta2, forKey: .beta2)
        try c.encode(eps, forKey: .eps)
        try c.encode(seed, forKey: .seed)
        try c.encode(dtype, forKey: .dtype)
        try c.encode(effectiveCheckpointInterval, forKey: .checkpointInterval)
    }

    /// `checkpoint_interval`, defaulting to the evaluation interval.
    public var effectiveCheckpointInterval: Int { checkpointInterval ?? evalInterval }

    /// Tokens consumed by one optimizer step.
    public var tokensPerStep: Int { batchSize * blockSize * gradientAccumulationSteps }

    /// Rejects values that cannot describe a sensible run, with a message naming the field.
    public func validate() throws {
        func fail(_ s: String) throws -> Never { throw TrainingError.invalidRecipe(s) }
        if !(learningRate.isFinite && learningRate > 0) { try fail("learning_rate must be a positive number, got \(learningRate)") }
        if !(minLR.isFinite && minLR >= 0) { try fail("min_lr must be ≥ 0, got \(minLR)") }
        if minLR > learningRate {
            try fail("min_lr (\(minLR)) is above learning_rate (\(learningRate)): the cosine \"decay\" would raise the learning rate; use min_lr ≤ learning_rate (e.g. learning_rate/10)")
        }
        if maxIters < 1 { try fail("max_iters must be ≥ 1 optimizer step, got \(maxIters)") }
        if warmupSteps < 0 { try fail("warmup_steps must be ≥ 0, got \(warmupSteps)") }
        if evalInterval < 1 { try fail("eval_interval must be ≥ 1, got \(evalInterval)") }
        if evalIters < 1 { try fail("eval_iters must be ≥ 1, got \(evalIters)") }
        if batchSize < 1 { try fail("batch_size must be ≥ 1, got \(batchSize)") }
        if blockSize < 2 { try fail("block_size must be ≥ 2, got \(blockSize)") }
        if gradientAccumulationSteps < 1 { try fail("gradient_accumulation_steps must be ≥ 1, got \(gradientAccumulationSteps)") }
        if !(gradClip.isFinite && gradClip >= 0) { try fail("grad_clip must be ≥ 0 (0 disables clipping), got \(gradClip)") }
        if !(weightDecay.isFinite && weightDecay >= 0 && weightDecay * learningRate < 1) {
            try fail("weight_decay must be ≥ 0 with weight_decay × learning_rate < 1, got \(weightDecay)")
        }
        if !(beta1 >= 0 && beta1 < 1) { try fail("beta1 must be in [0, 1), got \(beta1)") }
        if !(beta2 >= 0 && beta2 < 1) { try fail("beta2 must be in [0, 1), got \(beta2)") }
        if !(eps.isFinite && eps > 0) { try fail("eps must be a positive number, got \(eps)") }
        if let ci = checkpointInterval, ci < 1 { try fail("checkpoint_interval must be ≥ 1, got \(ci)") }
        // Far above any run, low enough that step counts + 1 and tokensPerStep cannot overflow.
        let counts = [("max_iters", maxIters), ("warmup_steps", warmupSteps), ("eval_interval", evalInterval), ("eval_iters", evalIters),
                      ("batch_size", batchSize), ("block_size", blockSize), ("gradient_accumulation_steps", gradientAccumulationSteps),
                      ("checkpoint_interval", checkpointInterval ?? 1)]
        for (name, value) in counts where value > Self.maximumCount { try fail("\(name) must be ≤ \(Self.maximumCount), got \(value)") }
        if tokensPerStepChecked == nil { try fail("batch_size × block_size × gradient_accumulation_steps must be ≤ \(Self.maximumCount)") }
    }

    /// The largest value `validate` accepts for a count (steps, sizes, tokens per step).
    public static let maximumCount = 1 << 40

    /// `tokensPerStep`, nil past `maximumCount` (checked: the factors come from a file).
    private var tokensPerStepChecked: Int? {
        let (a, o1) = batchSize.multipliedReportingOverflow(by: blockSize)
        let (b, o2) = a.multipliedReportingOverflow(by: gradientAccumulationSteps)
        return o1 || o2 || b > Self.maximumCount ? nil : b
    }

    // MARK: Named recipes

    /// The original PyTorch project's hyper-parameters (Gemma 3 270M on TinyStories, GPT-2
    /// tokenizer), with its two mistakes corrected:
    ///
    /// - `max_iters`: the original's 150 000 "iterations" were micro-batches with 32-way gradient
    ///   accumulation, i.e. 150 000 / 32 = 4 687 optimizer steps. Here every count is an optimizer
    ///   step, so `max_iters` = 4 687 keeps the same amount of data (4 687 × 32 × 32 × 128 ≈ 614M tokens).
    /// - `min_lr`: the original set 5e-4, above its peak of 1e-4, so its cosine "decay" actually
    ///   rose to 5× the peak. We use 5e-5 (the same digits one decade lower, half the peak).
    ///
    /// Kept as they were: peak 1e-4, warm-up 1 000, batch 32 × 128, accumulation 32, evaluation
    /// every 500 with 500 batches, clip 0.5, weight decay 0.1, betas (0.9, 0.95), bf16 autocast
    /// (here: `dtype` bf16, the same mixed precision). The original evaluated and warmed up in
    /// micro-batch units; here both are optimizer steps, which makes the warm-up 21% of the run —
    /// a conventional ratio — and gives ~10 evaluations per run.
    public static let original = TrainingRecipe(
        learningRate: 1e-4, maxIters: 4687, warmupSteps: 1000, minLR: 5e-5,
        evalInterval: 500, evalIters: 500, batchSize: 32, blockSize: 128,
        gradientAccumulationSteps: 32, gradClip: 0.5, weightDecay: 0.1,
        beta1: 0.9, beta2: 0.95, eps: 1e-8, seed: 1337, dtype: .bf16, checkpointInterval: nil)

    /// A 20–30 minute run of `tinystories-5m` on this 2-core CPU (≈ 3 200 tokens/s measured:
    /// 2 000 steps × 2 048 tokens ≈ 4.1M tokens, about 5 epochs of the 0.85M-token TinyStories
    /// sample). A higher peak than the original suits a model this small (3e-3 beat 1e-3 over the
    /// first 150 steps); min_lr = lr/10 as in nanoGPT.
    public static let cpuSmall = TrainingRecipe(
        learningRate: 2e-3, maxIters: 2000, warmupSteps: 100, minLR: 2e-4,
        evalInterval: 250, evalIters: 20, batchSize: 16, blockSize: 128,
        gradientAccumulationSteps: 1, gradClip: 0.5, weightDecay: 0.1,
        beta1: 0.9, beta2: 0.95, eps: 1e-8, seed: 1337, dtype: .f32, checkpointInterval: nil)

    /// The quickstart's recipe: what reached the lowest validation loss in 20 minutes on this
    /// project's 2-core machine (`tinystories-5m` at peak 3e-3), among two model sizes × two learning
    /// rates (the search is in docs/training.md). 1853 steps × 2 048 tokens.
    public static let quickstart = TrainingRecipe(
        learningRate: 0.003, maxIters: 1853, warmupSteps: 92, minLR: 0.0003,
        evalInterval: 370, evalIters: 20, batchSize: 16, blockSize: 128,
        gradientAccumulationSteps: 1, gradClip: 0.5, weightDecay: 0.1,
        beta1: 0.9, beta2: 0.95, eps: 1e-8, seed: 1337, dtype: .f32, checkpointInterval: nil)

    /// A run of a few seconds for smoke tests and CI.
    public static let smoke = TrainingRecipe(
        learningRate: 3e-3, maxIters: 20, warmupSteps: 4, minLR: 3e-4,
        evalInterval: 10, evalIters: 2, batchSize: 4, blockSize: 32,
        gradientAccumulationSteps: 2, gradClip: 0.5, weightDecay: 0.1,
        beta1: 0.9, beta2: 0.95, eps: 1e-8, seed: 1337, dtype: .f32, checkpointInterval: nil)

    /// `gemma3 finetune`'s default: LoRA's usual peak 2e-4 (the command lowers it to 2e-5 for full
    /// fine-tuning unless given), 4 examples of up to 256 tokens per step, clip 1.0, no weight decay,
    /// betas (0.9, 0.999) as PEFT's and TRL's defaults.
    public static let fineTune = TrainingRecipe(
        learningRate: 2e-4, maxIters: 100, warmupSteps: 10, minLR: 2e-5,
        evalInterval: 25, evalIters: 1, batchSize: 4, blockSize: 256,
        gradientAccumulationSteps: 1, gradClip: 1.0, weightDecay: 0,
        beta1: 0.9, beta2: 0.999, eps: 1e-8, seed: 1337, dtype: .f32, checkpointInterval: nil)

    /// Named recipes accepted by `--recipe NAME`.
    public static let named: [String: TrainingRecipe] = [
        "original": original, "cpu-small": cpuSmall, "quickstart": quickstart, "smoke": smoke, "finetune": fineTune,
    ]

    /// Resolves `--recipe`: a named recipe, or a JSON file whose missing keys come from `cpu-small`
    /// (or from the recipe named by its `"_base"` key).
    public static func load(_ nameOrPath: String) throws -> TrainingRecipe {
        if let r = named[nameOrPath] { return r }
        let url = URL(fileURLWithPath: nameOrPath)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TrainingError.invalidRecipe(
                "no recipe named \"\(nameOrPath)\" and no such file (named recipes: \(named.keys.sorted().joined(separator: ", ")))")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TrainingError.invalidRecipe("cannot read recipe file \(url.path): \(error.localizedDescription)")
        }
        return try decode(data, source: url.path)
    }

    /// Decodes recipe JSON (see `load`).
    public static func decode(_ data: Data, source: String = "recipe") throws -> TrainingRecipe {
        var base = cpuSmall
        if let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let b = obj["_base"] as? String {
            guard let r = named[b] else { throw TrainingError.invalidRecipe("\(source): unknown _base recipe \"\(b)\"") }
            base = r
        }
        do {
            let decoder = JSONDecoder()
            decoder.userInfo[TrainingRecipe.baseKey] = base
            return try decoder.decode(RecipeFile.self, from: data).recipe
        } catch let e as TrainingError {
            throw e
        } catch let DecodingError.typeMismatch(_, ctx), let DecodingError.valueNotFound(_, ctx) {
            let key = ctx.codingPath.map(\.stringValue).joined(separator: ".")
            throw TrainingError.invalidRecipe("\(source): bad value for \"\(key)\": \(ctx.debugDescription)")
        } catch let DecodingError.dataCorrupted(ctx) {
            let key = ctx.codingPath.map(\.stringValue).joined(separator: ".")
            throw TrainingError.invalidRecipe("\(source): invalid JSON\(key.isEmpty ? "" : " at \"\(key)\""): \(ctx.debugDescription)")
        } catch {
            throw TrainingError.invalidRecipe("\(source): \(error)")
        }
    }

    static let baseKey = CodingUserInfoKey(rawValue: "gemma3.recipe.base")!

    /// Wrapper so `decode` can pass the base recipe through `userInfo`.
    struct RecipeFile: Decodable {
        let recipe: TrainingRecipe
        init(from decoder: Decoder) throws {
            let base = decoder.userInfo[TrainingRecipe.baseKey] as? TrainingRecipe ?? .cpuSmall
            recipe = try TrainingRecipe(from: decoder, base: base)
        }
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { return nil }
    }
}

extension TrainingRecipe.CodingKeys: CaseIterable {
    static var allNames: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// Errors of the training library: each carries a one-line message for the command line.
public enum TrainingError: Error, CustomStringConvertible, LocalizedError {
    case invalidRecipe(String)
    case invalidData(String)
    case checkpoint(String)
    case nonFinite(String)
    case io(String)

    public var description: String {
        switch self {
        case .invalidRecipe(let s): return "invalid training recipe: \(s)"
        case .invalidData(let s): return "invalid training data: \(s)"
        case .checkpoint(let s): return "checkpoint: \(s)"
        case .nonFinite(let s): return "training diverged: \(s)"
        case .io(let s): return s
        }
    }
    public var errorDescription: String? { description }
}
