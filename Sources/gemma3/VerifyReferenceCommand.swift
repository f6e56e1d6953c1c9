import ArgumentParser
import Foundation
import Gemma3Model

/// `gemma3 verify-reference DIR`: checks this implementation against Hugging Face reference tensors.
struct VerifyReferenceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-reference",
        abstract: "Compare forward, loss, gradients and greedy decoding with a transformers golden directory.",
        discussion: """
        DIR holds config.json and golden.safetensors in the layout of shared/golden (see its README): \
        weights, input_ids, logits, loss, grad.<param> for every parameter, optional act.* and greedy_ids. \
        Runs the training forward and backward on input_ids with next-token targets, decodes greedily \
        with the KV-cache inference engine, and prints the maximum absolute and relative (L2) error of \
        each quantity. Exits with status 1 when any exceeds its tolerance.
        """
    )

    @Argument(help: "Directory with config.json and golden.safetensors.")
    var directory: String

    @Option(help: "Absolute tolerance of the logits.")
    var logitsTolerance = 1e-4
    @Option(help: "Absolute tolerance of the loss.")
    var lossTolerance = 1e-5
    @Option(help: "Absolute tolerance of each gradient element (plus --gradient-rel-tolerance · |reference|).")
    var gradientTolerance = 1e-5
    @Option(help: "Relative tolerance of each gradient element.")
    var gradientRelTolerance = 1e-3
    @Option(help: "Absolute tolerance of the act.* activations.")
    var activationTolerance = 1e-4

    @Flag(help: "Skip the greedy-decoding check.")
    var noGreedy = false

    @Flag(help: "List every tensor, not just the worst of each kind.")
    var verbose = false

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        let url = URL(fileURLWithPath: directory, isDirectory: true)
        for file in ["config.json", "golden.safetensors"] {
            guard FileManager.default.fileExists(atPath: url.appendingPathComponent(file).path) else {
                throw VerifyReferenceError("\(directory) has no \(file)")
            }
        }
        var tolerances = ReferenceTolerances()
        tolerances.logitsAbs = logitsTolerance
        tolerances.lossAbs = lossTolerance
        tolerances.gradientAbs = gradientTolerance
        tolerances.gradientRel = gradientRelTolerance
        tolerances.activationAbs = activationTolerance
        let report = try ReferenceVerifier.verify(directory: url, tolerances: tolerances, checksGreedy: !noGreedy)

        let kinds = ["logits", "loss", "grad", "act", "greedy_ids"]
        if json {
            struct Output: Encodable {
                let directory: String
                let passed: Bool
                let batch: Int
                let seq: Int
                let loss: Double
                let referenceLoss: Double
                let greedyChecked: Bool
                let worst: [String: ReferenceComparison]
                let comparisons: [ReferenceComparison]
            }
            var worst: [String: ReferenceComparison] = [:]
            for kind in kinds { worst[kind] = report.worst(prefix: kind) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            let output = Output(directory: report.directory, passed: report.passed, batch: report.batchSize,
                                seq: report.sequenceLength, loss: report.loss, referenceLoss: report.referenceLoss,
                                greedyChecked: report.greedyChecked, worst: worst, comparisons: report.comparisons)
            print(String(decoding: try encoder.encode(output), as: UTF8.self))
        } else {
            print("reference: \(report.directory) (batch \(report.batchSize) × \(report.sequenceLength))")
            print("loss: ours \(report.loss), reference \(report.referenceLoss)")
            let pad = { (s: String, n: Int) in s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
            print(pad("quantity", 58) + pad("max abs err", 14) + pad("rel L2 err", 14) + "status")
            func line(_ c: ReferenceComparison) {
                let status = c.passed ? "ok" : "FAIL (tolerance \(c.absTolerance)\(c.relTolerance > 0 ? " + \(c.relTolerance)·|ref|" : ""))"
                print(pad(c.name, 58) + pad(String(format: "%.3e", c.maxAbsError), 14)
                      + pad(String(format: "%.3e", c.relativeL2Error), 14) + status)
            }
            if verbose {
                report.comparisons.forEach(line)
            } else {
                for kind in kinds {
                    let all = report.comparisons.filter { $0.name == kind || $0.name.hasPrefix(kind + ".") }
                    guard let worst = report.worst(prefix: kind) else { continue }
                    if all.count > 1 { print("\(kind): \(all.count) tensors, \(all.filter(\.passed).count) within tolerance; worst:") }
                    line(worst)
                    for c in all where !c.passed && c.name != worst.name { line(c) }
                }
            }
            if !report.greedyChecked && !noGreedy { print("greedy_ids: not in this directory, not checked") }
            print(report.passed ? "PASS" : "FAIL")
        }
        if !report.passed { throw ExitCode(1) }
    }
}

/// A one-line error of `verify-reference`.
struct VerifyReferenceError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
