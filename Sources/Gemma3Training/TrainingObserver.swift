import Foundation
import Gemma3Model

/// What a `Trainer` run starts with: the `metrics.jsonl` run record plus the model, recipe and data.
public struct TrainingStart: Sendable {
    /// The run record of this (re)start: model name, parameter count, tokens per step, unigram baseline.
    public var info: RunInfo
    public var config: Gemma3Config
    public var recipe: TrainingRecipe
    public var runDirectory: URL
    /// Tokens in `train.bin` and `val.bin`.
    public var trainTokens: Int
    public var valTokens: Int

    public init(info: RunInfo, config: Gemma3Config, recipe: TrainingRecipe, runDirectory: URL, trainTokens: Int, valTokens: Int) {
        self.info = info; self.config = config; self.recipe = recipe; self.runDirectory = runDirectory
        self.trainTokens = trainTokens; self.valTokens = valTokens
    }

    /// Tokens per optimizer step: micro-batch size × block size × gradient-accumulation steps.
    public var tokensPerStep: Int { info.tokensPerStep }
    /// The step the run continues from (`latest/`), or nil when it starts from fresh weights.
    public var resumedFromStep: Int? { info.resumed ? info.startStep : nil }
}

/// Why a `Trainer` run returned.
public enum TrainingStopReason: Sendable, Equatable {
    /// `max_iters` steps are complete.
    case finished
    /// A stop was requested (`signal` 0: programmatically, e.g. `TrainerOptions.stopAfterStep`);
    /// `latest/` holds the state to resume from.
    case interrupted(signal: Int32)
}

/// Receives the events of a `Trainer` run as they happen, on the thread that called `run()`.
/// Every method has a no-op default, so an observer implements only what it needs.
/// The trainer itself prints nothing: the `gemma3` tool's progress output is one such observer.
public protocol TrainingObserver: AnyObject {
    /// The model and data are loaded and training is about to start (or continue, on resume).
    func trainingDidStart(_ start: TrainingStart)
    /// One optimizer step is done (`metrics.skipped`: its update was skipped, the loss or gradient
    /// being non-finite). `metrics.elapsed` counts from the start of the run, resumes included.
    func trainingDidStep(_ metrics: StepMetrics)
    /// An evaluation is done. `bestValLoss` is the lowest validation loss so far, this one included
    /// (nil until one after step 0 is finite); `seconds` is how long the evaluation took.
    func trainingDidEvaluate(_ metrics: EvalMetrics, bestValLoss: Double?, seconds: Double)
    /// A checkpoint was written: `name` is `TrainingCheckpoint.latest` or `.best`, at `directory`,
    /// holding the weights after `step` updates.
    func trainingDidSaveCheckpoint(named name: String, at directory: URL, step: Int)
    /// The run is about to return after `step` completed steps (not called when it throws).
    func trainingDidStop(_ reason: TrainingStopReason, step: Int)
    /// Something the user should know that does not stop the run (a skipped step, a resume
    /// without a checkpoint).
    func trainingWarning(_ message: String)
}

extension TrainingObserver {
    public func trainingDidStart(_ start: TrainingStart) {}
    public func trainingDidStep(_ metrics: StepMetrics) {}
    public func trainingDidEvaluate(_ metrics: EvalMetrics, bestValLoss: Double?, seconds: Double) {}
    public func trainingDidSaveCheckpoint(named name: String, at directory: URL, step: Int) {}
    public func trainingDidStop(_ reason: TrainingStopReason, step: Int) {}
    public func trainingWarning(_ message: String) {}
}
