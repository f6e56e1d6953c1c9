import ArgumentParser
import Dispatch
import Foundation
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Model

/// `gemma3 bench generate`: prefill and decode speed of the inference engine on random weights.
struct BenchGenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Measure prefill and decode tokens/s of the KV-cache engine (a preset with random weights, or a GGUF model).",
        discussion: """
        Each run resets the cache, prefills --prompt-tokens random tokens in one batched pass \
        (chunked like generation), then decodes --new-tokens tokens greedily, one at a time, LM head \
        included; further runs decode --new-tokens tokens from an empty context (one prompt token, \
        the shape of llama-bench's tg test). Reports medians over --runs runs after one warm-up run, the weight bytes one \
        decode step reads and the bandwidth that implies, the KV-cache bytes, the GFLOP/s of \
        the prefill next to an sgemm of the model's MLP shape measured in the same run, and where \
        the decode time goes (per tensor role and storage type, from one extra profiled run).
        With --model FILE.gguf the real model's weights are used as the generate command uses them \
        (on AVX-512 VNNI CPUs packed blocks with 8-bit activations, else unpacked blocks with 14-bit \
        activations; prefill in bfloat16 on AVX-512 BF16 CPUs unless --prefill f32); \
        --llama-bench PATH then also runs llama.cpp's llama-bench on the same file with the same \
        thread count (pp = --prompt-tokens, tg = --new-tokens) and prints the ratios. Repeat \
        --llama-bench to compare several llama.cpp builds in one sitting (e.g. one built for AVX2 \
        and one for the host's AVX-512); the vector extensions each was compiled with are read \
        from its libggml-cpu.so and printed next to the host CPU's.
        """
    )

    @Option(help: "Model preset: \(Gemma3Config.presetNames.joined(separator: ", ")).")
    var preset = "tinystories-270m"

    @Option(help: "Weight storage: f32 or bf16.")
    var dtype: WeightDType = .f32

    @Option(help: "Prompt length (prefill tokens).")
    var promptTokens = 128

    @Option(help: "Tokens to decode after the prompt.")
    var newTokens = 64

    @Option(help: "Timed runs (the median is reported).")
    var runs = 3

    @Option(help: "Seed of the random weights and prompt.")
    var seed: UInt64 = 1234

    @Option(help: ArgumentHelp("A GGUF model file to measure instead of a preset (e.g. ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf).", valueName: "file.gguf"))
    var model: String?

    @Option(help: ArgumentHelp("Also run llama.cpp's llama-bench (this executable) on --model in the same run; repeatable.", valueName: "path"))
    var llamaBench: [String] = []

    @Option(help: ArgumentHelp("Also time Hugging Face transformers' generate() with this python (needs torch and transformers), same shape and lengths, in the same run.", valueName: "python"))
    var transformers: String?

    @Option(help: ArgumentHelp("The reference script run by --transformers.", valueName: "file"))
    var transformersScript = "scripts/reference/hf_generate_bench.py"

    @Option(help: ArgumentHelp(PrefillChoice.help, valueName: "auto|f32|bf16"))
    var prefill: PrefillChoice = .auto

    @Flag(help: "Print one JSON object.")
    var json = false

    /// Internal: prints the vector extensions of this libggml-cpu.so and exits (run in a child
    /// process, because two llama.cpp builds' libraries cannot be loaded into one process).
    @Option(help: .hidden)
    var probeGgmlCpu: String?

    func validate() throws {
        guard Gemma3Config.preset(named: preset) != nil else {
            throw ValidationError("unknown preset \"\(preset)\" (choose from \(Gemma3Config.presetNames.joined(separator: ", ")))")
        }
        if promptTokens < 1 { throw ValidationError("--prompt-tokens must be at least 1") }
        if newTokens < 1 { throw ValidationError("--new-tokens must be at least 1") }
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        if !llamaBench.isEmpty && model == nil { throw ValidationError("--llama-bench needs --model FILE.gguf") }
        if model != nil && transformers != nil { throw ValidationError("--transformers compares the tinystories-270m preset; it cannot be used with --model") }
    }

    func run() throws {
        if let library = probeGgmlCpu {
            print(Self.compiledFeatures(ofGGMLCPULibrary: library))
            return
        }
        let weights: InferenceWeights
        let label: String
        // Presets keep float32 products; GGUF models follow --prefill.
        var prefillPrecision = PrefillPrecision.float32
        var rng = SplitMix64(seed: seed ^ 0x5EED)
        if let model {
            prefillPrecision = try prefill.precision() ?? PrefillPrecision.automatic
            guard LanguageModel.isGGUF(model) else { throw ValidationError("--model must be a GGUF file") }
            let loaded = try loadModel(model, options: LoadOptions(prefill: prefillPrecision))
            weights = loaded.weights
            label = "\(URL(fileURLWithPath: model).lastPathComponent) (\(GGUFGemma3.formatName(of: loaded.ggufFile!)))"
        } else {
            let config = Gemma3Config.preset(named: preset)!
            let store = ParameterStore(config: config)
            store.initializeForTraining(config: config, seed: seed)
            // Random norm weights too, so the activations are not degenerate.
            for t in store.layout.tensors where !t.isMatrix { rng.fillNormal(store.view(t), std: 0.1) }
            weights = try InferenceWeights(config: config, parameters: store, dtype: dtype)
            label = "\(preset), \(dtype) weights"
        }
        let config = weights.config
        let context = promptTokens + newTokens
        guard context <= config.maxPositionEmbeddings else {
            throw ValidationError("--prompt-tokens + --new-tokens = \(context) exceeds the model's context \(config.maxPositionEmbeddings)")
        }
        let engine = try InferenceEngine(weights: weights, maxContext: context)
        let prompt = (0..<promptTokens).map { _ in TokenID(rng.next() % UInt64(config.vocabSize)) }

        var prefillTimes: [Double] = [], decodeTimes: [Double] = []
        for run in 0...runs {
            engine.reset()
            var start = DispatchTime.now().uptimeNanoseconds
            var logits = try engine.prefill(prompt)
            let prefill = seconds(since: start)
            start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<newTokens {
                logits = try engine.decode(TokenID(Sampler.argmax(UnsafeBufferPointer(logits))))
            }
            let decode = seconds(since: start)
            if run > 0 {  // run 0 warms up (page faults, caches)
                prefillTimes.append(prefill)
                decodeTimes.append(decode)
            }
        }
        // Decoding from an empty context (one prompt token), the shape of llama-bench's tg test:
        // attention then reads few keys, so the weights dominate.
        var startDecodeTimes: [Double] = []
        for run in 0...runs {
            engine.reset()
            var logits = try engine.prefill([prompt[0]])
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<newTokens {
                logits = try engine.decode(TokenID(Sampler.argmax(UnsafeBufferPointer(logits))))
            }
            if run > 0 { startDecodeTimes.append(seconds(since: start)) }
        }
        // One extra run with the stage profile attached (kept out of the timed runs).
        let prefillProfile = EngineProfile()
        engine.reset()
        engine.profile = prefillProfile
        var logits = try engine.prefill(prompt)
        let prefillShares = EngineProfile.Stage.allCases.map { ($0.name, prefillProfile.share($0)) }
        let profile = EngineProfile()
        engine.profile = profile
        for _ in 0..<newTokens { logits = try engine.decode(TokenID(Sampler.argmax(UnsafeBufferPointer(logits)))) }
        engine.profile = nil
        let stages = decodeStages(weights: weights, profile: profile)
        let llama = llamaBench.map { runLlamaBench($0, model: model!) }

        let prefillSeconds = median(prefillTimes), decodeSeconds = median(decodeTimes)
        let prefillTPS = Double(promptTokens) / prefillSeconds
        let decodeTPS = Double(newTokens) / decodeSeconds
        let startDecodeTPS = Double(newTokens) / median(startDecodeTimes)
        let bytesPerToken = weights.decodeBytesPerToken
        let prefillGFLOPs = prefillFLOPs(config) / prefillSeconds / 1e9
        let sgemm = measureSGEMM(config)
        let reference = transformers.map { runTransformers(python: $0) }

        if json {
            var object: [String: Any] = [
                "model": model ?? preset, "dtype": model == nil ? dtype.rawValue : label, "prompt_tokens": promptTokens, "new_tokens": newTokens, "runs": runs,
                "threads": Parallel.threadCount, "build": BuildInfo.description, "host_cpu": BuildInfo.hostCPU,
                "prefill_precision": prefillPrecision.rawValue,
                "decode_activations": model == nil ? "float" : QuantizedLinear.defaultActivations.rawValue,
                "prefill_seconds": prefillSeconds, "prefill_tokens_per_second": prefillTPS,
                "prefill_gflops_per_second": prefillGFLOPs, "sgemm_gflops_per_second": sgemm,
                "decode_seconds": decodeSeconds, "decode_tokens_per_second": decodeTPS,
                "decode_from_start_tokens_per_second": startDecodeTPS,
                "decode_bytes_per_token": bytesPerToken,
                "decode_gb_per_second": Double(bytesPerToken) * decodeTPS / 1e9,
                "weight_bytes": weights.totalBytes,
                "kv_cache_bytes": engine.cache.bytes,
                "kv_cache_bytes_full_context": KVCache.bytes(config: config, context: config.maxPositionEmbeddings),
                "full_context": config.maxPositionEmbeddings,
            ]
            object["prefill_stage_shares"] = Dictionary(uniqueKeysWithValues: prefillShares)
            object["decode_stages"] = stages.map { st -> [String: Any] in
                ["stage": st.stage, "formats": st.formats, "bytes_per_token": st.bytes,
                 "seconds_per_token": st.seconds, "share": st.share,
                 "gb_per_second": st.bytes > 0 && st.seconds > 0 ? Double(st.bytes) / st.seconds / 1e9 : 0]
            }
            if !llama.isEmpty {
                object["llama_bench"] = llama.map { entry in
                    var entry = entry
                    if let theirs = entry["pp_tokens_per_second"] as? Double, theirs > 0 { entry["prefill_speedup"] = prefillTPS / theirs }
                    if let theirs = entry["tg_tokens_per_second"] as? Double, theirs > 0 {
                        entry["decode_speedup"] = decodeTPS / theirs
                        entry["decode_from_start_speedup"] = startDecodeTPS / theirs
                    }
                    return entry
                }
            }
            if let reference {
                object["transformers"] = reference
                if let theirs = reference["decode_tokens_per_second"] as? Double, theirs > 0 { object["decode_speedup_vs_transformers"] = decodeTPS / theirs }
                if let theirs = reference["prefill_tokens_per_second"] as? Double, theirs > 0 { object["prefill_speedup_vs_transformers"] = prefillTPS / theirs }
            }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            func mb(_ b: Int) -> String { String(format: "%.1f MB", Double(b) / 1e6) }
            print("bench generate: \(label) (\(mb(weights.totalBytes))), \(Parallel.threadCount) threads, median of \(runs) runs, \(BuildInfo.description)")
            print("  host CPU: \(BuildInfo.hostCPU)")
            if model != nil {
                print("  decode kernels: " + (QuantizedLinear.defaultActivations == .int8
                    ? "8-bit activations on the packed blocks (AVX-512 VNNI)" : "14/16-bit activations on unpacked blocks"))
            }
            print(String(format: "  prefill %d tokens (\(prefillPrecision.rawValue) products): %.3f s, %.1f tokens/s, %.1f GFLOP/s (float32 sgemm of the MLP shape here: %.1f GFLOP/s, %.0f%%)",
                         promptTokens, prefillSeconds, prefillTPS, prefillGFLOPs, sgemm, 100 * prefillGFLOPs / sgemm))
            print(String(format: "  decode %d tokens: %.3f s, %.1f tokens/s, ", newTokens, decodeSeconds, decodeTPS)
                  + "\(mb(bytesPerToken)) read per token, " + String(format: "%.1f GB/s", Double(bytesPerToken) * decodeTPS / 1e9))
            print(String(format: "  decode %d tokens from an empty context (llama-bench tg's shape): %.1f tokens/s", newTokens, startDecodeTPS))
            print("  prefill time by stage: " + prefillShares.filter { $0.1 > 0.0005 }.map { "\($0.0) " + String(format: "%.1f%%", $0.1 * 100) }.joined(separator: ", "))
            print("  decode time per token by stage (one profiled run):")
            func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
            for st in stages {
                let bw = st.bytes > 0 && st.seconds > 0 ? String(format: ", %5.1f GB/s", Double(st.bytes) / st.seconds / 1e9) : ""
                print("    " + pad(st.stage, 30) + " " + pad(st.formats, 22) + String(format: " %6.2f ms %5.1f%%", st.seconds * 1e3, st.share * 100)
                      + (st.bytes > 0 ? "  \(mb(st.bytes))\(bw)" : ""))
            }
            for entry in llama {
                let path = entry["path"] as? String ?? "llama-bench"
                if let error = entry["error"] as? String {
                    print("  llama-bench \(path): not measured (\(error))")
                } else if let pp = entry["pp_tokens_per_second"] as? Double, let tg = entry["tg_tokens_per_second"] as? Double {
                    print("  llama-bench \(path) (built for \(entry["isa"] as? String ?? "unknown")):")
                    print(String(format: "    same file, same run, %d threads: pp%d %.1f tokens/s, tg%d %.1f tokens/s; ours: %.2fx prefill, "
                                 + "%.2fx decode from an empty context (%.2fx after the %d-token prompt)",
                                 Parallel.threadCount, promptTokens, pp, newTokens, tg, prefillTPS / pp, startDecodeTPS / tg, decodeTPS / tg, promptTokens))
                }
            }
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

    struct Stage { let stage: String; let formats: String; let bytes: Int; let seconds: Double; let share: Double }

    /// Decode time per token by engine stage, with the storage formats and bytes of the weights each reads.
    func decodeStages(weights: InferenceWeights, profile: EngineProfile) -> [Stage] {
        func matrices(_ stage: EngineProfile.Stage) -> [any LinearWeight] {
            switch stage {
            case .qkv: weights.layers.flatMap { [$0.q, $0.k, $0.v] }
            case .output: weights.layers.map(\.o)
            case .gateUp: weights.layers.flatMap { [$0.gate, $0.up] }
            case .down: weights.layers.map(\.down)
            case .lmHead: [weights.lmHead]
            case .attention, .other: []
            }
        }
        return EngineProfile.Stage.allCases.map { stage in
            let ms = matrices(stage)
            var counts: [String: Int] = [:]
            for m in ms { counts[m.formatName, default: 0] += 1 }
            let formats = counts.sorted { $0.value > $1.value }.map { counts.count > 1 ? "\($0.key)×\($0.value)" : $0.key }.joined(separator: " ")
            let seconds = profile.seconds(stage) / Double(newTokens)
            return Stage(stage: stage.name, formats: formats, bytes: ms.reduce(0) { $0 + $1.storageBytes },
                         seconds: seconds, share: profile.share(stage))
        }
    }

    /// Runs `llama-bench -m model -t threads -p promptTokens -n newTokens -o json`; pp/tg tokens/s, or ["error": why].
    func runLlamaBench(_ path: String, model: String) -> [String: Any] {
        let arguments = ["-m", model, "-t", String(Parallel.threadCount), "-p", String(promptTokens), "-n", String(newTokens),
                         "-r", String(max(3, runs)), "-o", "json"]
        let child: (status: Int32, stdout: Data, stderr: Data)
        do { child = try runChildProcess(URL(fileURLWithPath: path), arguments) } catch {
            return ["path": path, "error": "cannot run \(path): \(error.localizedDescription)"]
        }
        guard child.status == 0, let rows = try? JSONSerialization.jsonObject(with: child.stdout) as? [[String: Any]] else {
            return ["path": path, "error": "\(path) failed (exit status \(child.status))"]
        }
        var result: [String: Any] = ["path": path, "threads": Parallel.threadCount, "isa": llamaCppISA(llamaBench: path)]
        for row in rows {
            let np = row["n_prompt"] as? Int ?? 0, ng = row["n_gen"] as? Int ?? 0
            guard let ts = row["avg_ts"] as? Double else { continue }
            if np > 0 && ng == 0 { result["pp_tokens_per_second"] = ts; result["pp_stddev"] = row["stddev_ts"] }
            if ng > 0 && np == 0 { result["tg_tokens_per_second"] = ts; result["tg_stddev"] = row["stddev_ts"] }
            if let b = row["build_commit"] as? String { result["build_commit"] = b }
        }
        return result
    }

    /// The vector extensions a llama.cpp build was compiled with, asked of the `libggml-cpu.so` beside
    /// its `llama-bench` (its `ggml_cpu_has_*` functions report compile-time flags) in a child process
    /// of this executable; "unknown" when that library is not there (static builds, other layouts).
    func llamaCppISA(llamaBench path: String) -> String {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        let candidates = ["libggml-cpu.so", "../lib/libggml-cpu.so"].map { directory.appendingPathComponent($0).path }
        guard let library = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }),
              let executable = Bundle.main.executablePath,
              let child = try? runChildProcess(URL(fileURLWithPath: executable), ["bench", "generate", "--probe-ggml-cpu", library]),
              child.status == 0 else { return "unknown" }
        let line = String(decoding: child.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return line.isEmpty ? "unknown" : line
    }

    /// Loads `library` and lists the features its `ggml_cpu_has_*` functions report.
    static func compiledFeatures(ofGGMLCPULibrary library: String) -> String {
        guard let handle = dlopen(library, RTLD_LAZY | RTLD_LOCAL) else { return "unknown" }
        typealias HasFeature = @convention(c) () -> Int32
        let features: [(String, String)] = [("avx2", "AVX2"), ("fma", "FMA"), ("f16c", "F16C"), ("avx512", "AVX-512F"),
                                            ("avx512_vnni", "AVX-512-VNNI"), ("avx512_bf16", "AVX-512-BF16"), ("avx_vnni", "AVX-VNNI")]
        var resolved = false
        let present = features.filter { feature in
            guard let symbol = dlsym(handle, "ggml_cpu_has_" + feature.0) else { return false }
            resolved = true
            return unsafeBitCast(symbol, to: HasFeature.self)() != 0
        }.map(\.1)
        guard resolved else { return "unknown" }
        return present.isEmpty ? "no AVX2" : present.joined(separator: " ")
    }

    /// Runs the transformers reference script; its JSON object, or ["error": why].
    func runTransformers(python: String) -> [String: Any] {
        guard preset == "tinystories-270m" else { return ["error": "the reference script builds tinystories-270m only"] }
        let arguments = ["--prompt-tokens", String(promptTokens), "--new-tokens", String(newTokens),
                         "--runs", String(runs), "--threads", String(Parallel.threadCount), "--dtype", dtype.rawValue]
        switch runReferenceScript(python: python, script: transformersScript, optionName: "--transformers-script", arguments) {
        case .success(let object): return object
        case .failure(let error): return ["error": error.message]
        }
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

    func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
}
