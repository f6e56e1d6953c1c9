import ArgumentParser
import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3Tokenizers

/// A one-line error of the model verbs (generate, eval).
struct ModelCommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Loads any supported model with `LanguageModel.load`; GPT-2 checkpoints without tokenizer files
/// fall back to the cache's GPT-2 tokenizer.
func loadModel(_ path: String, options: LoadOptions = LoadOptions()) throws -> LanguageModel {
    var options = options
    if options.fallbackTokenizerDirectory == nil { options.fallbackTokenizerDirectory = CLIEnvironment.gpt2TokenizerDirectory }
    guard FileManager.default.fileExists(atPath: path) else {
        let hint = path.lowercased().hasSuffix(".gguf") ? " (`gemma3 download gemma3-270m` fetches Gemma 3 270M)" : ""
        throw ModelCommandError("model \(path) does not exist\(hint)")
    }
    return try LanguageModel.load(path, options: options)
}

/// `--prefill`: the arithmetic of batched prompt products on GGUF models.
enum PrefillChoice: String, ExpressibleByArgument, CaseIterable {
    /// bfloat16 where the CPU has AVX-512 BF16 (and `GEMMA3_BF16_PREFILL` is not 0), else float32.
    case auto
    case f32
    case bf16

    static let help = "Prompt prefill arithmetic on GGUF models (ignored for other models): auto (bf16 on CPUs with AVX-512 BF16 unless GEMMA3_BF16_PREFILL=0, else f32), f32 or bf16."

    /// The precision to use (nil: the runtime settings' choice); a one-line error for bf16 on a CPU without AVX-512 BF16.
    func precision() throws -> PrefillPrecision? {
        switch self {
        case .auto: return nil
        case .f32: return .float32
        case .bf16:
            guard PrefillPrecision.bfloat16Supported else {
                throw ModelCommandError("--prefill bf16 needs a CPU with AVX-512 BF16 (this one: \(BuildInfo.hostCPU)); use --prefill f32")
            }
            return .bfloat16
        }
    }
}

extension WeightDType: ExpressibleByArgument {}

/// The sampling flags shared by `generate` and `chat`; each verb gives its own defaults.
struct SamplingFlags: ParsableArguments {
    @Option(parsing: .unconditional, help: "Sampling temperature; 0 = greedy (default: generate 0.8, chat 1).")
    var temperature: Float?

    @Option(parsing: .unconditional, help: "Keep the k most likely tokens (0 = off; default: generate 200, chat 64).")
    var topK: Int?

    @Option(parsing: .unconditional, help: "Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off; default: generate 1, chat 0.95).")
    var topP: Float?

    @Option(parsing: .unconditional, help: "Drop tokens less likely than min-p × the top probability (0 = off).")
    var minP: Float = 0

    @Option(parsing: .unconditional, help: "Penalty for tokens already present (HF semantics; 1 = off).")
    var repetitionPenalty: Float = 1

    @Option(help: "Random seed (default: a fresh one, printed with the statistics).")
    var seed: UInt64?

    /// The options with `defaults` for the flags not given, and `seed` (the flag's, else a fresh one).
    func options(defaults: SamplingOptions, seed: UInt64) -> SamplingOptions {
        SamplingOptions(temperature: temperature ?? defaults.temperature, topK: topK ?? defaults.topK,
                        topP: topP ?? defaults.topP, minP: minP, repetitionPenalty: repetitionPenalty, seed: seed)
    }

    /// The seed to start from: `--seed`, else a fresh one.
    var startSeed: UInt64 { seed ?? UInt64.random(in: 0...UInt64(UInt32.max)) }

    /// A one-line usage error for values out of range.
    func validate(defaults: SamplingOptions) throws {
        do { try options(defaults: defaults, seed: 0).validate() } catch let e as GenerationError { throw ValidationError(e.message) }
    }
}

/// Writes text to stdout immediately (no buffering), for streaming.
func writeStdout(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Writes a line to stderr.
func writeStderr(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// One JSON object on one line.
func jsonLine(_ object: [String: Any]) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
}

/// `--adapter DIR`: a LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors) merged
/// into the model's weights at load.
/// A GGUF output's matrix type from its flag value (`convert --type`, `merge-adapter --gguf-type`).
func ggufMatrixType(_ value: String, flag: String) throws -> GGMLType {
    switch value.lowercased() {
    case "f32": return .f32
    case "f16": return .f16
    case "bf16": return .bf16
    case "q8_0": return .q8_0
    default: throw ModelCommandError("\(flag) for a GGUF output must be f32, f16, bf16 or q8_0, got \"\(value)\"")
    }
}

struct AdapterOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A LoRA adapter directory (Hugging Face PEFT layout) to merge into the model at load; GGUF matrices are then dequantized.", valueName: "dir"))
    var adapter: String?

    var url: URL? { adapter.map { URL(fileURLWithPath: $0, isDirectory: true) } }
}
