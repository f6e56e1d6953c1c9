import Foundation
import Gemma3TestSupport
import Testing
import Gemma3Formats
import Gemma3Kernels
@testable import Gemma3Model
import Gemma3Tokenizers

/// Runs `gemma3 args…`; returns (exit status, stdout, stderr).
private func gemma3(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let r = try run(try gemma3Executable().path, args)
    return (r.status, String(decoding: r.stdout, as: UTF8.self), String(decoding: r.stderr, as: UTF8.self))
}

private func jsonObject(_ text: String) throws -> [String: Any] {
    let lines = text.split(separator: "\n")
    #expect(lines.count == 1, "expected one JSON line, got \(lines.count)")
    return try #require(try JSONSerialization.jsonObject(with: Data((lines.first ?? "").utf8)) as? [String: Any])
}

@Suite("gemma3 convert and Gemma Hugging Face directories on the command line", .serialized)
struct ConvertCommandTests {
    @Test("convert GGUF → directory → GGUF; tokenize, detokenize, generate and chat use the directory's Gemma tokenizer")
    func commandLine() throws {
        let vocabulary = OrderedGemmaVocabulary()
        let tokenizer = try vocabulary.tokenizer()
        let config = tinyConfig(vocab: vocabulary.pieces.count)
        let store = tinyStore(config, seed: 5)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let gguf = dir.appendingPathComponent("tiny.gguf").path
        try GGUFGemma3.writer(config: config, parameters: store, matrixType: .f32, tokenizer: tokenizer).write(to: URL(fileURLWithPath: gguf))
        let hf = dir.appendingPathComponent("hf").path

        var r = try gemma3(["convert", gguf, hf, "--type", "f32", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let summary = try jsonObject(r.stdout)
        #expect(summary["direction"] as? String == "gguf-to-hf" && summary["tokenizer"] as? Bool == true)
        for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            #expect(FileManager.default.fileExists(atPath: hf + "/" + name), "\(name)")
        }

        // tokenize / detokenize --model DIR: Gemma ids with the BOS, as for the GGUF file.
        let text = "The café at the\n\nhello <b>world</b>"
        r = try gemma3(["tokenize", "--model", hf, "--json", text])
        #expect(r.status == 0, "\(r.stderr)")
        let ids = try #require(try jsonObject(r.stdout)["ids"] as? [Int])
        #expect(ids == tokenizer.encode(text).map(Int.init) && ids.first == 2)
        r = try gemma3(["tokenize", "--model", gguf, "--json", text])
        #expect(try jsonObject(r.stdout)["ids"] as? [Int] == ids)
        r = try gemma3(["detokenize", "--model", hf] + ids.map(String.init))
        #expect(r.status == 0 && r.stdout == text, "\(r.stdout.debugDescription) \(r.stderr)")
        r = try gemma3(["detokenize", "--model", gguf, "--special", "2", "4"])
        #expect(r.stdout == "<bos><start_of_turn>")

        // generate --model DIR: the Gemma tokenizer (BOS first) and the engine's greedy tokens.
        r = try gemma3(["generate", "--model", hf, "--prompt", "the hello", "--temperature", "0", "--max-new-tokens", "6",
                        "--ignore-eos", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let generated = try jsonObject(r.stdout)
        let promptIds = try #require(generated["prompt_ids"] as? [Int])
        #expect(promptIds == tokenizer.encode("the hello").map(Int.init))
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store), maxContext: 64)
        let expected = try Generator(engine: engine, tokenizer: tokenizer).generate(promptIds: promptIds.map { TokenID($0) }, options: GenerationOptions(maxNewTokens: 6))
        #expect(generated["generated_ids"] as? [Int] == expected.generatedIds.map(Int.init))

        // eval --text: Gemma's tokenizer, <bos> windows; the GGUF file and the directory agree with
        // the library evaluation, and bits per byte use the text's own bytes per token.
        let evalText = dir.appendingPathComponent("story.txt")
        let story = String(repeating: "the hello world café at the <b>hello</b>\n", count: 12)
        try Data(story.utf8).write(to: evalText)
        var losses: [Double] = []
        for model in [gguf, hf] {
            r = try gemma3(["eval", "--model", model, "--text", evalText.path, "--context", "16", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let o = try jsonObject(r.stdout)
            let all = tokenizer.encode(story, addBOS: false).map(Int.init)
            #expect(o["predicted_tokens"] as? Int == all.count)
            #expect(o["windows"] as? Int == (all.count + 15) / 16)
            let bpt = try #require(o["bytes_per_token"] as? Double)
            #expect(abs(bpt - Double(story.utf8.count) / Double(all.count)) < 1e-12)
            losses.append(try #require(o["loss"] as? Double))
        }
        let evalEngine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store), maxContext: 17)
        let reference = try Evaluation.evaluate(engine: evalEngine, tokens: tokenizer.encode(story, addBOS: false), context: 16, bos: 2)
        for loss in losses { #expect(abs(loss - reference.loss) < 1e-5, "\(loss) vs \(reference.loss)") }
        r = try gemma3(["eval", "--model", gguf, "--data", evalText.path])
        #expect(r.status != 0 && r.stderr.contains("--text"), "\(r.stderr)")

        // chat --model DIR: Gemma's turn format.
        r = try gemma3(["chat", "--model", hf, "--message", "hello", "--temperature", "0", "--max-new-tokens", "2", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let turns = try #require(try jsonObject(r.stdout)["turns"] as? [[String: Any]])
        let start = tokenizer.id(of: "<start_of_turn>")!
        #expect((turns.first?["prompt_ids"] as? [Int])?.prefix(2) == [2, Int(start)])

        // Back to GGUF (Q8_0), with the tokenizer.
        let back = dir.appendingPathComponent("back.gguf").path
        r = try gemma3(["convert", hf, back, "--type", "q8_0", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try jsonObject(r.stdout)["direction"] as? String == "hf-to-gguf")
        let file = try GGUFFile(path: back)
        #expect(file.tensor(named: "blk.0.ffn_up.weight")?.type == .q8_0)
        #expect(try GGUFGemma3.tokenizer(from: file).pieces == tokenizer.pieces)

        // Bad input: one-line errors, non-zero exit, nothing overwritten.
        for args in [["convert", gguf, hf],                                     // non-empty directory without --force
                     ["convert", hf, back],                                     // existing file without --force
                     ["convert", gguf, dir.appendingPathComponent("x").path, "--type", "q4_k"],
                     ["convert", hf, dir.appendingPathComponent("y.gguf").path, "--type", "q4_k"],
                     ["convert", dir.appendingPathComponent("missing.gguf").path, dir.appendingPathComponent("z").path],
                     ["convert", dir.appendingPathComponent("hf/config.json").path, dir.appendingPathComponent("w").path],
                     ["tokenize", "--model", dir.path, "x"],                    // a directory without tokenizer.json
                     ["detokenize", "--model", hf, "999999"]] {
            let e = try gemma3(args)
            #expect(e.status != 0, "\(args) should fail")
            let message = e.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(message.hasPrefix("Error: ") && !message.contains("\n"), "\(args): \(message)")
        }
        #expect(try GGUFFile(path: back).tensor(named: "blk.0.ffn_up.weight")?.type == .q8_0)
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("x").path))
    }

    @Test("bench generate --model FILE.gguf with two --llama-bench builds: one entry each, with its speeds and our ratios")
    func benchGenerateWithSeveralLlamaBenches() throws {
        let vocabulary = OrderedGemmaVocabulary()
        let config = tinyConfig(vocab: vocabulary.pieces.count)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let gguf = dir.appendingPathComponent("tiny.gguf").path
        try GGUFGemma3.writer(config: config, parameters: tinyStore(config, seed: 9), matrixType: .q8_0,
                              tokenizer: try vocabulary.tokenizer()).write(to: URL(fileURLWithPath: gguf))
        // Two fake llama-bench executables printing llama-bench's JSON rows (pp then tg).
        var paths: [String] = []
        for (name, pp, tg) in [("a", 100.0, 50.0), ("b", 400.0, 20.0)] {
            let path = dir.appendingPathComponent("llama-bench-\(name)").path
            try """
            #!/bin/sh
            echo '[{"n_prompt": 4, "n_gen": 0, "avg_ts": \(pp), "stddev_ts": 1.0},'
            echo ' {"n_prompt": 0, "n_gen": 3, "avg_ts": \(tg), "stddev_ts": 0.5}]'
            """.write(toFile: path, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path)
            paths.append(path)
        }
        let r = try gemma3(["bench", "generate", "--model", gguf, "--prompt-tokens", "4", "--new-tokens", "3", "--runs", "1",
                            "--llama-bench", paths[0], "--llama-bench", paths[1], "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try jsonObject(r.stdout)
        #expect((object["host_cpu"] as? String)?.isEmpty == false)
        let prefill = try #require(object["prefill_tokens_per_second"] as? Double)
        let decode = try #require(object["decode_tokens_per_second"] as? Double)
        let entries = try #require(object["llama_bench"] as? [[String: Any]])
        #expect(entries.count == 2)
        for (entry, (path, pp, tg)) in zip(entries, [(paths[0], 100.0, 50.0), (paths[1], 400.0, 20.0)]) {
            #expect(entry["path"] as? String == path)
            #expect(entry["isa"] as? String == "unknown")  // no libggml-cpu.so beside the fakes
            #expect(entry["pp_tokens_per_second"] as? Double == pp && entry["tg_tokens_per_second"] as? Double == tg)
            #expect(abs((entry["prefill_speedup"] as? Double ?? 0) - prefill / pp) < 1e-9 * prefill)
            #expect(abs((entry["decode_speedup"] as? Double ?? 0) - decode / tg) < 1e-9 * decode)
        }
        // --llama-bench without --model is a one-line error.
        let bad = try gemma3(["bench", "generate", "--preset", "tinystories-5m", "--llama-bench", paths[0]])
        #expect(bad.status != 0 && bad.stderr.contains("--llama-bench needs --model"))
    }
}
