import ArgumentParser
import Dispatch
import Foundation
import Gemma3Kernels
import Gemma3Model

/// `gemma3 bench generate`: prefill and decode speed of the inference engine on random weights.
struct BenchGenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Measure prefill and decode tokens/s of the KV-cache engine (random weights).",
        discussion: """
        Each run resets the cache, prefills --prompt-tokens random tokens in one batched pass \
        (chunked like generation), then decodes --new-tokens tokens greedily, one at a time, LM head \
        included. Reports medians over --runs runs after one warm-up run, the weight bytes one \
        decode step reads and the bandwidth that implies, the KV-cache bytes, and the GFLOP/s of \
        the prefill next to an sgemm of the model's MLP shape measured in the same run.
        """
    )

    @Option(help: "Model preset: \(Gemma3Config.presetNames.joined(separator: ", ")).")
    var preset = "tinystories-270m"

    @Option(help: "Weight storage: f32 or bf16.")
    var dtype = "f32"

    @Option(help: "Prompt length (prefill tokens).")
    var promptTokens = 128

    @Option(help: "Tokens to decode after the prompt.")
    var newTokens = 64

    @Option(help: "Timed runs (the median is reported).")
    var runs = 3

    @Option(help: "Seed of the random weights and prompt.")
    var seed: UInt64 = 1234

    @Option(help: ArgumentHelp("Also time Hugging Face transformers' generate() with this python (needs torch and transformers), same shape and lengths, in the same run.", valueName: "python"))
    var transformers: String?

    @Option(help: ArgumentHelp("The reference script run by --transformers.", valueName: "file"))
    var transformersScript = "scripts/reference/hf_generate_bench.py"

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard Gemma3Config.preset(named: preset) != nil else {
            throw ValidationError("unknown preset \"\(preset)\" (choose from \(Gemma3Config.presetNames.joined(separator: ", ")))")
        }
        guard WeightDType(rawValue: dtype) != nil else { throw ValidationError("--dtype must be f32 or bf16, got \"\(dtype)\"") }
        if promptTokens < 1 { throw ValidationError("--prompt-tokens must be at least 1") }
        if newTokens < 1 { throw ValidationError("--new-tokens must be at least 1") }
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
    }

    func run() throws {
        let config = Gemma3Config.preset(named: preset)!
        let context = promptTokens + newTokens
        guard context <= config.maxPositionEmbeddings else {
            throw ValidationError("--prompt-tokens + --new-tokens = \(context) exceeds the preset's context \(config.maxPositionEmbeddings)")
        }
        let store = ParameterStore(config: config)
        store.initializeForTraining(config: config, seed: seed)
        // Random norm weights too, so the activations are not degenerate.
        var rng = SplitMix64(seed: seed ^ 0x5EED)
        for t in store.layout.tensors where !t.isMatrix { rng.fillNormal(store.view(t), std: 0.1) }
        let weights = try InferenceWeights(config: config, parameters: store, dtype: WeightDType(rawValue: dtype)!)
        let engine = try InferenceEngine(weights: weights, maxContext: context)
        let prompt = (0..<promptTokens).map { _ in Int(rng.next() % UInt64(config.vocabSize)) }

        var prefillTimes: [Double] = [], decodeTimes: [Double] = []
        for run in 0...runs {
            engine.reset()
            var start = DispatchTime.now().uptimeNanoseconds
            var logits = try engine.prefill(prompt)
            let prefill = seconds(since: start)
            start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<newTokens {
                logits = try engine.decode(Sampler.argmax(UnsafeBufferPointer(logits)))
            }
            let decode = seconds(since: start)
            if run > 0 {  // run 0 warms up (page faults, caches)
                prefillTimes.append(prefill)
                decodeTimes.append(decode)
            }
        }
        let prefillSeconds = median(prefillTimes), decodeSeconds = median(decodeTimes)
        let prefillTPS = Double(promptTokens) / prefillSeconds
        let decodeTPS = Double(newTokens) / decodeSeconds
        let bytesPerToken = weights.decodeBytesPerToken
        let prefillGFLOPs = prefillFLOPs(config) / prefillSeconds / 1e9
        let sgemm = measureSGEMM(config)
        let reference = transformers.map { runTransformers(python: $0) }

        if json {
            var object: [String: Any] = [
                "preset": preset, "dtype": dtype, "prompt_tokens": promptTokens, "new_tokens": newTokens, "runs": runs,
                "threads": Parallel.threadCount,
                "prefill_seconds": prefillSeconds, "prefill_tokens_per_second": prefillTPS,
                "prefill_gflops_per_second": prefillGFLOPs, "sgemm_gflops_per_second": sgemm,
                "decode_seconds": decodeSeconds, "decode_tokens_per_second": decodeTPS,
                "decode_bytes_per_token": bytesPerToken,
                "decode_gb_per_second": Double(bytesPerToken) * decodeTPS / 1e9,
                "weight_bytes": weights.totalBytes,
                "kv_cache_bytes": engine.cache.bytes,
                "kv_cache_bytes_full_context": KVCache.bytes(config: config, context: config.maxPositionEmbeddings),
                "full_context": config.maxPositionEmbeddings,
            ]
            if let reference {
                object["transformers"] = reference
                if let theirs = reference["decode_tokens_per_second"] as? Double, theirs > 0 { object["decode_speedup_vs_transformers"] = decodeTPS / theirs }
                if let theirs = reference["prefill_tokens_per_second"] as? Double, theirs > 0 { object["prefill_speedup_vs_transformers"] = prefillTPS / theirs }
            }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            func mb(_ b: Int) -> String { String(format: "%.1f MB", Double(b) / 1e6) }
            print("bench generate: \(preset), \(dtype) weights (\(mb(weights.totalBytes))), \(Parallel.threadCount) threads, median of \(runs) runs")
            print(String(format: "  prefill %d tokens: %.3f s, %.1f tokens/s, %.1f GFLOP/s (sgemm of the MLP shape here: %.1f GFLOP/s, %.0f%%)",
                         promptTokens, prefillSeconds, prefillTPS, prefillGFLOPs, sgemm, 100 * prefillGFLOPs / sgemm))
            print(String(format: "  decode %d tokens: %.3f s, %.1f tokens/s, ", newTokens, decodeSeconds, decodeTPS)
                  + "\(mb(bytesPerToken)) read per token, " + String(format: "%.1f GB/s", Double(bytesPerToken) * decodeTPS / 1e9))
            if let reference {
                if let error = reference["error"] as? String {
                    print("  transformers: not measured (\(error))")
                } else if let p = reference["prefill_tokens_per_second"] as? Double, let d = reference["decode_tokens_per_second"] as? Double {
                    print(String(format: "  transformers generate (same run): prefill %.1f tokens/s, decode %.1f tokens/s; ours: %.2fx prefill, %.2fx decode",
                                 p, d, prefillTPS / p, decodeTPS / d))
                }
            }
            print("  KV cache: \(mb(engine.cache.bytes)) for \(context) positions; \(mb(KVCache.bytes(config: config, context: config.maxPositionEmbeddings))) at the full \(config.maxPositionEmbeddings)-token context")
        }
    }

    /// Runs the transformers reference script; its JSON object, or ["error": why].
    func runTransformers(python: String) -> [String: Any] {
        guard FileManager.default.fileExists(atPath: transformersScript) else {
            return ["error": "\(transformersScript) not found (run from the repository root or pass --transformers-script)"]
        }
        guard preset == "tinystories-270m" else { return ["error": "the reference script builds tinystories-270m only"] }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [python, transformersScript, "--prompt-tokens", String(promptTokens), "--new-tokens", String(newTokens),
                       "--runs", String(runs), "--threads", String(Parallel.threadCount), "--dtype", dtype]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch { return ["error": "cannot run \(python): \(error.localizedDescription)"] }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0,
              let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last,
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            let last = errors.split(separator: "\n").last.map(String.init) ?? "exit status \(p.terminationStatus)"
            return ["error": "\(python) \(transformersScript) failed: \(last)"]
        }
        return object
    }

    /// Multiply-add FLOPs (×2) of prefilling the prompt: every layer matrix per token, attention
    /// over the visible keys, and the LM head for the last token only.
    func prefillFLOPs(_ c: Gemma3Config) -> Double {
        let H = Double(c.hiddenSize), I = Double(c.intermediateSize), hd = Double(c.headDim)
        let q = Double(c.numAttentionHeads) * hd, kv = Double(c.numKeyValueHeads) * hd
        let perToken = 2 * (H * (q + 2 * kv) + q * H + 3 * H * I)
        var attention = 0.0
        for l in 0..<c.numHiddenLayers {
            for p in 0..<promptTokens {
                let keys = Double(c.isSliding(layer: l) ? min(p + 1, c.slidingWindow) : p + 1)
                attention += 4 * Double(c.numAttentionHeads) * hd * keys  // q·k and p·v
            }
        }
        return perToken * Double(c.numHiddenLayers) * Double(promptTokens) + attention + 2 * H * Double(c.vocabSize)
    }

    /// GFLOP/s of [n×H]·[I×H]ᵀ with the engine's threading (single-threaded OpenBLAS per core).
    func measureSGEMM(_ c: Gemma3Config) -> Double {
        let m = min(512, max(64, promptTokens)), n = c.intermediateSize, k = c.hiddenSize
        let a = UnsafeMutablePointer<Float>.allocate(capacity: m * k), b = UnsafeMutablePointer<Float>.allocate(capacity: n * k)
        let out = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
        defer { a.deallocate(); b.deallocate(); out.deallocate() }
        a.initialize(repeating: 0.01, count: m * k); b.initialize(repeating: 0.02, count: n * k)
        BLAS.setThreads(1)
        var times: [Double] = []
        for _ in 0..<7 {
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<4 { ParallelGEMM.sgemm(transB: true, m: m, n: n, k: k, a: a, b: b, c: out) }
            times.append(seconds(since: start) / 4)
        }
        return 2 * Double(m * n * k) / median(times) / 1e9
    }

    func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
}
