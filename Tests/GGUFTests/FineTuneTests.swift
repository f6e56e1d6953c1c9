import Foundation
import Gemma3TestSupport
import Testing
import Gemma3Formats
import Gemma3Kernels
@testable import Gemma3Model
import Gemma3Tokenizers
@testable import Gemma3Training

private func maxAbs(_ a: [Float]) -> Float { a.reduce(0) { max($0, abs($1)) } }
private func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) } }

/// LoRA training (`Gemma3TrainingModel(lora:)`, `gemma3 finetune`) against PyTorch + PEFT, and the
/// fine-tuning data path (chat template, loss masking) on its own.
@Suite("LoRA training and fine-tuning", .serialized)
struct FineTuneTests {
    static func havePEFT() throws -> Bool {
        let probe = try run("/usr/bin/env", ["python3", "-c", "import torch, transformers, peft"])
        if probe.status != 0 { notice("torch/transformers/peft not importable: skipped the PEFT comparison") }
        return probe.status == 0
    }

    @Test("one LoRA step on all seven projections equals PyTorch + PEFT's: loss, every A/B gradient, A/B after AdamW")
    func firstStepMatchesPEFT() throws {
        let f = try LoRAAdapterTests.fixture()
        defer { try? FileManager.default.removeItem(at: f.dir) }
        guard try Self.havePEFT() else { return }
        let (B, T, V) = (2, 6, f.config.vocabSize)
        let ids: [Int32] = (0..<(B * T)).map { Int32(($0 * 29 + 3) % V) }
        var targets: [Int32] = (0..<(B * T)).map { Int32(($0 * 17 + 11) % V) }
        for i in [0, 1, 7] { targets[i] = -100 }  // masked positions, as a prompt's
        let out = f.dir.appendingPathComponent("step")
        let script = TestPaths.repoRoot.appendingPathComponent("scripts/reference/peft_lora_step.py").path
        let (lr, wd, b1, b2) = (1e-2, 0.1, 0.9, 0.95)
        let r = try run("/usr/bin/env", ["python3", script, f.hf.path, out.path, "--batch", "\(B)",
                                         "--ids=" + ids.map(String.init).joined(separator: ","), "--targets=" + targets.map(String.init).joined(separator: ","),
                                         "--rank", "4", "--alpha", "8", "--lr", "\(lr)", "--weight-decay", "\(wd)", "--beta1", "\(b1)", "--beta2", "\(b2)"])
        guard r.status == 0 else { throw TestFailure("peft_lora_step.py: \(String(decoding: r.stderr, as: UTF8.self).suffix(2000))") }
        let golden = try SafeTensorsFile(url: out.appendingPathComponent("golden.safetensors"))

        let (config, base) = try HFCheckpoint.load(directory: f.hf)
        let lora = LoRAWeights(config: config, settings: try LoRASettings(rank: 4, alpha: 8))
        try lora.load(LoRAAdapter.loadPEFT(directory: out.appendingPathComponent("adapter"), for: config))
        let model = try Gemma3TrainingModel(config: config, batchSize: B, sequenceLength: T, parameters: base, training: true, lora: lora)
        #expect(model.gradients == nil, "LoRA must not allocate base-weight gradients")
        let optimizer = OptimizerState(count: lora.count, hyper: AdamWHyperparameters(beta1: b1, beta2: b2, eps: 1e-8, weightDecay: wd))
        let baseBefore = Array(base.buffer)
        let inputs = UnsafeMutableBufferPointer<Int32>.allocate(capacity: B * T), tg = UnsafeMutableBufferPointer<Int32>.allocate(capacity: B * T)
        defer { inputs.deallocate(); tg.deallocate() }
        _ = inputs.initialize(from: ids); _ = tg.initialize(from: targets)
        let outcome = try trainingStep(model: model, optimizer: optimizer, learningRate: lr, gradClip: 0, accumulation: 1,
                                       inputs: inputs, targets: tg) { _ in }
        let loss = try golden.floats("loss")[0]
        #expect(abs(Float(outcome.loss) - loss) <= 1e-5 * max(1, abs(loss)), "loss \(outcome.loss) vs PEFT \(loss)")
        let grads = model.loraGradients!.pointer, after = lora.parameters.pointer
        var worstGradient: Float = 0, worstUpdate: Float = 0
        for e in lora.entries {
            for (suffix, offset, count) in [("lora_A.weight", e.aOffset, 4 * e.inFeatures), ("lora_B.weight", e.bOffset, e.outFeatures * 4)] {
                let name = e.peftModule + "." + suffix
                let g = try golden.floats("grad." + name), a = try golden.floats("after." + name)
                let ours = Array(UnsafeBufferPointer(start: grads + offset, count: count))
                let gradientError = maxAbsDifference(ours, g) / max(1e-6, maxAbs(g))
                worstGradient = max(worstGradient, gradientError)
                #expect(gradientError < 1e-4, "d/d \(name): relative error \(gradientError)")
                #expect(maxAbs(g) > 0, "\(name) has no gradient: the check would be vacuous")
                let updateError = maxAbsDifference(Array(UnsafeBufferPointer(start: after + offset, count: count)), a)
                worstUpdate = max(worstUpdate, updateError)
                // The trajectory goldens' bound on weights (a first AdamW step is ≈ lr·sign(g), so a gradient near 0 moves it most).
                #expect(updateError <= 1e-4, "\(name) after AdamW: max |ours − torch| = \(updateError)")
            }
        }
        #expect(Array(base.buffer) == baseBefore, "the base weights must stay frozen")
        print("LoRA step vs PEFT: loss \(outcome.loss) vs \(loss), worst relative gradient error \(worstGradient), worst update error \(worstUpdate)")
    }

    @Test("loss masking: tokens outside assistant turns contribute exactly nothing (changing them leaves the loss and gradients bit-identical)")
    func maskedTokensContributeNothing() throws {
        let vocabulary = OrderedGemmaVocabulary()
        let tokenizer = try vocabulary.tokenizer()
        let config = tinyConfig(vocab: vocabulary.pieces.count)
        let line = "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hello there\"},"
            + "{\"role\":\"assistant\",\"content\":\"ab cd\"}]}"
        let example = try FineTuneDataset.example(Array(line.utf8), number: 1, file: "chat.jsonl", tokenizer: tokenizer, lossScope: .completions)
        // The learned tokens are exactly the reply and its <end_of_turn>.
        let eot = tokenizer.id(of: "<end_of_turn>")!
        let learnedIds = zip(example.tokens, example.learned).filter(\.1).map(\.0)
        #expect(learnedIds == tokenizer.encode("ab cd", addBOS: false, parseSpecial: false) + [eot])
        #expect(example.tokens == tokenizer.encode("<start_of_turn>user\nbe brief\n\nhello there<end_of_turn>\n<start_of_turn>model\nab cd<end_of_turn>\n", addBOS: true, parseSpecial: true))

        // Tokens after the reply (a further user turn) are outside every assistant turn; the causal mask keeps them
        // out of the reply's context, so with the loss masked, changing them must leave the loss and every
        // gradient bit-identical. Learning every token (--train-on all) makes them count (the test can fail).
        let store = tinyStore(config, seed: 5)
        let T = 48
        func lossAndGradients(_ trailing: String, _ scope: LossScope) throws -> (Float, [Float]) {
            let text = "{\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"},{\"role\":\"assistant\",\"content\":\"ab cd\"},"
                + "{\"role\":\"user\",\"content\":\"\(trailing)\"}]}"
            let e = try FineTuneDataset.example(Array(text.utf8), number: 1, file: "x", tokenizer: tokenizer, lossScope: scope)
            #expect(e.tokens.count <= T + 1)
            let model = try Gemma3TrainingModel(config: config, batchSize: 1, sequenceLength: T, parameters: store, training: true)
            var inputs = [Int32](repeating: 0, count: T), targets = [Int32](repeating: 0, count: T)
            inputs.withUnsafeMutableBufferPointer { i in targets.withUnsafeMutableBufferPointer { t in
                FineTuneDataset.fill(e, row: 0, blockSize: T, inputs: i.baseAddress!, targets: t.baseAddress!)
            } }
            let loss = try model.forward(inputs: inputs, targets: targets)
            model.backward()
            return (loss, Array(model.gradients!.buffer))
        }
        let a = try lossAndGradients("cd", .completions), b = try lossAndGradients("ef ab cd ab", .completions)
        #expect(a.0 == b.0 && a.1 == b.1, "masked tokens changed the loss or a gradient")
        let c = try lossAndGradients("cd", .all), d = try lossAndGradients("ef ab cd ab", .all)
        #expect(c.0 != d.0, "with every token learned, the trailing turn must count")
    }

    @Test("LoRA dropout: one mask per seed shared by forward and backward (finite differences), none at evaluation, p = 0 is no dropout")
    func loraDropout() throws {
        let config = tinyConfig(vocab: 40)
        let store = tinyStore(config, seed: 9)
        let (B, T) = (2, 8)
        let inputs: [Int32] = (0..<(B * T)).map { Int32(($0 * 13 + 1) % 40) }
        let targets: [Int32] = (0..<(B * T)).map { Int32(($0 * 7 + 3) % 40) }
        // Random A and B (PEFT's B = 0 would leave A without a gradient).
        func adapter(dropout: Double) throws -> LoRAWeights {
            let lora = LoRAWeights(config: config, settings: try LoRASettings(rank: 4, alpha: 8, dropout: dropout))
            let values = randomFloats(lora.count, seed: 77, scale: 0.2)
            lora.parameters.pointer.update(from: values, count: values.count)
            lora.parameters.markModified()
            return lora
        }
        let dropped = try adapter(dropout: 0.4), plain = try adapter(dropout: 0)
        let model = try Gemma3TrainingModel(config: config, batchSize: B, sequenceLength: T, parameters: store, training: true, lora: dropped)
        func loss(seed: UInt64) throws -> Float {
            model.loraDropoutSeed = seed
            return try model.forward(inputs: inputs, targets: targets)
        }
        let l7 = try loss(seed: 7)
        model.zeroGradients()
        model.backward()
        let gradient = Array(model.loraGradients!.buffer)
        #expect(try loss(seed: 7) == l7, "one seed must give one mask")
        #expect(try loss(seed: 8) != l7, "another seed must give another mask")

        let withoutDropout = try Gemma3TrainingModel(config: config, batchSize: B, sequenceLength: T, parameters: store, training: true, lora: plain)
        let l0 = try withoutDropout.forward(inputs: inputs, targets: targets)
        #expect(abs(l0 - l7) > 1e-3, "dropout 0.4 must change the loss (\(l0) vs \(l7))")
        // Evaluation applies no dropout: the adapter with p = 0.4 evaluates as with p = 0.
        let evaluation = try Gemma3TrainingModel(config: config, batchSize: B, sequenceLength: T, parameters: store, training: false, lora: dropped)
        let le = try evaluation.forward(inputs: inputs, targets: targets)
        #expect(abs(le - l0) <= 1e-6 * abs(l0), "evaluation with dropout 0.4 gave \(le), without dropout \(l0)")

        // The backward uses the forward's mask: central differences of the loss under seed 7, for the largest
        // gradients of the first and the last layer's adapters (the first layer's go back through the later layers'
        // masked input gradients).
        let p = dropped.parameters.pointer
        var checked = 0
        for layer in [0, config.numHiddenLayers - 1] {
            let span = dropped.entries.filter { $0.layer == layer }.flatMap { e in
                Array(e.aOffset..<(e.aOffset + 4 * e.inFeatures)) + Array(e.bOffset..<(e.bOffset + e.outFeatures * 4))
            }
            for i in span.sorted(by: { abs(gradient[$0]) > abs(gradient[$1]) }).prefix(4) {
                let h: Float = 1e-2, saved = p[i]
                p[i] = saved + h; dropped.parameters.markModified()
                let up = try loss(seed: 7)
                p[i] = saved - h; dropped.parameters.markModified()
                let down = try loss(seed: 7)
                p[i] = saved; dropped.parameters.markModified()
                let numeric = (up - down) / (2 * h)
                #expect(abs(numeric - gradient[i]) <= 2e-2 * abs(gradient[i]) + 1e-4,
                        "layer \(layer) parameter \(i): backward \(gradient[i]), central difference \(numeric)")
                checked += 1
            }
        }
        #expect(checked == 8 && abs(gradient.max()!) > 1e-3)
    }

    /// A small prompt/completion set over the tiny vocabulary's words.
    static func writeExamples(_ url: URL, count: Int) throws {
        let words = ["ab", "cd", "ef", "ab cd", "cd ef"]
        var lines: [String] = []
        for i in 0..<count {
            let prompt = words[i % words.count] + " " + words[(i / 5) % words.count]
            let completion = words[(i * 3 + 1) % words.count]
            lines.append("{\"prompt\":\"\(prompt)\",\"completion\":\" \(completion)\"}")
        }
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
    }

    static func gemma3(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let r = try run(try gemma3Executable().path, arguments)
        return (r.status, String(decoding: r.stdout, as: UTF8.self), String(decoding: r.stderr, as: UTF8.self))
    }

    @Test("gemma3 finetune --method lora: val loss falls, exact resume, PEFT loads the adapter, merge-adapter equals base + adapter")
    func loraFineTuneEndToEnd() throws {
        let f = try LoRAAdapterTests.fixture()
        defer { try? FileManager.default.removeItem(at: f.dir) }
        let data = f.dir.appendingPathComponent("train.jsonl")
        try Self.writeExamples(data, count: 40)
        let common = ["finetune", "--model", f.hf.path, "--data", data.path, "--quiet", "--lora-rank", "4", "--lora-alpha", "8",
                      "--batch-size", "4", "--block-size", "16", "--eval-interval", "4", "--learning-rate", "1e-2", "--warmup-steps", "1",
                      "--threads", "2"]
        let whole = f.dir.appendingPathComponent("whole"), split = f.dir.appendingPathComponent("split")
        let r1 = try Self.gemma3(common + ["--out", whole.path, "--max-iters", "8", "--json"])
        #expect(r1.status == 0, "finetune: \(r1.stderr)")
        // Stopped after 4 steps (latest/ saved), then resumed to 8: bit-identical adapter.
        let r2 = try Self.gemma3(common + ["--out", split.path, "--max-iters", "8", "--stop-after-step", "4"])
        #expect(r2.status == 0, "finetune (first half): \(r2.stderr)")
        let r3 = try Self.gemma3(common + ["--out", split.path, "--max-iters", "8", "--resume"])
        #expect(r3.status == 0, "finetune --resume: \(r3.stderr)")
        let a = try Data(contentsOf: whole.appendingPathComponent("latest/adapter_model.safetensors"))
        let b = try Data(contentsOf: split.appendingPathComponent("latest/adapter_model.safetensors"))
        #expect(a == b, "resumed LoRA run differs from the uninterrupted one")

        // Validation loss before the first step and after: the fine-tune learned something.
        let evals = try String(contentsOf: whole.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .filter { $0.contains("\"eval\"") }
        #expect(evals.count == 3, "evaluations at steps 0, 4, 8: \(evals)")
        let summary = try JSONSerialization.jsonObject(with: Data(r1.stdout.utf8)) as? [String: Any]
        let first = evals.first.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let before = first?["val_loss"] as? Double, after = summary?["val_loss"] as? Double
        #expect(before != nil && after != nil && after! < before!, "val loss \(String(describing: before)) → \(String(describing: after))")

        // best/ is a PEFT adapter: PeftModel on the base gives our logits with --adapter.
        let adapter = whole.appendingPathComponent("best")
        let ours = try LanguageModel.load(f.hf.path, options: LoadOptions(adapter: adapter))
        let engine = try ours.makeEngine(context: f.ids.count)
        var logits: [Float] = []
        for id in f.ids { logits += Array(try engine.decode(id)) }
        if try Self.havePEFT() {
            let out = f.dir.appendingPathComponent("peft-logits")
            let script = TestPaths.repoRoot.appendingPathComponent("scripts/reference/make_peft_lora.py").path
            let r = try run("/usr/bin/env", ["python3", script, f.hf.path, out.path, "--ids", f.ids.map(String.init).joined(separator: ","), "--load", adapter.path])
            #expect(r.status == 0, "peft: \(String(decoding: r.stderr, as: UTF8.self).suffix(1500))")
            if r.status == 0 {
                let golden = try SafeTensorsFile(url: out.appendingPathComponent("logits.safetensors"))
                let reference = try golden.floats("logits"), base = try golden.floats("base_logits")
                #expect(maxAbsDifference(logits, reference) < 1e-4, "ours with the adapter vs PeftModel")
                #expect(maxAbsDifference(reference, base) > 1e-3, "the trained adapter barely changes the model")
            }
        }

        // merge-adapter: a directory (and a GGUF) whose logits are base + adapter's.
        let merged = f.dir.appendingPathComponent("merged"), gguf = f.dir.appendingPathComponent("merged.gguf")
        let m = try Self.gemma3(["merge-adapter", "--model", f.hf.path, "--adapter", adapter.path, "--out", merged.path, "--gguf", gguf.path])
        #expect(m.status == 0, "merge-adapter: \(m.stderr)")
        for path in [merged.path, gguf.path] {
            let model = try LanguageModel.load(path, options: LoadOptions(prefill: .float32))
            let e = try model.makeEngine(context: f.ids.count)
            var l: [Float] = []
            for id in f.ids { l += Array(try e.decode(id)) }
            #expect(maxAbsDifference(l, logits) < 1e-4, "\(path) vs base + adapter")
        }

        // llama.cpp's LoRA GGUF: `convert` of the adapter directory writes what best/ holds, and llama.cpp with
        // it on the base GGUF gives the logits of base + adapter.
        let converted = f.dir.appendingPathComponent("converted.gguf")
        let c = try Self.gemma3(["convert", adapter.path, converted.path])
        #expect(c.status == 0, "convert adapter: \(c.stderr)")
        #expect(try Data(contentsOf: converted) == Data(contentsOf: adapter.appendingPathComponent(TrainingCheckpoint.adapterGGUFName)))
        if let tool = dumpLogitsTool {
            let idsURL = f.dir.appendingPathComponent("ids.txt"), outURL = f.dir.appendingPathComponent("llama-lora.f32")
            try Data(f.ids.map(String.init).joined(separator: " ").utf8).write(to: idsURL)
            let l = try run(tool, [f.gguf.path, idsURL.path, outURL.path, "2", "0", converted.path])
            #expect(l.status == 0, "llama.cpp with --lora: \(String(decoding: l.stderr, as: UTF8.self).suffix(1500))")
            if l.status == 0 {
                let bytes = try Data(contentsOf: outURL)
                var theirs = [Float](repeating: 0, count: bytes.count / 4)
                _ = theirs.withUnsafeMutableBytes { bytes.copyBytes(to: $0) }
                #expect(theirs.count == logits.count)
                let difference = maxAbsDifference(theirs, logits)
                print("llama.cpp with our LoRA GGUF vs base + adapter: max |Δ logit| \(difference) (max |logit| \(maxAbs(logits)))")
                #expect(difference < 1e-3 * max(1, maxAbs(logits)), "llama.cpp --lora vs our merged model: \(difference)")
                // Not vacuous: the adapter moves the logits much further than that.
                let plain = try LanguageModel.load(f.hf.path).makeEngine(context: f.ids.count)
                var baseLogits: [Float] = []
                for id in f.ids { baseLogits += Array(try plain.decode(id)) }
                #expect(maxAbsDifference(baseLogits, logits) > 10 * difference, "the adapter moves the logits by \(maxAbsDifference(baseLogits, logits))")
            }
        } else {
            notice("llama-dump-logits not found: skipped the llama.cpp --lora comparison")
        }

        // Bad input: one line on stderr, non-zero exit.
        let bad = f.dir.appendingPathComponent("bad.jsonl")
        try "{\"prompt\": \"ab\"}\n".write(to: bad, atomically: true, encoding: .utf8)
        let e = try Self.gemma3(["finetune", "--model", f.hf.path, "--data", bad.path, "--out", f.dir.appendingPathComponent("bad").path, "--quiet"])
        #expect(e.status != 0 && e.stderr.split(separator: "\n").count == 1 && e.stderr.contains("bad.jsonl:1"), "\(e.status) \(e.stderr)")
    }

    @Test("gemma3 finetune --method full trains every weight and writes loadable model directories")
    func fullFineTune() throws {
        let f = try LoRAAdapterTests.fixture()
        defer { try? FileManager.default.removeItem(at: f.dir) }
        let data = f.dir.appendingPathComponent("train.jsonl")
        try Self.writeExamples(data, count: 30)
        let out = f.dir.appendingPathComponent("full")
        let r = try Self.gemma3(["finetune", "--model", f.gguf.path, "--data", data.path, "--out", out.path, "--method", "full", "--quiet", "--json",
                                 "--batch-size", "4", "--block-size", "16", "--max-iters", "4", "--eval-interval", "2", "--learning-rate", "1e-3"])
        #expect(r.status == 0, "finetune --method full: \(r.stderr)")
        let model = try LanguageModel.load(out.appendingPathComponent("best").path)
        #expect(model.format == .huggingFaceGemma, "best/ carries the Gemma tokenizer")
        let base = try LanguageModel.load(f.hf.path)
        let moved = zip(Array(model.parameters!.buffer), Array(base.parameters!.buffer)).contains { abs($0 - $1) > 1e-6 }
        #expect(moved, "full fine-tuning changed no weight")
        // Exact resume from a GGUF base: 2 steps, stop, resume to 4 equals the uninterrupted run.
        let split = f.dir.appendingPathComponent("full-split")
        let common = ["finetune", "--model", f.gguf.path, "--data", data.path, "--out", split.path, "--method", "full", "--quiet",
                      "--batch-size", "4", "--block-size", "16", "--max-iters", "4", "--eval-interval", "2", "--learning-rate", "1e-3"]
        let first = try Self.gemma3(common + ["--stop-after-step", "2"])
        #expect(first.status == 0, "first half: \(first.stderr)")
        let second = try Self.gemma3(common + ["--resume"])
        #expect(second.status == 0, "--resume: \(second.stderr)")
        #expect(try Data(contentsOf: split.appendingPathComponent("latest/model.safetensors"))
                == Data(contentsOf: out.appendingPathComponent("latest/model.safetensors")), "resumed full fine-tune differs")
    }
}
