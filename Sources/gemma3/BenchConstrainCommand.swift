import ArgumentParser
import Dispatch
import Foundation
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Model
import Gemma3StructuredOutput

/// `gemma3 bench constrain`: what structured output costs: schema compilation, the vocabulary
/// trie, the first mask, and decode tokens/s with and without the constraint.
struct BenchConstrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "constrain",
        abstract: "Measure constrained decoding (--json-schema, --json-object, --regex): compile time, mask cost, decode tokens/s with and without it.",
        discussion: """
        Compiles the constraint (median of 20 compilations), builds the model's vocabulary trie, times \
        the first mask from the start state with an empty cache, then generates from --prompt: \
        --runs runs without a constraint (--new-tokens tokens, end-of-text ignored) and --runs runs \
        with it (until the value is complete or --new-tokens), each after one warm-up run. "Cold" \
        runs start every run with a fresh constraint (an empty mask cache, the cost of a first \
        request); "warm" runs share one (later requests with the same schema). Reports median decode \
        tokens/s, the slowdown, and the mask time per token. Without a constraint flag: --json-object.
        """
    )

    @Option(help: ArgumentHelp("Model: a Gemma 3 GGUF file (e.g. ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf) or a model directory.", valueName: "file.gguf|dir"))
    var model: String

    @OptionGroup(title: "Constraint")
    var structured: StructuredOutputFlags

    @Option(help: "The prompt.")
    var prompt = "Here is the record as JSON:\n"

    @Option(help: "Most tokens per run.")
    var newTokens = 128

    @Option(help: "Timed runs of each kind (medians are reported).")
    var runs = 3

    @Option(help: "Sampling temperature (0: greedy).")
    var temperature: Float = 0

    @Option(help: "Seed of the sampler.")
    var seed: UInt64 = 1

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if newTokens < 1 { throw ValidationError("--new-tokens must be at least 1") }
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        if temperature < 0 { throw ValidationError("--temperature must be ≥ 0") }
    }

    func run() throws {
        var compileTimes: [Double] = []
        var grammar: ByteGrammar? = nil
        for _ in 0..<20 {
            let start = DispatchTime.now().uptimeNanoseconds
            grammar = try structured.grammar() ?? ByteGrammar.jsonObject()
            compileTimes.append(seconds(since: start))
        }
        let compiled = grammar!
        let label = structured.isConstrained ? structured.label : "json-object"
        let loaded = try loadModel(model)
        var start = DispatchTime.now().uptimeNanoseconds
        let vocabulary = TokenVocabulary(tokenizer: loaded.tokenizer)
        let vocabularySeconds = seconds(since: start)

        let fresh = TokenConstraint(grammar: compiled, vocabulary: vocabulary)
        start = DispatchTime.now().uptimeNanoseconds
        let firstMask = fresh.allowedTokens(remainingTokens: newTokens)
        let firstMaskSeconds = seconds(since: start)

        let promptIds = loaded.tokenizer.encode(prompt)
        let generator = try loaded.makeGenerator(context: promptIds.count + newTokens + 1)
        let sampling = SamplingOptions(temperature: temperature, seed: seed)

        struct Run { let tokensPerSecond: Double; let steps: Int; let maskSeconds: Double; let walks: Int; let hits: Int; let text: String; let reason: StopReason }
        func measure(_ makeConstraint: () -> TokenConstraint?) throws -> [Run] {
            var out: [Run] = []
            for k in 0...runs {
                let c = makeConstraint()
                let before = c?.statistics ?? TokenConstraint.Statistics()
                let options = GenerationOptions(maxNewTokens: newTokens, sampling: sampling,
                                                stopTokenIds: c == nil ? [] : loaded.stopTokens, constraint: c)
                let r = try generator.generate(promptIds: promptIds, options: options)
                let after = c?.statistics ?? TokenConstraint.Statistics()
                if k > 0 {  // run 0 warms up
                    out.append(Run(tokensPerSecond: r.decodeTokensPerSecond, steps: r.decodeSteps, maskSeconds: after.maskSeconds - before.maskSeconds,
                                   walks: after.walks - before.walks, hits: after.cacheHits - before.cacheHits, text: r.text, reason: r.stopReason))
                }
            }
            return out
        }
        let plain = try measure { nil }
        let cold = try measure { TokenConstraint(grammar: compiled, vocabulary: vocabulary) }
        let shared = TokenConstraint(grammar: compiled, vocabulary: vocabulary)
        let warm = try measure { shared }

        let plainTPS = median(plain.map(\.tokensPerSecond))
        let coldTPS = median(cold.map(\.tokensPerSecond)), warmTPS = median(warm.map(\.tokensPerSecond))
        func maskPerToken(_ runs: [Run]) -> Double { median(runs.map { $0.maskSeconds / Double(max(1, $0.steps + 1)) }) }
        let sample = cold.last!
        if json {
            let object: [String: Any] = [
                "model": model, "format": loaded.weights.formatName, "constraint": label, "threads": Parallel.threadCount,
                "build": BuildInfo.description, "host_cpu": BuildInfo.hostCPU, "vocabulary_size": vocabulary.size,
                "trie_nodes": vocabulary.nodeCount, "grammar_states": compiled.stateCount, "grammar_rules": compiled.ruleCount,
                "new_tokens": newTokens, "runs": runs, "temperature": Double(temperature),
                "compile_seconds": median(compileTimes), "vocabulary_seconds": vocabularySeconds,
                "first_mask_seconds": firstMaskSeconds, "first_mask_allowed_tokens": firstMask.allowedCount,
                "unconstrained_decode_tokens_per_second": plainTPS,
                "constrained_cold_decode_tokens_per_second": coldTPS, "constrained_warm_decode_tokens_per_second": warmTPS,
                "cold_slowdown": 1 - coldTPS / plainTPS, "warm_slowdown": 1 - warmTPS / plainTPS,
                "cold_mask_seconds_per_token": maskPerToken(cold), "warm_mask_seconds_per_token": maskPerToken(warm),
                "cold_mask_walks": sample.walks, "cold_mask_cache_hits": sample.hits,
                "constrained_decode_steps": sample.steps, "constrained_stop_reason": sample.reason.rawValue, "constrained_text": sample.text,
            ]
            print(try jsonLine(object))
        } else {
            print("bench constrain: \(URL(fileURLWithPath: model).lastPathComponent) (\(loaded.weights.formatName)), \(label), \(Parallel.threadCount) threads, median of \(runs) runs, \(BuildInfo.description)")
            print("  host CPU: \(BuildInfo.hostCPU)")
            print(String(format: "  compile: %.2f ms (%d automaton states, %d rules); vocabulary trie: %.0f ms (%d tokens, %d nodes)",
                         median(compileTimes) * 1e3, compiled.stateCount, compiled.ruleCount, vocabularySeconds * 1e3, vocabulary.size, vocabulary.nodeCount))
            print(String(format: "  first mask (empty cache): %.2f ms, %d tokens allowed", firstMaskSeconds * 1e3, firstMask.allowedCount))
            print(String(format: "  decode without constraint: %.1f tokens/s", plainTPS))
            print(String(format: "  decode with it, cold cache: %.1f tokens/s (%.1f%% slower), mask %.3f ms per token, %d walks / %d cache hits",
                         coldTPS, 100 * (1 - coldTPS / plainTPS), maskPerToken(cold) * 1e3, sample.walks, sample.hits))
            print(String(format: "  decode with it, warm cache: %.1f tokens/s (%.1f%% slower), mask %.3f ms per token",
                         warmTPS, 100 * (1 - warmTPS / plainTPS), maskPerToken(warm) * 1e3))
            print("  constrained output (\(sample.steps + 1) tokens, \(sample.reason.rawValue)): \(sample.text)")
        }
    }

    func seconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
}
