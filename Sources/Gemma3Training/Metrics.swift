import Foundation
import Gemma3Infrastructure

/// One line of `metrics.jsonl`. Every record has `kind` and `step`, where `step` counts completed
/// optimizer steps: a `step` record with `step` = n describes the n-th update (1-based); an `eval`
/// record with `step` = n measured the weights after n updates (0 = the initial weights).
public enum MetricsRecord: Sendable, Equatable {
    /// Written once per (re)start: what is being trained and the data's unigram baseline.
    case run(RunInfo)
    case step(StepMetrics)
    case eval(EvalMetrics)

    public var step: Int {
        switch self {
        case .run(let r): return r.startStep
        case .step(let s): return s.step
        case .eval(let e): return e.step
        }
    }
}

public struct RunInfo: Sendable, Equatable {
    public var startStep: Int
    public var resumed: Bool
    public var parameters: Int
    public var model: String
    public var maxIters: Int
    public var tokensPerStep: Int
    /// Entropy of the train split's token frequencies, in bits per token (the loss of the best
    /// model that ignores context, ×ln 2).
    public var unigramEntropyBits: Double
    public var bytesPerTokenVal: Double
    public init(startStep: Int, resumed: Bool, parameters: Int, model: String, maxIters: Int, tokensPerStep: Int,
                unigramEntropyBits: Double, bytesPerTokenVal: Double) {
        self.startStep = startStep; self.resumed = resumed; self.parameters = parameters; self.model = model
        self.maxIters = maxIters; self.tokensPerStep = tokensPerStep
        self.unigramEntropyBits = unigramEntropyBits; self.bytesPerTokenVal = bytesPerTokenVal
    }
}

public struct StepMetrics: Sendable, Equatable {
    public var step: Int
    /// Mean cross-entropy over the step's micro-batches (nats/token).
    public var loss: Double
    public var learningRate: Double
    /// Global gradient norm before clipping.
    public var gradNorm: Double
    /// Tokens per second over this step.
    public var tokensPerSecond: Double
    /// Wall-clock seconds since the run (or the resumed run) started.
    public var elapsed: Double
    /// True when the step was skipped because the loss or gradient was not finite.
    public var skipped: Bool
    public init(step: Int, loss: Double, learningRate: Double, gradNorm: Double, tokensPerSecond: Double, elapsed: Double, skipped: Bool) {
        self.step = step; self.loss = loss; self.learningRate = learningRate; self.gradNorm = gradNorm
        self.tokensPerSecond = tokensPerSecond; self.elapsed = elapsed; self.skipped = skipped
    }
}

public struct EvalMetrics: Sendable, Equatable {
    public var step: Int
    public var trainLoss: Double
    public var valLoss: Double
    /// exp(loss).
    public var trainPerplexity: Double { exp(trainLoss) }
    public var valPerplexity: Double { exp(valLoss) }
    /// Bits per byte of UTF-8 text: loss / ln 2 / bytes per token of that split.
    public var trainBitsPerByte: Double
    public var valBitsPerByte: Double
    public var elapsed: Double
    public init(step: Int, trainLoss: Double, valLoss: Double, trainBitsPerByte: Double, valBitsPerByte: Double, elapsed: Double) {
        self.step = step; self.trainLoss = trainLoss; self.valLoss = valLoss
        self.trainBitsPerByte = trainBitsPerByte; self.valBitsPerByte = valBitsPerByte; self.elapsed = elapsed
    }
}

extension MetricsRecord {
    /// One JSON object on one line (non-finite numbers as null).
    public var jsonLine: String {
        func n(_ v: Double) -> String { v.isFinite ? "\(v)" : "null" }
        switch self {
        case .run(let r):
            return "{\"kind\":\"run\",\"step\":\(r.startStep),\"resumed\":\(r.resumed),\"parameters\":\(r.parameters),"
                + "\"model\":\(jsonStringLiteral(r.model)),\"max_iters\":\(r.maxIters),\"tokens_per_step\":\(r.tokensPerStep),"
                + "\"unigram_entropy_bits\":\(n(r.unigramEntropyBits)),\"bytes_per_token_val\":\(n(r.bytesPerTokenVal))}"
        case .step(let s):
            return "{\"kind\":\"step\",\"step\":\(s.step),\"loss\":\(n(s.loss)),\"lr\":\(n(s.learningRate)),"
                + "\"grad_norm\":\(n(s.gradNorm)),\"tokens_per_s\":\(n(s.tokensPerSecond)),\"elapsed_s\":\(n(s.elapsed)),\"skipped\":\(s.skipped)}"
        case .eval(let e):
            return "{\"kind\":\"eval\",\"step\":\(e.step),\"train_loss\":\(n(e.trainLoss)),\"val_loss\":\(n(e.valLoss)),"
                + "\"train_perplexity\":\(n(e.trainPerplexity)),\"val_perplexity\":\(n(e.valPerplexity)),"
                + "\"train_bpb\":\(n(e.trainBitsPerByte)),\"val_bpb\":\(n(e.valBitsPerByte)),\"elapsed_s\":\(n(e.elapsed))}"
        }
    }

    /// Parses one line of `metrics.jsonl`; nil for blank or unknown lines.
    public init?(jsonLine line: String) {
        guard let data = line.data(using: .utf8),
              let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let kind = o["kind"] as? String, let step = (o["step"] as? NSNumber)?.intValue else { return nil }
        func d(_ k: String) -> Double { (o[k] as? NSNumber)?.doubleValue ?? .nan }
        switch kind {
        case "run":
            self = .run(RunInfo(startStep: step, resumed: (o["resumed"] as? Bool) ?? false,
                                parameters: (o["parameters"] as? NSNumber)?.intValue ?? 0, model: (o["model"] as? String) ?? "",
                                maxIters: (o["max_iters"] as? NSNumber)?.intValue ?? 0,
                                tokensPerStep: (o["tokens_per_step"] as? NSNumber)?.intValue ?? 0,
                                unigramEntropyBits: d("unigram_entropy_bits"), bytesPerTokenVal: d("bytes_per_token_val")))
        case "step":
            self = .step(StepMetrics(step: step, loss: d("loss"), learningRate: d("lr"), gradNorm: d("grad_norm"),
                                     tokensPerSecond: d("tokens_per_s"), elapsed: d("elapsed_s"), skipped: (o["skipped"] as? Bool) ?? false))
        case "eval":
            self = .eval(EvalMetrics(step: step, trainLoss: d("train_loss"), valLoss: d("val_loss"),
                                     trainBitsPerByte: d("train_bpb"), valBitsPerByte: d("val_bpb"), elapsed: d("elapsed_s")))
        default:
            return nil
        }
    }

    /// Reads every record of a `metrics.jsonl` file (later records for the same step and kind,
    /// written after a resume, replace earlier ones).
    public static func read(_ url: URL) throws -> [MetricsRecord] {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw TrainingError.io("cannot read \(url.path)")
        }
        return text.split(separator: "\n").compactMap { MetricsRecord(jsonLine: String($0)) }
    }
}
