import Foundation
import Gemma3Formats
import Gemma3Kernels

/// One quantity compared against a reference.
public struct ReferenceComparison: Sendable, Codable, Equatable {
    /// `logits`, `loss`, `grad.<param>`, `act.<name>`, `greedy_ids`.
    public let name: String
    public let count: Int
    /// max |ours − reference|.
    public let maxAbsError: Double
    /// ‖ours − reference‖₂ / ‖reference‖₂ (0 when both are zero).
    public let relativeL2Error: Double
    /// max over elements of |ours − ref| / (absTolerance + relTolerance·|ref|); ≤ 1 passes.
    public let toleranceRatio: Double
    public let absTolerance: Double
    public let relTolerance: Double
    public var passed: Bool { toleranceRatio <= 1 }

    public init(name: String, ours: UnsafeBufferPointer<Float>, reference: UnsafeBufferPointer<Float>,
                absTolerance: Double, relTolerance: Double) {
        precondition(ours.count == reference.count)
        var maxAbs = 0.0, diff2 = 0.0, ref2 = 0.0, ratio = 0.0
        for i in 0..<ours.count {
            let a = Double(ours[i]), b = Double(reference[i])
            let d = abs(a - b)
            if !(d <= maxAbs) { maxAbs = d }  // also catches NaN
            diff2 += d * d
            ref2 += b * b
            let r = d / (absTolerance + relTolerance * abs(b))
            if !(r <= ratio) { ratio = r }
        }
        self.name = name
        count = ours.count
        maxAbsError = maxAbs
        relativeL2Error = ref2 > 0 ? (diff2 / ref2).squareRoot() : (diff2 > 0 ? .infinity : 0)
        toleranceRatio = ratio
        self.absTolerance = absTolerance
        self.relTolerance = relTolerance
    }

    /// An exact comparison of integer sequences (greedy ids): error = number of mismatches.
    public init(name: String, ours: [Int], reference: [Int]) {
        let mismatches = zip(ours, reference).filter { $0 != $1 }.count + abs(ours.count - reference.count)
        self.name = name
        count = reference.count
        maxAbsError = Double(mismatches)
        relativeL2Error = Double(mismatches)
        toleranceRatio = mismatches == 0 ? 0 : .infinity
        absTolerance = 0
        relTolerance = 0
    }
}

/// Tolerances of `ReferenceVerifier` (defaults: those suggested by shared/golden/README.md).
public struct ReferenceTolerances: Sendable, Codable {
    public var logitsAbs = 1e-4
    public var lossAbs = 1e-5
    public var gradientAbs = 1e-5
    public var gradientRel = 1e-3
    public var activationAbs = 1e-4
    public init() {}
}

/// The outcome of checking this implementation against a Hugging Face golden directory.
public struct ReferenceReport: Sendable, Codable {
    public let directory: String
    public let batchSize: Int
    public let sequenceLength: Int
    public let loss: Double
    public let referenceLoss: Double
    public let comparisons: [ReferenceComparison]
    /// Whether greedy ids were compared (the directory has `greedy_ids` and the check was asked for).
    public let greedyChecked: Bool
    public var passed: Bool { comparisons.allSatisfy(\.passed) }
    /// The worst comparison of each kind.
    public func worst(prefix: String) -> ReferenceComparison? {
        comparisons.filter { $0.name == prefix || $0.name.hasPrefix(prefix + ".") }.max { $0.toleranceRatio < $1.toleranceRatio }
    }
}

/// Checks the forward and backward passes against a directory in the golden layout
/// (`config.json` + `golden.safetensors`, see shared/golden/README.md).
public enum ReferenceVerifier {
    /// Loads the directory, runs forward + backward with next-token targets, and compares logits, loss,
    /// every gradient, the `act.*` activations present, and (with `checksGreedy`) the greedy ids
    /// that `Generator` decodes with the KV-cache engine.
    public static func verify(directory: URL, tolerances: ReferenceTolerances = ReferenceTolerances(),
                              checksGreedy: Bool = true) throws -> ReferenceReport {
        let config = try Gemma3Config.load(from: directory.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(url: directory.appendingPathComponent("golden.safetensors"))
        guard let idsInfo = file.info("input_ids"), idsInfo.shape.count == 2 else {
            throw FormatError("\(file.path): needs an input_ids tensor of shape [batch, seq]")
        }
        let (B, T) = (idsInfo.shape[0], idsInfo.shape[1])
        let ids = try file.integers("input_ids").map { Int32(truncatingIfNeeded: $0) }

        let params = ParameterStore(config: config)
        try params.load(from: file, allowUnexpected: true)
        let model = try Gemma3TrainingModel(config: config, batchSize: B, sequenceLength: T, parameters: params, training: true)
        model.keepsLogits = true  // compare the logits, then backward from them
        let targets = Gemma3TrainingModel.nextTokenTargets(ids, batchSize: B, sequenceLength: T, ignoreIndex: model.ignoreIndex)
        let loss = try model.forward(inputs: ids, targets: targets)

        var comparisons: [ReferenceComparison] = []
        func compare(_ name: String, _ ours: UnsafeBufferPointer<Float>, abs: Double, rel: Double) throws {
            guard let info = file.info(name) else { return }
            guard info.count == ours.count else {
                throw FormatError("\(file.path): \(name) has \(info.count) values, the model produced \(ours.count)")
            }
            let reference = try file.floats(name)
            reference.withUnsafeBufferPointer {
                comparisons.append(ReferenceComparison(name: name, ours: ours, reference: $0, absTolerance: abs, relTolerance: rel))
            }
        }
        try compare("logits", model.logits, abs: tolerances.logitsAbs, rel: 0)
        var lossValue = loss
        try withUnsafeBytes(of: &lossValue) { raw in
            try compare("loss", raw.bindMemory(to: Float.self), abs: tolerances.lossAbs, rel: 0)
        }
        for name in ["embed"] + (0..<config.numHiddenLayers).map({ "layer.\($0)" }) + ["final_norm"] {
            if let act = model.activation(name) {
                try compare("act." + name, act, abs: tolerances.activationAbs, rel: 0)
            }
        }
        model.zeroGradients()
        model.backward()
        for t in params.layout.tensors {
            guard file.info("grad." + t.name) != nil else {
                throw FormatError("\(file.path): missing reference gradient grad.\(t.name)")
            }
            try compare("grad." + t.name, UnsafeBufferPointer(model.gradients!.view(t)), abs: tolerances.gradientAbs, rel: tolerances.gradientRel)
        }

        var greedyChecked = false
        if checksGreedy, let info = file.info("greedy_ids"), info.shape.count == 2 {
            let reference = try file.integers("greedy_ids")
            let prompt = Array(ids.prefix(min(5, T)))
            let generator = Generator(engine: try InferenceEngine(weights: try InferenceWeights(config: config, parameters: params)),
                                      tokenizer: nil)
            let result = try generator.generate(promptIds: prompt, options: GenerationOptions(maxNewTokens: reference.count - prompt.count))
            let ours = (prompt + result.generatedIds).map(Int.init)
            comparisons.append(ReferenceComparison(name: "greedy_ids", ours: ours, reference: reference))
            greedyChecked = true
        }
        let referenceLoss = try file.info("loss") != nil ? Double(file.floats("loss")[0]) : .nan
        return ReferenceReport(directory: directory.path, batchSize: B, sequenceLength: T, loss: Double(loss),
                               referenceLoss: referenceLoss, comparisons: comparisons, greedyChecked: greedyChecked)
    }
}
