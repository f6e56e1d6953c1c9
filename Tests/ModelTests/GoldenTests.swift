import Foundation
import Testing
@testable import Gemma3Model
import Gemma3Formats

/// ../shared/golden, located from this source file so tests run from any working directory.
let goldenRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("shared/golden")

@Suite struct GoldenTests {
    /// Forward and backward against transformers' float32 Gemma3ForCausalLM (shared/golden/tiny).
    @Test func tinyMatchesTransformers() throws {
        let report = try ReferenceVerifier.verify(directory: goldenRoot.appendingPathComponent("tiny"))
        for c in report.comparisons where !c.passed {
            Issue.record("\(c.name): max abs \(c.maxAbsError), rel L2 \(c.relativeL2Error), ratio \(c.toleranceRatio)")
        }
        #expect(report.passed)
        // Every gradient, the logits, the loss and all activations were compared.
        let config = try Gemma3Config.load(from: goldenRoot.appendingPathComponent("tiny/config.json"))
        let grads = report.comparisons.filter { $0.name.hasPrefix("grad.") }.count
        #expect(grads == ParameterLayout(config: config).tensors.count)
        #expect(report.comparisons.contains { $0.name == "logits" })
        #expect(report.comparisons.contains { $0.name == "loss" })
        #expect(report.comparisons.filter { $0.name.hasPrefix("act.") }.count == config.numHiddenLayers + 2)
        #expect(abs(report.loss - report.referenceLoss) < 1e-5)
        for prefix in ["logits", "loss", "grad", "act"] {
            if let w = report.worst(prefix: prefix) {
                print("golden \(prefix): worst \(w.name) max abs \(w.maxAbsError) rel L2 \(w.relativeL2Error)")
            }
        }
    }
}
