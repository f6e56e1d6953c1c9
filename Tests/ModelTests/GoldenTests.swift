import Foundation
import Testing
@testable import Gemma3Model
import Gemma3Formats
import Gemma3Kernels

/// ../shared/golden, located from this source file so tests run from any working directory.
let goldenRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("shared/golden")

@Suite struct GoldenTests {
    /// Forward and backward against transformers' float32 Gemma3ForCausalLM (shared/golden/tiny),
    /// with each library of matrix products.
    @Test(arguments: MatrixProductBackend.allCases)
    func tinyMatchesTransformers(products: MatrixProductBackend) throws {
        let report = try BLAS.withBackend(products) {
            try ReferenceVerifier.verify(directory: goldenRoot.appendingPathComponent("tiny"))
        }
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

    /// The training default (cross-entropy gradient fused into the forward pass) gives the same gradients.
    @Test func fusedClassifierGradientsMatchTransformers() throws {
        let dir = goldenRoot.appendingPathComponent("tiny")
        let config = try Gemma3Config.load(from: dir.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("golden.safetensors"))
        let ids = try file.integers("input_ids").map { Int32($0) }
        let params = ParameterStore(config: config)
        try params.load(from: file, allowUnexpected: true)
        let model = try Gemma3TrainingModel(config: config, batchSize: 2, sequenceLength: 24, parameters: params)
        #expect(!model.keepsLogits)
        let loss = try model.forward(inputs: ids, targets: Gemma3TrainingModel.nextTokenTargets(ids, batchSize: 2, sequenceLength: 24))
        #expect(abs(Double(loss) - Double(try file.floats("loss")[0])) < 1e-5)
        model.zeroGradients()
        model.backward()
        for t in params.layout.tensors {
            let reference = try file.floats("grad." + t.name)
            let ours = model.gradients!.view(t)
            for i in 0..<t.count where abs(ours[i] - reference[i]) > 1e-5 + 1e-3 * abs(reference[i]) {
                Issue.record("\(t.name)[\(i)]: \(ours[i]) vs \(reference[i])")
                break
            }
        }
    }
}
