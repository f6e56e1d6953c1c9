import Dispatch
import Foundation
import Gemma3Formats
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Model

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A thread-safe "please stop" flag, set by the program's SIGINT/SIGTERM handler and polled by the
/// trainer between steps (and between evaluation batches).
public final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var signalNumber: Int32?

    public init() {}

    /// The signal that requested the stop (or 0 for a programmatic request), nil while running.
    public var requested: Int32? { lock.lock(); defer { lock.unlock() }; return signalNumber }

    /// Asks the trainer to finish the current step, save `latest/` and return; the first request wins.
    public func request(signal: Int32 = 0) {
        lock.lock(); defer { lock.unlock() }
        if signalNumber == nil { signalNumber = signal }
    }
}

/// AdamW state over the model's flat parameter layout: moments `m`, `v` and torch's step count.
public final class OptimizerState {
    public let m: ParameterStore
    public let v: ParameterStore
    /// Updates applied so far (the bias-correction exponent of the next update is `adamStep + 1`).
    public var adamStep: Int
    public let segments: [ParameterSegment]
    public var hyper: AdamWHyperparameters

    public init(layout: ParameterLayout, hyper: AdamWHyperparameters, moments: TrainingCheckpoint.Moments? = nil, adamStep: Int = 0) {
        m = moments?.m ?? ParameterStore(layout: layout)
        v = moments?.v ?? ParameterStore(layout: layout)
        self.adamStep = adamStep
        self.hyper = hyper
        segments = ParameterSegment.from(layout: layout)
    }

    /// State over weights that are not a model's layout (a LoRA adapter's factors): `count` floats,
    /// all decayed (every factor is a matrix).
    public init(count: Int, hyper: AdamWHyperparameters, moments: TrainingCheckpoint.Moments? = nil, adamStep: Int = 0) {
        m = moments?.m ?? ParameterStore(layout: .flat(count: count))
        v = moments?.v ?? ParameterStore(layout: .flat(count: count))
        self.adamStep = adamStep
        self.hyper = hyper
        segments = ParameterSegment.from(tensors: [(count: count, decay: true)])
    }
}

/// What one optimizer step did.
public struct StepOutcome: Sendable, Equatable {
    /// Mean of the micro-batch losses.
    public var loss: Double
    /// Global gradient norm of the accumulated gradient, before clipping.
    public var gradNorm: Double
    public var learningRate: Double
    /// False when the step was skipped because the loss or the gradient was not finite.
    public var applied: Bool
    /// Wall seconds of the gradient norm, clipping and AdamW update (the rest of the step is
    /// zeroing the gradients, filling the micro-batches, forward and backward).
    public var optimizerSeconds: Double
    /// Wall seconds the step waited for the sums of the gradients and losses over a data-parallel
    /// group after its backward (0 without one): the all-reduce time the overlap did not hide.
    public var allReduceSeconds: Double = 0
    /// Seconds the group's communication spent summing this step's gradients, overlapped or not.
    public var allReduceBusySeconds: Double = 0
}

/// One optimizer step, nanoGPT style and exactly as the golden trajectory was produced:
/// for each of `accumulation` micro-batches, forward and backward of `loss / accumulation`;
/// then the global norm of the summed gradient, clipping to `gradClip`, and one AdamW update.
/// A non-finite loss or gradient skips the update (weights and moments untouched).
///
/// With a data-parallel `group`, micro-batch k is computed by rank k mod N (every rank still calls
/// `fillMicroBatch` for every k, so the data order is the single-process one), the gradients and
/// losses are summed over the group, and every rank steps identically with rank 0's gradient norm.
///
/// - Parameter fillMicroBatch: writes micro-batch `k`'s inputs and targets ([B·T] each).
public func trainingStep(
    model: Gemma3TrainingModel, optimizer: OptimizerState, learningRate: Double, gradClip: Double, accumulation: Int,
    inputs: UnsafeMutableBufferPointer<Int32>, targets: UnsafeMutableBufferPointer<Int32>,
    group: (any DataParallelGroup)? = nil,
    fillMicroBatch: (Int) throws -> Void
) throws -> StepOutcome {
    guard let gradients = model.trainableGradients else { throw TrainingError.invalidData("trainingStep needs a model created with training: true") }
    let trained = model.trainableParameters
    let (rank, ranks) = (group?.rank ?? 0, group?.size ?? 1)
    try checkMicroBatchShare(accumulation: accumulation, ranks: ranks)
    model.zeroGradients()
    var lossSum = 0.0
    let scale = 1 / Float(accumulation)
    // With an overlapping group, the last local micro-batch's backward hands each finished gradient
    // bucket to the group's communication thread; the sums run while the layers below are computed.
    let lastLocal = accumulation - ranks + rank
    var bucketError: (any Error)?
    for k in 0..<accumulation {
        try fillMicroBatch(k)
        guard k % ranks == rank else { continue }
        // Dropout masks (LoRA) from the update count and the micro-batch: the same after a resume.
        model.loraDropoutSeed = UInt64(optimizer.adamStep) &* 0x100_0000 &+ UInt64(k)
        let loss = try model.forward(inputs: UnsafeBufferPointer(inputs), targets: UnsafeBufferPointer(targets))
        lossSum += Double(loss)
        if let group, group.overlapsAllReduce, k == lastLocal, model.lora == nil {
            model.backward(lossScale: scale) { range in
                guard bucketError == nil else { return }
                do { try group.startAllReduceSum(UnsafeMutableBufferPointer(rebasing: gradients.buffer[range])) } catch { bucketError = error }
            }
        } else {
            model.backward(lossScale: scale)
        }
    }
    var reduceSeconds = 0.0, reduceBusySeconds = 0.0
    if let group {
        let t0 = DispatchTime.now().uptimeNanoseconds
        if group.overlapsAllReduce && model.lora == nil {
            reduceBusySeconds = try group.finishAllReduceSums()
            if let bucketError { throw bucketError }
        } else {
            try group.allReduceSum(gradients.buffer)
        }
        lossSum = try group.sum(lossSum)
        reduceSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        if !group.overlapsAllReduce || model.lora != nil { reduceBusySeconds = reduceSeconds }
    }
    let loss = lossSum / Double(accumulation)
    let optimizerStart = DispatchTime.now().uptimeNanoseconds
    func optimizerSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds - optimizerStart) * 1e-9 }
    var norm = GradientClipping.globalNorm(UnsafeBufferPointer(gradients.buffer))
    // Ranks with other thread counts could round the norm differently; rank 0's is the one.
    if let group { norm = try group.valueOfRankZero(norm) }
    guard loss.isFinite, norm.isFinite else {
        return StepOutcome(loss: loss, gradNorm: norm, learningRate: learningRate, applied: false, optimizerSeconds: optimizerSeconds(),
                           allReduceSeconds: reduceSeconds, allReduceBusySeconds: reduceBusySeconds)
    }
    let clip = GradientClipping.scale(totalNorm: norm, maxNorm: gradClip)
    optimizer.adamStep += 1
    AdamW.update(parameters: trained.buffer, gradients: UnsafeBufferPointer(gradients.buffer),
                 m: optimizer.m.buffer, v: optimizer.v.buffer, segments: optimizer.segments, step: optimizer.adamStep,
                 learningRate: learningRate, gradScale: clip, hyper: optimizer.hyper)
    trained.markModified()
    return StepOutcome(loss: loss, gradNorm: norm, learningRate: learningRate, applied: true, optimizerSeconds: optimizerSeconds(),
                       allReduceSeconds: reduceSeconds, allReduceBusySeconds: reduceBusySeconds)
}

/// Entropy of the token frequencies of a file, in bits per token: the cross-entropy of the best
/// model that ignores context. A trained model's validation loss should fall well below it.
public func unigramEntropyBits(_ tokens: TokenFile) -> Double {
    let n = tokens.count
    guard n > 0 else { return 0 }
    let workers = max(1, min(Parallel.threadCount, 8))
    var counts = [Int](repeating: 0, count: 65536 * workers)
    let src = UncheckedSendable(tokens.tokens.baseAddress!)
    counts.withUnsafeMutableBufferPointer { c in
        let c = UncheckedSendable(c.baseAddress!)
        Parallel.forEach(workers) { w in
            let base = c.value + w * 65536
            for i in (n * w / workers)..<(n * (w + 1) / workers) { base[Int(src.value[i])] += 1 }
        }
    }
    var h = 0.0
    for t in 0..<65536 {
        var k = 0
        for w in 0..<workers { k += counts[w * 65536 + t] }
        if k > 0 { let p = Double(k) / Double(n); h -= p * log2(p) }
    }
    return h
}

/// Settings of one `gemma3 train` invocation.
public struct TrainerOptions {
    public var dataDirectory: URL
    public var runDirectory: URL
    /// The model to train (ignored on resume, where `latest/config.json` rules; must then match if given).
    public var config: Gemma3Config
    /// How the model was named on the command line (preset or config path), for logs and the report.
    public var modelName: String
    public var recipe: TrainingRecipe
    /// Continue the run in `runDirectory` (from `latest/`) if there is one.
    public var resume: Bool
    /// GPT-2 files copied into checkpoints; nil = the directory recorded in meta.json, if it exists.
    public var tokenizerDirectory: URL?
    /// Stop with an error after this many non-finite steps in a row.
    public var maxConsecutiveNonFinite = 5
    /// Without `resume`: replace a run already in `runDirectory` (its `best/` and `latest/` are
    /// deleted) instead of refusing to start.
    public var replaceExisting = false
    /// Behave as if interrupted once this many steps are complete (tests).
    public var stopAfterStep: Int?
    /// Train data parallel with these processes (nil: alone). Every member runs a `Trainer` with the
    /// same options; rank 0 alone writes metrics and checkpoints and tells its observer.
    public var group: (any DataParallelGroup)?
    /// The data; nil: the token files of `dataDirectory` (`TokenFileCorpus`).
    public var corpus: (any TrainingCorpus)?
    /// Fine-tuning: the weights a new run starts from (nil: a random initialisation from the seed).
    public var initialParameters: ParameterStore?
    /// Fine-tuning with LoRA: the adapter's shape. The base weights (`initialParameters`) stay frozen;
    /// `best/` and `latest/` hold PEFT adapter directories.
    public var lora: LoRASettings?
    /// What the adapter's `base_model_name_or_path` says.
    public var baseModelName = ""
    /// Writes tokenizer files into a checkpoint directory (fine-tuning a Gemma vocabulary; the GPT-2
    /// files of `tokenizerDirectory` are copied without it).
    public var tokenizerWriter: ((URL) throws -> Void)?

    public init(dataDirectory: URL, runDirectory: URL, config: Gemma3Config, modelName: String, recipe: TrainingRecipe,
                resume: Bool = false, tokenizerDirectory: URL? = nil) {
        self.dataDirectory = dataDirectory; self.runDirectory = runDirectory; self.config = config
        self.modelName = modelName; self.recipe = recipe; self.resume = resume; self.tokenizerDirectory = tokenizerDirectory
    }

    /// A fine-tuning run: `corpus` from `data`, starting from `parameters` (LoRA on top of them when
    /// `lora` is given, else every weight trained).
    public init(fineTuning corpus: any TrainingCorpus, data: URL, runDirectory: URL, config: Gemma3Config, parameters: ParameterStore,
                modelName: String, recipe: TrainingRecipe, lora: LoRASettings?, resume: Bool = false) {
        self.init(dataDirectory: data, runDirectory: runDirectory, config: config, modelName: modelName, recipe: recipe, resume: resume)
        self.corpus = corpus; self.initialParameters = parameters; self.lora = lora; self.baseModelName = modelName
    }
}

/// How a run ended.
public struct TrainingSummary: Sendable {
    /// Optimizer steps completed (== max_iters unless interrupted).
    public var step: Int
    /// Set when a signal (or `stopAfterStep`) ended the run early; `latest/` holds the state.
    public var interruptedBy: Int32?
    public var lastEval: EvalMetrics?
    public var bestValLoss: Double?
    public var unigramEntropyBits: Double
    /// Median tokens/s over the steps of this invocation.
    public var tokensPerSecond: Double
}

/// The pre-training loop (nanoGPT's, made resumable):
///
///     for step in start..<max_iters:
///         lr = schedule(step); accumulate micro-batches; clip; AdamW      → metrics "step"
///         every eval_interval (and at the end): mean loss over eval_iters
///             batches of train and val, perplexity, bits/byte             → metrics "eval", best/
///         every checkpoint_interval (and at the end, or on SIGINT/SIGTERM): latest/
public final class Trainer {
    public let options: TrainerOptions
    public let stopFlag: StopFlag
    /// Receives the run's progress; nil: nobody is told (the metrics file is written regardless).
    public let observer: (any TrainingObserver)?
    public private(set) var config: Gemma3Config
    public private(set) var recipe: TrainingRecipe

    private let corpus: any TrainingCorpus
    private let tokenizerDirectory: URL?
    private var metricsHandle: FileHandle?
    private var runLock: RunDirectoryLock?

    public init(options: TrainerOptions, stopFlag: StopFlag = StopFlag(), observer: (any TrainingObserver)? = nil) throws {
        self.options = options
        self.stopFlag = stopFlag
        self.observer = observer
        self.config = options.config
        var recipe = options.recipe
        // Saved recipes always carry an explicit checkpoint interval; normalise so resume compares equal.
        recipe.checkpointInterval = recipe.effectiveCheckpointInterval
        self.recipe = recipe
        try recipe.validate()
        if let given = options.corpus {
            corpus = given
            tokenizerDirectory = options.tokenizerDirectory
        } else {
            let files = try TokenFileCorpus(directory: options.dataDirectory)
            corpus = files
            if let t = options.tokenizerDirectory {
                tokenizerDirectory = t
            } else {
                let recorded = URL(fileURLWithPath: files.meta.tokenizer.directory, isDirectory: true)
                tokenizerDirectory = FileManager.default.fileExists(atPath: recorded.path) ? recorded : nil
            }
        }
        if options.lora != nil && options.initialParameters == nil {
            throw TrainingError.invalidData("LoRA needs the base model's weights (TrainerOptions.initialParameters)")
        }
    }

    private func appendMetrics(_ r: MetricsRecord) {
        metricsHandle?.write(Data((r.jsonLine + "\n").utf8))
    }

    /// Rank 0 of the group (or the only process): the one that writes.
    private var isLeader: Bool { (options.group?.rank ?? 0) == 0 }
    private var worldSize: Int { options.group?.size ?? 1 }
    /// What the observer hears: rank 0's trainer only.
    private var reporter: (any TrainingObserver)? { isLeader ? observer : nil }

    /// Runs (or resumes) training to `max_iters`, or until a stop is requested.
    public func run() throws -> TrainingSummary {
        let fm = FileManager.default
        let run = options.runDirectory
        let group = options.group
        try checkMicroBatchShare(accumulation: recipe.gradientAccumulationSteps, ranks: worldSize)
        if isLeader {
            try fm.createDirectory(at: run, withIntermediateDirectories: true)
            runLock = try RunDirectoryLock(run)
            try TrainingCheckpoint.recover(runDirectory: run, name: TrainingCheckpoint.latest)
            try TrainingCheckpoint.recover(runDirectory: run, name: TrainingCheckpoint.best)
        }
        // The others read the run directory only after rank 0 has repaired it.
        try group?.barrier()
        defer { runLock = nil }

        // --- The data is checked whole before anything is replaced (--force used to delete the old run
        // first and then fail on a vocabulary mismatch, leaving nothing).
        if let recorded = corpus.recordedVocabularySize, recorded > config.vocabSize {
            throw TrainingError.invalidData("\(options.dataDirectory.path) was tokenized with a \(recorded)-token vocabulary but the model has \(config.vocabSize)")
        }
        let largest = corpus.largestToken()
        guard largest.id < config.vocabSize else {
            throw TrainingError.invalidData("\(largest.location) holds token id \(largest.id), outside the model's vocabulary of \(config.vocabSize)")
        }

        // --- Weights, optimizer and loop state: fresh or from latest/.
        let parameters: ParameterStore
        let optimizer: OptimizerState
        var state: TrainerState
        let lora = options.lora.map { LoRAWeights(config: config, settings: $0) }
        let hasLatest = TrainingCheckpoint.exists(runDirectory: run, name: TrainingCheckpoint.latest)
        if options.resume && hasLatest, let lora, let base = options.initialParameters {
            let summary = try TrainingCheckpoint.latestSummary(runDirectory: run)
            guard summary?.config == options.config else {
                throw TrainingError.checkpoint("--resume: the model of \(run.path)/latest differs from the one given")
            }
            let r = try TrainingCheckpoint.loadLatestAdapter(runDirectory: run, config: config, into: lora)
            guard r.state.recipe == recipe else {
                throw TrainingError.checkpoint("--resume continues a run exactly, but the recipe differs from the saved one: \(Trainer.recipeDifference(r.state.recipe, recipe))")
            }
            guard r.state.trainTokens == corpus.trainTokenCount else {
                throw TrainingError.checkpoint("--resume: the run was trained on \(r.state.trainTokens) train tokens, the data given has \(corpus.trainTokenCount)")
            }
            guard r.state.lora == options.lora else {
                throw TrainingError.checkpoint("--resume: the run's LoRA settings differ from those given")
            }
            parameters = base
            state = r.state
            optimizer = OptimizerState(count: lora.count, hyper: AdamWHyperparameters(recipe: recipe), moments: r.moments, adamStep: state.adamStep)
        } else if options.resume && hasLatest {
            let r = try TrainingCheckpoint.loadLatest(runDirectory: run)
            guard r.config == options.config else {
                throw TrainingError.checkpoint("--resume: the model of \(run.path)/latest differs from the one given (drop --preset/--config or pass the same one)")
            }
            guard r.state.recipe == recipe else {
                throw TrainingError.checkpoint("--resume continues a run exactly, but the recipe differs from the saved one: \(Trainer.recipeDifference(r.state.recipe, recipe))")
            }
            guard r.state.trainTokens == corpus.trainTokenCount else {
                throw TrainingError.checkpoint("--resume: the run was trained on \(r.state.trainTokens) train tokens, \(options.dataDirectory.path) has \(corpus.trainTokenCount)")
            }
            guard r.state.lora == nil else { throw TrainingError.checkpoint("--resume: \(run.path) holds a LoRA run; give the same --method lora settings") }
            parameters = r.parameters
            state = r.state
            optimizer = OptimizerState(layout: parameters.layout, hyper: AdamWHyperparameters(recipe: recipe), moments: r.moments, adamStep: state.adamStep)
        } else {
            if hasLatest || TrainingCheckpoint.exists(runDirectory: run, name: TrainingCheckpoint.best) {
                guard options.replaceExisting else {
                    throw TrainingError.checkpoint("\(run.path) already holds a run; add --resume to continue it, --force to replace it, or choose another --out")
                }
                try group?.barrier()  // everyone has seen what was there before it goes
                if isLeader {
                    for name in [TrainingCheckpoint.latest, TrainingCheckpoint.best] {
                        try? fm.removeItem(at: run.appendingPathComponent(name))
                    }
                }
            }
            if options.resume { reporter?.trainingWarning("--resume: no checkpoint in \(run.path) yet; starting from scratch") }
            if let initial = options.initialParameters {
                parameters = initial
            } else {
                parameters = ParameterStore(config: config)
                parameters.initializeForTraining(config: config, seed: recipe.seed)
            }
            if let lora {
                lora.initialize(seed: recipe.seed)
                optimizer = OptimizerState(count: lora.count, hyper: AdamWHyperparameters(recipe: recipe))
            } else {
                optimizer = OptimizerState(layout: parameters.layout, hyper: AdamWHyperparameters(recipe: recipe))
            }
            let start = try corpus.trainSampler(batchSize: recipe.batchSize, blockSize: recipe.blockSize, seed: recipe.seed, state: nil).state
            state = TrainerState(step: 0, adamStep: 0, samplerState: start, bestValLoss: nil,
                                 consecutiveNonFinite: 0, pendingEval: true, elapsedSeconds: 0, recipe: recipe,
                                 trainTokens: corpus.trainTokenCount, model: options.modelName)
            state.lora = options.lora
        }
        // Every rank starts from rank 0's weights.
        if let group {
            try group.broadcast(parameters.buffer)
            parameters.markModified()
            if let lora { try group.broadcast(lora.parameters.buffer); lora.parameters.markModified() }
        }
        state.worldSize = worldSize

        // --- Models: one for training, one sharing the weights for evaluation (no saved activations).
        let model = try Gemma3TrainingModel(config: config, batchSize: recipe.batchSize, sequenceLength: recipe.blockSize,
                                            parameters: parameters, training: true, productPrecision: recipe.dtype.productPrecision, lora: lora)
        let evalModel = try Gemma3TrainingModel(config: config, batchSize: recipe.batchSize, sequenceLength: recipe.blockSize,
                                                parameters: parameters, training: false, productPrecision: recipe.dtype.productPrecision, lora: lora)
        if recipe.dtype == .bf16 { reporter?.trainingWarning(ProductPrecision.bfloat16ExecutionNote) }
        var sampler = try corpus.trainSampler(batchSize: recipe.batchSize, blockSize: recipe.blockSize, seed: recipe.seed, state: state.samplerState)
        let tokenCount = recipe.batchSize * recipe.blockSize
        let inputs = UnsafeMutableBufferPointer<Int32>.allocate(capacity: tokenCount)
        let targets = UnsafeMutableBufferPointer<Int32>.allocate(capacity: tokenCount)
        defer { inputs.deallocate(); targets.deallocate() }

        // --- Metrics: drop records of steps after the checkpoint (they will be redone), then append.
        if isLeader { try prepareMetrics(resumedAt: options.resume && hasLatest ? state : nil) }
        defer { try? metricsHandle?.close(); metricsHandle = nil }
        let entropy = corpus.unigramEntropyBits()
        let runInfo = RunInfo(startStep: state.step, resumed: options.resume && hasLatest, parameters: model.trainableParameters.count,
                              model: options.modelName, maxIters: recipe.maxIters, tokensPerStep: recipe.tokensPerStep,
                              unigramEntropyBits: entropy, bytesPerTokenVal: corpus.bytesPerValToken, worldSize: worldSize)
        appendMetrics(.run(runInfo))
        reporter?.trainingDidStart(TrainingStart(info: runInfo, config: config, recipe: recipe, runDirectory: run,
                                                 trainTokens: corpus.trainTokenCount, valTokens: corpus.valTokenCount))

        let schedule = LearningRateSchedule(recipe: recipe)
        let start = Date()
        let elapsedBefore = state.elapsedSeconds
        func elapsed() -> Double { elapsedBefore + Date().timeIntervalSince(start) }
        var lastEval: EvalMetrics?
        var speeds: [Double] = []
        let tokenizer = tokenizerDirectory

        /// `latest/` (with the optimizer state) or `best/`: the model, or the adapter under LoRA.
        func writeCheckpoint(_ name: String, withState: Bool) throws {
            let moments = withState ? TrainingCheckpoint.Moments(m: optimizer.m, v: optimizer.v) : nil
            if let lora {
                try TrainingCheckpoint.writeAdapter(runDirectory: run, name: name, config: config, lora: lora, baseModel: options.baseModelName,
                                                    moments: moments, state: withState ? state : nil)
            } else {
                try TrainingCheckpoint.write(runDirectory: run, name: name, config: config, parameters: parameters,
                                             weightsDType: withState || recipe.dtype != .bf16 ? .f32 : .bf16, moments: moments,
                                             state: withState ? state : nil, tokenizerDirectory: options.tokenizerWriter == nil ? tokenizer : nil,
                                             tokenizerWriter: options.tokenizerWriter)
            }
        }

        func saveLatest() throws {
            guard isLeader else { return }
            state.samplerState = sampler.state
            state.adamStep = optimizer.adamStep
            state.elapsedSeconds = elapsed()
            try writeCheckpoint(TrainingCheckpoint.latest, withState: true)
            reporter?.trainingDidSaveCheckpoint(named: TrainingCheckpoint.latest, at: run.appendingPathComponent(TrainingCheckpoint.latest),
                                                step: state.step)
        }

        /// Evaluates at the current step; returns false if a stop request interrupted it.
        func evaluate() throws -> Bool {
            let t0 = Date()
            guard let trainLoss = try meanLoss(evalModel, validation: false, seed: recipe.seed ^ 0x7EA1_0000_0000_0001,
                                               inputs: inputs, targets: targets),
                  let valLoss = try meanLoss(evalModel, validation: true, seed: recipe.seed ^ 0x7EA1_0000_0000_0002,
                                             inputs: inputs, targets: targets)
            else { return false }
            let e = EvalMetrics(step: state.step, trainLoss: trainLoss, valLoss: valLoss,
                                trainBitsPerByte: trainLoss / log(2.0) / corpus.bytesPerTrainToken,
                                valBitsPerByte: valLoss / log(2.0) / corpus.bytesPerValToken, elapsed: elapsed())
            appendMetrics(.eval(e))
            lastEval = e
            state.pendingEval = false
            let isBest = state.step > 0 && valLoss.isFinite && valLoss < (state.bestValLoss ?? .infinity)
            if isBest { state.bestValLoss = valLoss }
            reporter?.trainingDidEvaluate(e, bestValLoss: state.bestValLoss, seconds: Date().timeIntervalSince(t0))
            if isBest && isLeader {
                try writeCheckpoint(TrainingCheckpoint.best, withState: false)
                reporter?.trainingDidSaveCheckpoint(named: TrainingCheckpoint.best, at: run.appendingPathComponent(TrainingCheckpoint.best),
                                                    step: state.step)
            }
            return true
        }

        func localStopRequest() -> Int32? {
            if let s = stopFlag.requested { return s }
            if let n = options.stopAfterStep, state.step >= n { return 0 }
            return nil
        }
        /// A stop any rank asked for, agreed by all (so all stop after the same step).
        func stopRequested() throws -> Int32? {
            let local = localStopRequest()
            guard let group else { return local }
            var v: [Double] = [local == nil ? 0 : 1, Double(local ?? 0)]
            try v.withUnsafeMutableBufferPointer { try group.allReduceSum($0) }
            return v[0] > 0 ? Int32((v[1] / v[0]).rounded()) : nil
        }

        func finishInterrupted(_ signal: Int32) throws -> TrainingSummary {
            try saveLatest()
            reporter?.trainingDidStop(.interrupted(signal: signal), step: state.step)
            return TrainingSummary(step: state.step, interruptedBy: signal, lastEval: lastEval, bestValLoss: state.bestValLoss,
                                   unigramEntropyBits: entropy, tokensPerSecond: median(speeds))
        }

        if state.pendingEval {
            if try !evaluate() { return try finishInterrupted(stopFlag.requested ?? 0) }
        }
        while state.step < recipe.maxIters {
            if let s = try stopRequested() { return try finishInterrupted(s) }
            let stepIndex = state.step
            let lr = schedule(stepIndex)
            let t0 = Date()
            let outcome = try trainingStep(
                model: model, optimizer: optimizer, learningRate: lr, gradClip: recipe.gradClip,
                accumulation: recipe.gradientAccumulationSteps, inputs: inputs, targets: targets, group: group
            ) { _ in
                try sampler.next(inputs: inputs.baseAddress!, targets: targets.baseAddress!)
            }
            let seconds = max(1e-9, Date().timeIntervalSince(t0))
            state.step += 1
            let speed = Double(recipe.tokensPerStep) / seconds
            speeds.append(speed)
            let stepMetrics = StepMetrics(step: state.step, loss: outcome.loss, learningRate: lr, gradNorm: outcome.gradNorm,
                                          tokensPerSecond: speed, elapsed: elapsed(), skipped: !outcome.applied)
            appendMetrics(.step(stepMetrics))
            if outcome.applied {
                state.consecutiveNonFinite = 0
            } else {
                state.consecutiveNonFinite += 1
                reporter?.trainingWarning("step \(state.step): non-finite loss (\(outcome.loss)) or gradient norm (\(outcome.gradNorm)); update skipped (\(state.consecutiveNonFinite) in a row)")
                if state.consecutiveNonFinite >= options.maxConsecutiveNonFinite {
                    throw TrainingError.nonFinite("\(state.consecutiveNonFinite) non-finite steps in a row at step \(state.step) (learning rate \(lr)); try a lower --learning-rate; latest/ keeps the last good state")
                }
            }
            reporter?.trainingDidStep(stepMetrics)
            let last = state.step == recipe.maxIters
            if state.step % recipe.evalInterval == 0 || last {
                state.pendingEval = true
                if try !evaluate() { return try finishInterrupted(stopFlag.requested ?? 0) }
            }
            if state.step % recipe.effectiveCheckpointInterval == 0 || last {
                try saveLatest()
            }
        }
        reporter?.trainingDidStop(.finished, step: state.step)
        return TrainingSummary(step: state.step, interruptedBy: nil, lastEval: lastEval, bestValLoss: state.bestValLoss,
                               unigramEntropyBits: entropy, tokensPerSecond: median(speeds))
    }

    /// Mean loss per counted target over the corpus's fixed evaluation batches of a split (`eval_iters`
    /// windows of token files; every held-out example of a fine-tune), the same at every evaluation so
    /// curves compare like with like; nil if a stop was requested meanwhile.
    private func meanLoss(_ model: Gemma3TrainingModel, validation: Bool, seed: UInt64,
                          inputs: UnsafeMutableBufferPointer<Int32>, targets: UnsafeMutableBufferPointer<Int32>) throws -> Double? {
        var (sampler, count) = try corpus.evaluationBatches(validation: validation, batchSize: recipe.batchSize, blockSize: recipe.blockSize,
                                                            batches: recipe.evalIters, seed: seed)
        var sums = [0.0, 0.0]  // Σ loss × targets, Σ targets
        let (rank, ranks) = (options.group?.rank ?? 0, worldSize)
        for i in 0..<count {
            // Alone, a stop interrupts the evaluation; in a group every rank finishes it (a rank that
            // left early would leave the others waiting in the sum), and the step loop stops after.
            if options.group == nil && stopFlag.requested != nil { return nil }
            try sampler.next(inputs: inputs.baseAddress!, targets: targets.baseAddress!)
            guard i % ranks == rank else { continue }  // the batches are dealt to the ranks
            let loss = Double(try model.forward(inputs: UnsafeBufferPointer(inputs), targets: UnsafeBufferPointer(targets)))
            sums[0] += loss * Double(model.lastTargetCount)
            sums[1] += Double(model.lastTargetCount)
        }
        if let group = options.group { try sums.withUnsafeMutableBufferPointer { try group.allReduceSum($0) } }
        return sums[1] > 0 ? sums[0] / sums[1] : 0
    }

    /// The batch sampler's seed, distinct from the weight-initialisation stream of the same seed.
    static func samplerSeed(_ seed: UInt64) -> UInt64 { seed ^ 0x5EED_BA7C_0000_0000 }

    static func recipeDifference(_ a: TrainingRecipe, _ b: TrainingRecipe) -> String {
        let encoder = JSONEncoder()
        guard let da = try? encoder.encode(a), let db = try? encoder.encode(b),
              let oa = (try? JSONSerialization.jsonObject(with: da)) as? [String: Any],
              let ob = (try? JSONSerialization.jsonObject(with: db)) as? [String: Any] else { return "?" }
        let diffs = oa.keys.sorted().filter { "\(oa[$0]!)" != "\(ob[$0] ?? "nil")" }.map { "\($0) saved \(oa[$0]!), given \(ob[$0] ?? "nil")" }
        return diffs.joined(separator: "; ")
    }

    /// Opens `metrics.jsonl` for appending; on resume first drops records after the checkpoint.
    private func prepareMetrics(resumedAt state: TrainerState?) throws {
        let url = options.runDirectory.appendingPathComponent("metrics.jsonl")
        let fm = FileManager.default
        // Temporary files of a rewrite that a kill interrupted.
        for entry in (try? fm.contentsOfDirectory(atPath: options.runDirectory.path)) ?? [] where entry.hasPrefix(".metrics.jsonl.tmp-") {
            try? fm.removeItem(at: options.runDirectory.appendingPathComponent(entry))
        }
        if let state {
            let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
            let kept = text.split(separator: "\n").filter { line in
                guard let r = MetricsRecord(jsonLine: String(line)) else { return false }  // e.g. a line cut by a kill
                switch r {
                case .run: return r.step <= state.step
                case .step: return r.step <= state.step
                case .eval: return r.step < state.step || (r.step == state.step && !state.pendingEval)
                }
            }
            try AtomicFileWriter.write(Data(kept.map { $0 + "\n" }.joined().utf8), to: url)
        } else {
            try AtomicFileWriter.write(Data(), to: url)
        }
        guard let h = try? FileHandle(forWritingTo: url) else { throw TrainingError.io("cannot open \(url.path) for writing") }
        h.seekToEndOfFile()
        metricsHandle = h
    }
}
