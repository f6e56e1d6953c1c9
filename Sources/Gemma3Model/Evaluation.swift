import Dispatch
import Foundation
import Gemma3Tokenizers

/// The outcome of evaluating a model over a token sequence.
public struct EvaluationResult: Sendable {
    /// Σ −ln p(token | context) over every predicted token.
    public var lossSum: Double
    /// Tokens predicted: all but the first.
    public var predictedTokens: Int
    /// Windows of at most T + 1 tokens.
    public var windows: Int
    public var seconds: Double

    /// Mean natural-log cross-entropy per predicted token.
    public var loss: Double { lossSum / Double(max(1, predictedTokens)) }
    public var perplexity: Double { exp(loss) }
    public var bitsPerToken: Double { loss / log(2) }
    /// Bits per UTF-8 byte of text, given the split's average bytes per token.
    public func bitsPerByte(bytesPerToken: Double) -> Double { bitsPerToken / bytesPerToken }
}

/// Loss over a whole token file with the training forward pass.
public enum Evaluation {
    /// Number of windows: window w starts at w·T and predicts tokens w·T+1 … min(w·T+T, count−1),
    /// so every token but the first is predicted exactly once.
    public static func windowCount(tokens count: Int, context T: Int) -> Int {
        count < 2 ? 0 : (count - 1 + T - 1) / T
    }

    /// Evaluates `tokens` in windows of `context` + 1 tokens (starts 0, T, 2T, …; the last one
    /// shorter), `batchSize` windows per forward pass of `Gemma3TrainingModel` (float32, batched
    /// products: the numerics of training's evaluation). Padding beyond the data is ignored
    /// through the model's ignore index; causal attention keeps it away from real positions.
    ///
    /// - Parameter progress: called after each batch with (tokens predicted so far, running loss).
    public static func evaluate(
        config: Gemma3Config, parameters: ParameterStore, tokens: UnsafeBufferPointer<UInt16>,
        context T: Int, batchSize B: Int = 1, progress: ((Int, Double) -> Void)? = nil
    ) throws -> EvaluationResult {
        let count = tokens.count
        guard count >= 2 else { throw GenerationError("evaluation needs at least 2 tokens, got \(count)") }
        guard T >= 1, T <= config.maxPositionEmbeddings else {
            throw GenerationError("context \(T) must be between 1 and max_position_embeddings (\(config.maxPositionEmbeddings))")
        }
        guard B >= 1 else { throw GenerationError("batch size must be positive, got \(B)") }
        let T = min(T, count - 1)  // a window never needs more positions than the data has
        let model = try Gemma3TrainingModel(config: config, batchSize: B, sequenceLength: T, parameters: parameters, training: false)
        let ignore = model.ignoreIndex
        var inputs = [Int32](repeating: 0, count: B * T)
        var targets = [Int32](repeating: ignore, count: B * T)
        let windows = windowCount(tokens: count, context: T)
        var lossSum = 0.0, predicted = 0
        let start = DispatchTime.now().uptimeNanoseconds
        var w = 0
        while w < windows {
            for b in 0..<B {
                let first = (w + b) * T
                let n = w + b < windows ? min(T, count - 1 - first) : 0
                for t in 0..<T {
                    guard t < n else {
                        inputs[b * T + t] = 0
                        targets[b * T + t] = ignore
                        continue
                    }
                    let x = Int(tokens[first + t]), y = Int(tokens[first + t + 1])
                    guard x < config.vocabSize, y < config.vocabSize else {
                        throw GenerationError("token \(max(x, y)) at position \(first + t + (x < config.vocabSize ? 1 : 0)) is outside the model's vocabulary (\(config.vocabSize))")
                    }
                    inputs[b * T + t] = Int32(x)
                    targets[b * T + t] = Int32(y)
                }
            }
            let loss = try model.forward(inputs: inputs, targets: targets)
            guard loss.isFinite else { throw GenerationError.nonFiniteLoss(window: w) }
            lossSum += Double(loss) * Double(model.lastTargetCount)
            predicted += model.lastTargetCount
            w += B
            progress?(predicted, lossSum / Double(max(1, predicted)))
        }
        guard predicted == count - 1 else {
            throw GenerationError("internal error: predicted \(predicted) tokens, expected \(count - 1)")
        }
        return EvaluationResult(lossSum: lossSum, predictedTokens: predicted, windows: windows,
                                seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
}

extension Evaluation {
    /// Evaluates `tokens` with an inference engine: any weights it holds (float32, bfloat16, GGUF
    /// blocks), batched prefill numerics, no sampling. The engine's `maxContext` must be ≥ T + 1.
    ///
    /// - With `bos` (models trained to see it first, like Gemma): window w is `[bos]` followed by
    ///   tokens w·T ..< (w+1)·T, and all of those are predicted, so every token of `tokens` is
    ///   predicted exactly once, the first of each window from BOS alone.
    /// - Without: windows of T + 1 tokens starting at 0, T, 2T, … as `evaluate(config:…)`, so every
    ///   token but the first is predicted once.
    public static func evaluate(
        engine: InferenceEngine, tokens: [TokenID], context T: Int, bos: TokenID? = nil,
        progress: ((Int, Double) -> Void)? = nil
    ) throws -> EvaluationResult {
        guard T >= 1, T + 1 <= engine.maxContext else {
            throw GenerationError("context \(T) must be between 1 and the engine's context − 1 (\(engine.maxContext - 1))")
        }
        let needed = bos == nil ? 2 : 1
        guard tokens.count >= needed else { throw GenerationError("evaluation needs at least \(needed) tokens, got \(tokens.count)") }
        let start = DispatchTime.now().uptimeNanoseconds
        var lossSum = 0.0, predicted = 0, windows = 0
        var first = 0
        while bos == nil ? first < tokens.count - 1 : first < tokens.count {
            let window: [TokenID]
            if let bos {
                window = [bos] + tokens[first..<min(first + T, tokens.count)]
            } else {
                window = Array(tokens[first...min(first + T, tokens.count - 1)])
            }
            let (sum, count) = try engine.crossEntropySum(window)
            guard sum.isFinite else { throw GenerationError.nonFiniteLoss(window: windows) }
            lossSum += sum
            predicted += count
            windows += 1
            first += T
            progress?(predicted, lossSum / Double(max(1, predicted)))
        }
        return EvaluationResult(lossSum: lossSum, predictedTokens: predicted, windows: windows,
                                seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
}

extension GenerationError {
    /// A loss of NaN or infinity: the weights (or the file they came from) hold non-finite values.
    static func nonFiniteLoss(window: Int) -> GenerationError {
        GenerationError("the loss of window \(window) is not finite (NaN or infinity): the model's weights hold non-finite values")
    }

    /// Logits with NaN or infinity: the same cause, found while generating.
    public static let nonFiniteLogits = GenerationError("the model's logits are not finite (NaN or infinity): its weights hold non-finite values")
}

