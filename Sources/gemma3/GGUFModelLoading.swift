import ArgumentParser
import Foundation
import Gemma3Formats
import Gemma3Kernels
import Gemma3Model
import Gemma3Tokenizers

/// Whether `path` names a GGUF file (by extension, or by its magic bytes).
func isGGUFPath(_ path: String) -> Bool {
    if path.lowercased().hasSuffix(".gguf") { return true }
    guard let h = FileHandle(forReadingAtPath: path) else { return false }
    defer { try? h.close() }
    return (try? h.read(upToCount: 4)) == Data("GGUF".utf8)
}

/// `--prefill`: the arithmetic of batched prompt products on GGUF models.
enum PrefillChoice: String, ExpressibleByArgument, CaseIterable {
    /// bfloat16 where the CPU has AVX-512 BF16 (and `GEMMA3_BF16_PREFILL` is not 0), else float32.
    case auto
    case f32
    case bf16

    static let help = "Prompt prefill arithmetic on GGUF models (ignored for other models): auto (bf16 on CPUs with AVX-512 BF16 unless GEMMA3_BF16_PREFILL=0, else f32), f32 or bf16."

    /// The precision to use; a one-line error for bf16 on a CPU without AVX-512 BF16.
    func precision() throws -> PrefillPrecision {
        switch self {
        case .auto: return .automatic
        case .f32: return .float32
        case .bf16:
            guard PrefillPrecision.bfloat16Supported else {
                throw ModelCommandError("--prefill bf16 needs a CPU with AVX-512 BF16 (this one: \(BuildInfo.hostCPU)); use --prefill f32")
            }
            return .bfloat16
        }
    }
}

/// A Gemma 3 model loaded from a GGUF file: quantized weights used in place, and its tokenizer.
struct GGUFModel {
    let file: GGUFFile
    let config: Gemma3Config
    let weights: InferenceWeights
    let tokenizer: GemmaTokenizer
}

/// Loads a GGUF model (mapping, config, weights, tokenizer), with one-line errors.
/// `activations` selects the decode kernels: `.int8` (AVX-512 VNNI, where present), `.int16` or `.float`;
/// `prefill` the arithmetic of prompt prefill (bfloat16 on AVX-512 BF16 CPUs by default).
func loadGGUFModel(_ path: String, activations: QuantizedLinear.ActivationPrecision = QuantizedLinear.defaultActivations,
                   prefill: PrefillPrecision = .automatic) throws -> GGUFModel {
    guard FileManager.default.fileExists(atPath: path) else {
        throw ModelCommandError("model file \(path) does not exist (`gemma3 download gemma3-270m` fetches Gemma 3 270M)")
    }
    let file = try GGUFFile(path: path)
    let config = try GGUFGemma3.config(from: file)
    // Q5_0/Q4_0 matrices are widened to Q8_0 (same values): ≈ 5–10% faster decoding here (bench gemv
    // shows both kernels), for 24 MB more memory on Gemma 3 270M Q4_K_M.
    let weights = try GGUFGemma3.inferenceWeights(from: file, config: config, activations: activations, widenSmallBlocks: true,
                                                   prefill: prefill)
    let tokenizer = try GGUFGemma3.tokenizer(from: file)
    guard tokenizer.vocabularySize <= config.vocabSize else {
        throw ModelCommandError("\(path): the tokenizer has \(tokenizer.vocabularySize) tokens but the embedding only \(config.vocabSize) rows")
    }
    return GGUFModel(file: file, config: config, weights: weights, tokenizer: tokenizer)
}

/// The Gemma tokenizer of a GGUF model file, of a Hugging Face `tokenizer.json`, or of a Hugging
/// Face model directory (its tokenizer.json, which must be Gemma's SentencePiece kind).
func loadGemmaTokenizer(_ path: String) throws -> GemmaTokenizer {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw ModelCommandError("\(path) does not exist") }
    if isDirectory.boolValue {
        let url = URL(fileURLWithPath: path, isDirectory: true)
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("tokenizer.json").path) else {
            throw ModelCommandError("\(path) has no tokenizer.json (for GPT-2 tokenizer files use --tokenizer DIR)")
        }
        guard let tokenizer = try GemmaConversion.gemmaTokenizer(inDirectory: url) else {
            throw ModelCommandError("\(path)/tokenizer.json is a GPT-2 byte-level tokenizer, not Gemma's (use --tokenizer \(path))")
        }
        return tokenizer
    }
    if path.hasSuffix(".json") { return try GemmaTokenizer(tokenizerJSON: URL(fileURLWithPath: path)) }
    return try GGUFGemma3.tokenizer(from: try GGUFFile(path: path))
}

/// A Gemma 3 model in a Hugging Face directory with Gemma's tokenizer.json: float weights (`dtype`
/// in memory) and the SentencePiece tokenizer.
struct DirectoryGemmaModel {
    let config: Gemma3Config
    let weights: InferenceWeights
    let tokenizer: GemmaTokenizer
}

/// Loads a Hugging Face directory whose `tokenizer.json` is Gemma's (SentencePiece-style, byte
/// fallback); nil when the directory's tokenizer is GPT-2's or absent (the caller then uses GPT-2).
func loadDirectoryGemmaModel(_ path: String, dtype: WeightDType = .f32) throws -> DirectoryGemmaModel? {
    let url = URL(fileURLWithPath: path, isDirectory: true)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue,
          let tokenizer = try GemmaConversion.gemmaTokenizer(inDirectory: url) else { return nil }
    let (config, store) = try loadModelDirectory(path)
    guard tokenizer.vocabularySize <= config.vocabSize else {
        throw ModelCommandError("\(path): tokenizer.json has \(tokenizer.vocabularySize) tokens but the model only \(config.vocabSize)")
    }
    let weights = try InferenceWeights(config: config, parameters: store, dtype: dtype)
    return DirectoryGemmaModel(config: config, weights: weights, tokenizer: tokenizer)
}
