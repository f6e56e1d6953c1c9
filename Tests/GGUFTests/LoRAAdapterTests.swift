import Foundation
import Gemma3TestSupport
import Testing
import Gemma3Formats
import Gemma3Kernels
@testable import Gemma3Model
import Gemma3Tokenizers

/// The logits of every position of `ids` from a fresh engine over `model`, [ids.count × vocab].
private func engineLogits(_ model: LanguageModel, _ ids: [TokenID]) throws -> [Float] {
    let engine = try model.makeEngine(context: ids.count)
    var out: [Float] = []
    for id in ids { out += Array(try engine.decode(id)) }
    return out
}

private func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// PEFT LoRA adapters (`--adapter`, `LoadOptions.adapter`) against Hugging Face PEFT itself:
/// scripts/reference/make_peft_lora.py makes a random adapter with peft on our tiny Gemma 3 directory
/// and computes PeftModel's logits; we load the base with that adapter and must give the same logits.
@Suite("LoRA adapters in PEFT's layout against peft", .serialized)
struct LoRAAdapterTests {
    struct Fixture {
        let dir: URL, gguf: URL, hf: URL
        let config: Gemma3Config
        let ids: [TokenID]
    }

    static func fixture() throws -> Fixture {
        let vocabulary = OrderedGemmaVocabulary()
        let tokenizer = try vocabulary.tokenizer()
        let config = tinyConfig(vocab: vocabulary.pieces.count)
        let store = tinyStore(config, seed: 23)
        let dir = try temporaryDirectory()
        let gguf = dir.appendingPathComponent("tiny.gguf")
        try GGUFGemma3.writer(config: config, parameters: store, matrixType: .f32, tokenizer: tokenizer).write(to: gguf)
        let hf = dir.appendingPathComponent("hf")
        let r = try run(try gemma3Executable().path, ["convert", gguf.path, hf.path, "--type", "f32"])
        guard r.status == 0 else { throw TestFailure("convert: \(String(decoding: r.stderr, as: UTF8.self))") }
        let ids: [TokenID] = [2] + (0..<11).map { TokenID(($0 * 37 + 5) % vocabulary.pieces.count) }
        return Fixture(dir: dir, gguf: gguf, hf: hf, config: config, ids: ids)
    }

    static func makePEFTAdapter(_ f: Fixture, name: String, _ extra: [String] = []) throws -> URL? {
        let probe = try run("/usr/bin/env", ["python3", "-c", "import torch, transformers, peft"])
        guard probe.status == 0 else {
            notice("torch/transformers/peft not importable: skipped the PEFT adapter comparison")
            return nil
        }
        let out = f.dir.appendingPathComponent(name)
        let script = TestPaths.repoRoot.appendingPathComponent("scripts/reference/make_peft_lora.py").path
        let r = try run("/usr/bin/env", ["python3", script, f.hf.path, out.path, "--ids", f.ids.map(String.init).joined(separator: ",")] + extra)
        guard r.status == 0 else { throw TestFailure("make_peft_lora.py: \(String(decoding: r.stderr, as: UTF8.self).suffix(2000))") }
        return out
    }

    @Test("a peft adapter on all seven projections (and rsLoRA on three): our logits are PeftModel's, from the directory and from GGUF")
    func logitsMatchPEFT() throws {
        let f = try Self.fixture()
        defer { try? FileManager.default.removeItem(at: f.dir) }
        for (name, extra) in [("all", [String]()), ("rslora", ["--rslora", "--rank", "6", "--alpha", "3", "--targets", "q_proj,v_proj,down_proj"])] {
            guard let adapter = try Self.makePEFTAdapter(f, name: name, extra) else { return }
            let golden = try SafeTensorsFile(url: adapter.appendingPathComponent("logits.safetensors"))
            let reference = try golden.floats("logits"), referenceBase = try golden.floats("base_logits")
            // The comparison can fail: the adapter moves the logits far more than the tolerance.
            let base = try engineLogits(try LanguageModel.load(f.hf.path), f.ids)
            #expect(maxAbsDifference(base, referenceBase) < 1e-4, "\(name): base model vs transformers")
            #expect(maxAbsDifference(reference, referenceBase) > 1e-2, "\(name): the adapter barely changes the model")
            for model in [f.hf.path, f.gguf.path] {
                let adapted = try LanguageModel.load(model, options: LoadOptions(adapter: adapter))
                let difference = maxAbsDifference(try engineLogits(adapted, f.ids), reference)
                #expect(difference < 1e-4, "\(name) on \(model): max |ours − peft| = \(difference)")
                // The merged directory weights also drive training's forward (eval of directory models).
                #expect(adapted.parameters != nil)
            }
        }
    }

    @Test("--adapter on generate and eval changes the model; a bad adapter is a one-line error")
    func commandLineAndBadAdapters() throws {
        let f = try Self.fixture()
        defer { try? FileManager.default.removeItem(at: f.dir) }
        guard let adapter = try Self.makePEFTAdapter(f, name: "cli") else { return }
        let text = f.dir.appendingPathComponent("text.txt")
        try Data("abc abc abc".utf8).write(to: text)
        let executable = try gemma3Executable().path
        func evalLoss(_ extra: [String]) throws -> Double {
            let r = try run(executable, ["eval", "--model", f.gguf.path, "--text", text.path, "--context", "8", "--json"] + extra)
            #expect(r.status == 0, "\(String(decoding: r.stderr, as: UTF8.self))")
            let object = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any]
            return try #require(object?["loss"] as? Double)
        }
        let plain = try evalLoss([]), adapted = try evalLoss(["--adapter", adapter.path])
        #expect(abs(plain - adapted) > 1e-3, "loss \(plain) without, \(adapted) with the adapter")
        let g = try run(executable, ["generate", "--model", f.hf.path, "--adapter", adapter.path, "--prompt", "ab", "--max-new-tokens", "3"])
        #expect(g.status == 0, "\(String(decoding: g.stderr, as: UTF8.self))")

        // Bad adapters: each a one-line error from the loader.
        let config = adapter.appendingPathComponent("adapter_config.json")
        let original = try Data(contentsOf: config)
        let edits: [(String, (inout [String: Any]) -> Void, String)] = [
            ("DoRA", { $0["use_dora"] = true }, "DoRA"),
            ("modules_to_save", { $0["modules_to_save"] = ["lm_head"] }, "modules_to_save"),
            ("prompt tuning", { $0["peft_type"] = "PROMPT_TUNING" }, "not LORA"),
            ("r as a string", { $0["r"] = "four" }, "wrong type"),
        ]
        for (what, edit, message) in edits {
            var object = try #require(try JSONSerialization.jsonObject(with: original) as? [String: Any])
            edit(&object)
            try JSONSerialization.data(withJSONObject: object).write(to: config)
            #expect(throws: Gemma3ModelError.self, "\(what)") { try LanguageModel.load(f.hf.path, options: LoadOptions(adapter: adapter)) }
            do { _ = try LanguageModel.load(f.hf.path, options: LoadOptions(adapter: adapter)) } catch {
                #expect("\(error)".contains(message) && !"\(error)".contains("\n"), "\(what): \(error)")
            }
        }
        try original.write(to: config)
        // An adapter made for another model: the shapes do not match this one's projections.
        let weights = try SafeTensorsFile(url: adapter.appendingPathComponent("adapter_model.safetensors"))
        var writer = SafeTensorsWriter()
        for info in weights.tensors {
            var values = try weights.floats(info.name)
            var shape = info.shape
            if info.name.hasSuffix("lora_A.weight") { shape[1] += 1; values += [Float](repeating: 0, count: shape[0]) }
            try values.withUnsafeBufferPointer { try writer.add(info.name, shape: shape, floats: $0) }
        }
        try writer.write(to: adapter.appendingPathComponent("adapter_model.safetensors"))
        do {
            _ = try LanguageModel.load(f.gguf.path, options: LoadOptions(adapter: adapter))
            Issue.record("an adapter of other shapes loaded")
        } catch {
            #expect("\(error)".contains("expected [r,"), "\(error)")
        }
        let r = try run(executable, ["generate", "--model", f.gguf.path, "--adapter", f.dir.appendingPathComponent("missing").path, "--prompt", "a"])
        let stderr = String(decoding: r.stderr, as: UTF8.self)
        #expect(r.status == 1 && stderr.contains("adapter_config.json") && stderr.split(separator: "\n").count == 1, "\(r.status): \(stderr)")
    }
}
