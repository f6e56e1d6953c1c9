import ArgumentParser
import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3Tokenizers

/// `gemma3 generate`: text from a trained model, streamed as it is produced.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from a model directory with the KV-cache engine, streaming to stdout.",
        discussion: """
        The prompt is processed in one batched pass, then tokens are sampled one at a time \
        (greedy with --temperature 0) and their text is written to stdout as soon as it forms \
        whole characters; prompt and generation speeds go to stderr. Generation stops at \
        --max-new-tokens, at the end-of-text token (50256 for GPT-2 models, or the config's \
        eos_token_id), at a --stop string (cut from the text), or at the end of the context. \
        --json prints one JSON object instead of streaming; --interactive reads one prompt per \
        line from stdin. --json-schema FILE, --json-object or --regex PATTERN constrain the answer \
        (every answer parses and validates; it ends when the value is complete; the prompt is then \
        not echoed unless --echo); see docs/structured-output.md.
        """
    )

    @Option(help: ArgumentHelp("Model directory (config.json, model.safetensors, and GPT-2 tokenizer files or Gemma's tokenizer.json), e.g. RUN/best; or a Gemma 3 GGUF file.", valueName: "dir|file.gguf"))
    var model: String

    @OptionGroup var adapter: AdapterOption

    @Option(help: "The prompt text.")
    var prompt: String?

    @Flag(help: "Read prompts from stdin, one per line, and answer each.")
    var interactive = false

    // .unconditional: "--max-new-tokens -1" reads -1 (and says it is < 0) instead of "missing value".
    @Option(parsing: .unconditional, help: "Most tokens to generate.")
    var maxNewTokens = 200

    @OptionGroup(title: "Sampling")
    var sampling: SamplingFlags

    /// generate's sampling defaults (nanoGPT's sample.py: temperature 0.8, top-k 200).
    static let samplingDefaults = SamplingOptions(temperature: 0.8, topK: 200, topP: 1)

    @Option(name: .customLong("stop"), help: ArgumentHelp("Stop when the text contains this string (repeatable).", valueName: "text"))
    var stopStrings: [String] = []

    @Flag(help: "Do not stop at the end-of-text token.")
    var ignoreEos = false

    @Option(help: "Weight storage in memory of directory models: f32 or bf16 (half the bytes per token).")
    var dtype: WeightDType = .f32

    @Option(help: "Longest sequence (prompt + generation); default the model's max_position_embeddings.")
    var context: Int?

    @Option(help: ArgumentHelp("Tokenizer directory (default: the model directory's files, else the download location).", valueName: "dir"))
    var tokenizer: String?

    @OptionGroup(title: "Structured output")
    var structured: StructuredOutputFlags

    @Flag(inversion: .prefixedNo, help: "Write the prompt before the generated text, as llama.cpp's completion tool does (default: on with --prompt, off with --interactive or a structured-output constraint; --json is unaffected).")
    var echo: Bool?

    @Option(help: ArgumentHelp(PrefillChoice.help, valueName: "auto|f32|bf16"))
    var prefill: PrefillChoice = .auto

    @Flag(help: "Print one JSON object (prompt_ids, generated_ids, text, speeds) instead of streaming.")
    var json = false

    func validate() throws {
        if interactive == (prompt != nil) { throw ValidationError("give either --prompt TEXT or --interactive") }
        if let prompt, prompt.isEmpty { throw ValidationError("the prompt is empty") }
        if maxNewTokens < 0 { throw ValidationError("--max-new-tokens must be ≥ 0") }
        if let context, context < 1 { throw ValidationError("--context must be positive") }
        try sampling.validate(defaults: Self.samplingDefaults)
    }

    func run() throws {
        // The constraint is compiled first: a bad schema fails before the model loads.
        let grammar = try structured.grammar()
        let loaded = try loadModel(model, options: LoadOptions(weightDType: dtype, prefill: try prefill.precision(),
                                                               tokenizerDirectory: tokenizer.map { URL(fileURLWithPath: $0, isDirectory: true) },
                                                               adapter: adapter.url))
        let constraint = grammar.map { TokenConstraint(grammar: $0, vocabulary: TokenVocabulary(tokenizer: loaded.tokenizer)) }
        let generator = try loaded.makeGenerator(context: context)
        let engine = generator.engine
        let stopIds = ignoreEos ? [] : loaded.stopTokens

        var seed = sampling.startSeed
        func answer(_ text: String) throws {
            let options = GenerationOptions(maxNewTokens: maxNewTokens, sampling: sampling.options(defaults: Self.samplingDefaults, seed: seed),
                                            stopTokenIds: stopIds, stopStrings: stopStrings, constraint: constraint)
            if json {
                let r = try generator.generate(prompt: text, options: options)
                print(try jsonLine([
                    "prompt": text, "prompt_ids": r.promptIds, "generated_ids": r.generatedIds, "text": r.text,
                    "stop_reason": r.stopReason.rawValue, "seed": seed, "dtype": loaded.format == .gguf ? loaded.weights.formatName : dtype.rawValue,
                    "prefill_seconds": r.prefillSeconds, "decode_seconds": r.decodeSeconds, "decode_steps": r.decodeSteps,
                    "prefill_tokens_per_second": r.prefillTokensPerSecond,
                    "decode_tokens_per_second": r.decodeTokensPerSecond,
                    "kv_cache_bytes": engine.cache.bytes,
                ]))
            } else {
                // The prompt goes out with the first generated text, so a prompt refused by the
                // engine (too long, bad tokens) leaves stdout empty.
                var promptWritten = !(echo ?? !(interactive || constraint != nil))
                let r = try generator.generate(prompt: text, options: options) { piece in
                    if !promptWritten { writeStdout(text); promptWritten = true }
                    writeStdout(piece)
                }
                if !promptWritten { writeStdout(text) }
                writeStdout("\n")
                writeStderr(String(
                    format: "[prompt %d tokens, %.1f tokens/s | generated %d tokens, %.1f tokens/s | ",
                    r.promptIds.count, r.prefillTokensPerSecond, r.generatedIds.count, r.decodeTokensPerSecond)
                    + "\(r.stopReason.rawValue) | seed \(seed) | " + String(format: "KV cache %.1f MB]", Double(engine.cache.bytes) / 1e6))
            }
            seed &+= 1  // interactive: a different draw per prompt, still reproducible from the first seed
        }

        if let prompt {
            try answer(prompt)
        } else {
            var lines = TextInput.StandardInputLines()
            while let line = try lines.next() {
                if line.isEmpty { continue }
                do {
                    try answer(line)
                } catch let e as GenerationError {
                    // One bad prompt (e.g. too long) does not end the session.
                    writeStderr("error: \(e.message)")
                }
            }
        }
    }
}
