import Foundation

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
    /// Processes training the model together (data parallel; 1 alone).
    public var worldSize: Int
    public init(startStep: Int, resumed: Bool, parameters: Int, model: String, maxIters: Int, tokensPerStep: Int,
                unigramEntropyBits: Double, bytesPerTokenVal: Double, worldSize: Int = 1) {
        self.startStep = startStep; self.resumed = resumed; self.parameters = parameters; self.model = model
        self.maxIters = maxIters; self.tokensPerStep = tokensPerStep
        self.unigramEntropyBits = unigramEntropyBits; self.bytesPerTokenVal = bytesPerTokenVal
        self.worldSize = worldSize
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

// MARK: - metrics.jsonl lines

extension MetricsRecord: Codable {
    private enum KindKey: String, CodingKey { case kind }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: KindKey.self)
        switch try c.decode(String.self, forKey: .kind) {
        case "run": self = .run(try RunInfo(from: decoder))
        case "step": self = .step(try StepMetrics(from: decoder))
        case "eval": self = .eval(try EvalMetrics(from: decoder))
        case let other: throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "unknown record kind \(other)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: KindKey.self)
        switch self {
        case .run(let r): try c.encode("run", forKey: .kind); try r.encode(to: encoder)
        case .step(let s): try c.encode("step", forKey: .kind); try s.encode(to: encoder)
        case .eval(let e): try c.encode("eval", forKey: .kind); try e.encode(to: encoder)
        }
    }

    /// One JSON object on one line, keys sorted (non-finite numbers as null).
    public var jsonLine: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Cannot fail: every number is finite or written as null.
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// Parses one line of `metrics.jsonl`; nil for blank, cut or unknown lines.
    public init?(jsonLine line: String) {
        guard let record = try? JSONDecoder().decode(MetricsRecord.self, from: Data(line.utf8)) else { return nil }
        self = record
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

extension RunInfo: Codable {
    enum CodingKeys: String, CodingKey {
        case startStep = "step", resumed, parameters, model, maxIters = "max_iters", tokensPerStep = "tokens_per_step"
        case unigramEntropyBits = "unigram_entropy_bits", bytesPerTokenVal = "bytes_per_token_val", worldSize = "world_size"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(startStep: try c.decode(Int.self, forKey: .startStep),
                  resumed: try c.decodeIfPresent(Bool.self, forKey: .resumed) ?? false,
                  parameters: try c.decodeIfPresent(Int.self, forKey: .parameters) ?? 0,
                  model: try c.decodeIfPresent(String.self, forKey: .model) ?? "",
                  maxIters: try c.decodeIfPresent(Int.self, forKey: .maxIters) ?? 0,
                  tokensPerStep: try c.decodeIfPresent(Int.self, forKey: .tokensPerStep) ?? 0,
                  unigramEntropyBits: try c.decodeNumber(.unigramEntropyBits),
                  bytesPerTokenVal: try c.decodeNumber(.bytesPerTokenVal),
                  worldSize: try c.decodeIfPresent(Int.self, forKey: .worldSize) ?? 1)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(startStep, forKey: .startStep)
        try c.encode(resumed, forKey: .resumed)
        try c.encode(parameters, forKey: .parameters)
        try c.encode(model, forKey: .model)
        try c.encode(maxIters, forKey: .maxIters)
        try c.encode(tokensPerStep, forKey: .tokensPerStep)
        try c.encodeNumber(unigramEntropyBits, forKey: .unigramEntropyBits)
        try c.encodeNumber(bytesPerTokenVal, forKey: .bytesPerTokenVal)
        try c.encode(worldSize, forKey: .worldSize)
    }
}

extension StepMetrics: Codable {
    enum CodingKeys: String, CodingKey {
        case step, loss, learningRate = "lr", gradNorm = "grad_norm", tokensPerSecond = "tokens_per_s"
        case elapsed = "elapsed_s", skipped
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(step: try c.decode(Int.self, forKey: .step), loss: try c.decodeNumber(.loss),
                  learningRate: try c.decodeNumber(.learningRate), gradNorm: try c.decodeNumber(.gradNorm),
                  tokensPerSecond: try c.decodeNumber(.tokensPerSecond), elapsed: try c.decodeNumber(.elapsed),
                  skipped: try c.decodeIfPresent(Bool.self, forKey: .skipped) ?? false)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(step, forKey: .step)
        try c.encodeNumber(loss, forKey: .loss)
        try c.encodeNumber(learningRate, forKey: .learningRate)
        try c.encodeNumber(gradNorm, forKey: .gradNorm)
        try c.encodeNumber(tokensPerSecond, forKey: .tokensPerSecond)
        try c.encodeNumber(elapsed, forKey: .elapsed)
        try c.encode(skipped, forKey: .skipped)
    }
}

extension EvalMetrics: Codable {
    enum CodingKeys: String, CodingKey {
        case step, trainLoss = "train_loss", valLoss = "val_loss"
        case trainPerplexity = "train_perplexity", valPerplexity = "val_perplexity"  // written for readers, derived on reading
        case trainBitsPerByte = "train_bpb", valBitsPerByte = "val_bpb", elapsed = "elapsed_s"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(step: try c.decode(Int.self, forKey: .step), trainLoss: try c.decodeNumber(.trainLoss),
                  valLoss: try c.decodeNumber(.valLoss), trainBitsPerByte: try c.decodeNumber(.trainBitsPerByte),
                  valBitsPerByte: try c.decodeNumber(.valBitsPerByte), elapsed: try c.decodeNumber(.elapsed))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(step, forKey: .step)
        try c.encodeNumber(trainLoss, forKey: .trainLoss)
        try c.encodeNumber(valLoss, forKey: .valLoss)
        try c.encodeNumber(trainPerplexity, forKey: .trainPerplexity)
        try c.encodeNumber(valPerplexity, forKey: .valPerplexity)
        try c.encodeNumber(trainBitsPerByte, forKey: .trainBitsPerByte)
        try c.encodeNumber(valBitsPerByte, forKey: .valBitsPerByte)
        try c.encodeNumber(elapsed, forKey: .elapsed)
    }
}

// Metrics numbers may be NaN or infinite (a diverged run); JSON has no such numbers, so they are
// written as null and read back as NaN (as is a missing key).
private extension KeyedEncodingContainer {
    mutating func encodeNumber(_ value: Double, forKey key: Key) throws {
        if value.isFinite { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
    }
}

private extension KeyedDecodingContainer {
    func decodeNumber(_ key: Key) throws -> Double {
        try decodeIfPresent(Double.self, forKey: key) ?? .nan
    }
}
