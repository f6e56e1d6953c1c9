import Foundation
import Gemma3TestSupport
import Testing
import Gemma3Formats
import Gemma3Tokenizers
@testable import Gemma3Model

/// Runs `gemma3 args…` with `stdin`; returns (exit status, stdout, stderr).
private func runGemma3(_ args: [String], stdin: String? = nil) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = try gemma3Executable()
    p.arguments = args
    let out = Pipe(), err = Pipe(), input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = input
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// A model directory as the trainer writes it: the golden tiny weights, config.json, GPT-2 files.
private final class TinyModelDirectory {
    let url: URL
    let config: Gemma3Config
    let store: ParameterStore
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-infer-cli-\(UUID().uuidString)")
        let golden = sharedGolden.appendingPathComponent("tiny")
        config = try Gemma3Config.load(from: golden.appendingPathComponent("config.json"))
        store = ParameterStore(config: config)
        try store.load(contentsOf: golden.appendingPathComponent("golden.safetensors"), allowUnexpected: true)
        try HFCheckpoint.save(config: config, parameters: store, directory: url)
        let gpt2 = sharedGolden.deletingLastPathComponent().appendingPathComponent("data/gpt2")
        for f in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: gpt2.appendingPathComponent(f), to: url.appendingPathComponent(f))
        }
    }
    deinit { try? FileManager.default.removeItem(at: url) }
}

@Suite(.serialized) struct CommandLineTests {
    @Test func generateJSONIsTheEnginesGreedyOutput() throws {
        let dir = try TinyModelDirectory()
        let (status, stdout, stderr) = try runGemma3([
            "generate", "--model", dir.url.path, "--prompt", "Once upon a time, there was", "--temperature", "0",
            "--max-new-tokens", "12", "--ignore-eos", "--json"])
        #expect(status == 0, "\(stderr)")
        let lines = stdout.split(separator: "\n")
        #expect(lines.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        let promptIds = try #require(object["prompt_ids"] as? [Int])
        let generated = try #require(object["generated_ids"] as? [Int])
        let tokenizer = try GPT2Tokenizer(directory: dir.url)
        #expect(promptIds == tokenizer.encodeOrdinary("Once upon a time, there was").map(Int.init))
        #expect(object["text"] as? String == (try tokenizer.decodeToString(generated.map { Int32($0) })))
        #expect((object["decode_tokens_per_second"] as? Double ?? 0) > 0)
        #expect((object["prefill_tokens_per_second"] as? Double ?? 0) > 0)
        // The same greedy continuation in process.
        let engine = try InferenceEngine(weights: try InferenceWeights(config: dir.config, parameters: dir.store), maxContext: 64)
        let expected = try Generator(engine: engine, tokenizer: tokenizer).generate(promptIds: promptIds.map { TokenID($0) }, options: GenerationOptions(maxNewTokens: 12))
        #expect(generated == expected.generatedIds.map(Int.init))
    }

    /// Like llama.cpp's completion tool, the story starts with the prompt; --no-echo leaves it out.
    @Test func generatePrintsThePromptFirst() throws {
        let dir = try TinyModelDirectory()
        let prompt = "Once upon a time, there was"
        let args = ["generate", "--model", dir.url.path, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "6", "--ignore-eos"]
        let echoed = try runGemma3(args)
        let bare = try runGemma3(args + ["--no-echo"])
        #expect(echoed.0 == 0 && bare.0 == 0, "\(echoed.2) \(bare.2)")
        #expect(echoed.1 == prompt + bare.1, "\(echoed.1.debugDescription) vs \(bare.1.debugDescription)")
        #expect(bare.1.count > 1)
    }

    @Test func generateStreamsTextAndStatistics() throws {
        let dir = try TinyModelDirectory()
        let (status, stdout, stderr) = try runGemma3([
            "generate", "--model", dir.url.path, "--interactive", "--max-new-tokens", "5", "--seed", "7", "--ignore-eos"],
            stdin: "Hello\n\nThe dog\n")
        #expect(status == 0)
        #expect(stdout.hasSuffix("\n") && stdout.count > 2)
        // One statistics line (prompt and generation speed) per non-empty prompt.
        #expect(stderr.split(separator: "\n").filter { $0.hasPrefix("[prompt") && $0.contains("tokens/s") }.count == 2)
    }

    @Test func badInputsFailWithOneLine() throws {
        let dir = try TinyModelDirectory()
        let cases: [[String]] = [
            ["generate", "--model", dir.url.path + "-missing", "--prompt", "x"],
            ["generate", "--model", dir.url.path, "--prompt", ""],
            ["generate", "--model", dir.url.path, "--prompt", "one two three four five six", "--context", "4"],
            ["generate", "--model", dir.url.path, "--prompt", "x", "--top-p", "0"],
            // A negative value after a space is read as the value (it used to say "missing value").
            ["generate", "--model", dir.url.path, "--prompt", "x", "--max-new-tokens", "-1"],
            ["generate", "--model", dir.url.path, "--prompt", "x", "--temperature", "-0.5"],
            ["eval", "--model", dir.url.path, "--data", dir.url.appendingPathComponent("missing.bin").path],
        ]
        for args in cases {
            let (status, stdout, stderr) = try runGemma3(args)
            #expect(status != 0, "\(args)")
            #expect(stdout.isEmpty)
            let errorLines = stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
            #expect(errorLines.count == 1, "\(args): \(stderr)")
            if args.contains("-1") || args.contains("-0.5") { #expect(!stderr.contains("Missing value"), "\(args): \(stderr)") }
        }
    }

    @Test func evalJSONMatchesTheLibrary() throws {
        let dir = try TinyModelDirectory()
        let tokens = (0..<61).map { UInt16(($0 * 7919 + 13) % 50257) }
        let file = dir.url.appendingPathComponent("val.bin")
        try tokens.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: file)
        let (status, stdout, stderr) = try runGemma3(["eval", "--model", dir.url.path, "--data", file.path, "--context", "24", "--batch-size", "2", "--json"])
        #expect(status == 0, "\(stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any])
        let expected = try tokens.withUnsafeBufferPointer {
            try Evaluation.evaluate(config: dir.config, parameters: dir.store, tokens: $0, context: 24)
        }
        #expect(object["predicted_tokens"] as? Int == 60)  // windows of 25, 25, 12 tokens, one padded
        #expect(abs((object["loss"] as? Double ?? 0) - expected.loss) < 1e-6)
        #expect(abs((object["perplexity"] as? Double ?? 0) / exp(expected.loss) - 1) < 1e-5)
    }

    @Test func benchGenerateReportsSpeedsAndCacheBytes() throws {
        let (status, stdout, stderr) = try runGemma3([
            "bench", "generate", "--preset", "tinystories-5m", "--prompt-tokens", "40", "--new-tokens", "8", "--runs", "1", "--json"])
        #expect(status == 0, "\(stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any])
        for key in ["prefill_tokens_per_second", "decode_tokens_per_second", "decode_gb_per_second", "sgemm_gflops_per_second"] {
            #expect((o[key] as? Double ?? 0) > 0, "\(key)")
        }
        let config = try #require(Gemma3Config.preset(named: "tinystories-5m"))
        #expect(o["kv_cache_bytes_full_context"] as? Int == KVCache.bytes(config: config, context: config.maxPositionEmbeddings))
    }
}
