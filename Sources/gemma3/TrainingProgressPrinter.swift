import Foundation
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Training

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `gemma3 train`'s output on stderr: log lines, and a progress line per step — redrawn in place on
/// a terminal, printed every ~2% of the run otherwise (logs, CI).
final class TrainingProgressPrinter: TrainingObserver {
    private let isTerminal: Bool
    /// A progress line is on screen without its newline (terminal only).
    private var progressShown = false
    private var maxIters = 0
    private var tokensPerStep = 0
    private var runDirectory = ""
    /// Smoothed seconds per step, for the ETA.
    private var stepSecondsEMA: Double?

    init(isTerminal: Bool = isatty(2) != 0) {
        self.isTerminal = isTerminal
    }

    /// Writes one log line, first ending a progress line drawn in place.
    private func say(_ s: String) {
        if progressShown && isTerminal { FileHandle.standardError.write(Data("\n".utf8)); progressShown = false }
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }

    func trainingDidStart(_ start: TrainingStart) {
        let recipe = start.recipe
        maxIters = recipe.maxIters
        tokensPerStep = start.tokensPerStep
        runDirectory = start.runDirectory.path
        if start.info.worldSize > 1 {
            say("data parallel: \(start.info.worldSize) ranks (MPI) × \(RuntimeSettings.current.threads) threads; rank 0 writes \(runDirectory)")
        }
        if let step = start.resumedFromStep { say("resuming \(runDirectory) at step \(step)/\(maxIters)") }
        say("model \(start.info.model): \(start.info.parameters) parameters; \(start.tokensPerStep) tokens/step "
            + "(\(recipe.batchSize) × \(recipe.blockSize) × \(recipe.gradientAccumulationSteps)); "
            + "train \(start.trainTokens) tokens, val \(start.valTokens)")
        let entropy = start.info.unigramEntropyBits
        say(String(format: "baseline: unigram entropy of train.bin = %.4f bits/token = %.4f nats/token (loss of a context-free model)",
                   entropy, entropy * log(2.0)))
    }

    func trainingDidStep(_ m: StepMetrics) {
        let seconds = Double(tokensPerStep) / m.tokensPerSecond
        stepSecondsEMA = stepSecondsEMA.map { 0.9 * $0 + 0.1 * seconds } ?? seconds
        let eta = Double(maxIters - m.step) * (stepSecondsEMA ?? seconds)
        let line = String(format: "step %d/%d | loss %.4f | lr %.2e | grad norm %.3f | %.0f tokens/s | ETA ",
                          m.step, maxIters, m.loss, m.learningRate, m.gradNorm, m.tokensPerSecond) + formatDuration(eta)
        if isTerminal {
            FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
            progressShown = true
        } else if m.step == 1 || m.step % max(1, min(100, maxIters / 50)) == 0 || m.step == maxIters {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }

    func trainingDidEvaluate(_ e: EvalMetrics, bestValLoss: Double?, seconds: Double) {
        say(String(format: "eval step %d: train loss %.4f, val loss %.4f (perplexity %.2f, %.4f bits/byte) [%.1fs]",
                   e.step, e.trainLoss, e.valLoss, e.valPerplexity, e.valBitsPerByte, seconds))
    }

    func trainingDidStop(_ reason: TrainingStopReason, step: Int) {
        switch reason {
        case .finished:
            if progressShown && isTerminal { FileHandle.standardError.write(Data("\n".utf8)); progressShown = false }
        case .interrupted:
            say("stopped at step \(step)/\(maxIters); latest/ saved — continue with the same command plus --resume")
        }
    }

    func trainingWarning(_ message: String) { say(message) }
}

