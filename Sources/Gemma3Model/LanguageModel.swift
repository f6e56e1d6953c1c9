import Foundation
import Gemma3Formats
import Gemma3Kernels
import Gemma3Tokenizers

/// The kinds of model file `LanguageModel.load` reads.
public enum ModelFormat: String, Sendable, Codable {
    /// A Gemma 3 GGUF file (llama.cpp's format; quantized weights used in place).
    case gguf
    /// A Hugging Face Gemma 3 directory (`config.json`, `model.safetensors`) with Gemma's
    /// SentencePiece `tokenizer.json`, e.g. google/gemma-3-270m or `gemma3 convert`'s output.
    case huggingFaceGemma = "hf-gemma"
    /// A directory of the same layout with a GPT-2 tokenizer (`vocab.json` + `merges.txt` or a
    /// byte-level `tokenizer.json`): what `gemma3 train` writes as `latest/` and `best/`.
    case gpt2Checkpoint = "gpt2-checkpoint"
}

/// How `LanguageModel.load` builds a model. The defaults are the fastest kernels this CPU runs.
public struct LoadOptions: Sendable {
    /// Matrix storage of float checkpoints (directories): float32 read in place, or bfloat16 copies.
    /// GGUF files keep their own types.
    public var weightDType: WeightDType
    /// Decode kernels of quantized (GGUF) matrices; nil: `RuntimeSettings.current`'s choice
    /// (8-bit VNNI kernels where the CPU has them, else 16-bit).
    public var decodeActivations: QuantizedLinear.ActivationPrecision?
    /// Prompt-prefill arithmetic of GGUF models; nil: `RuntimeSettings.current`'s choice (bfloat16
    /// on CPUs with AVX-512 BF16). `.float32` gives the same numbers on every CPU.
    public var prefill: PrefillPrecision?
    /// Whether GGUF matrices take their fastest decode form (packed blocks on huge pages for the
    /// VNNI kernels, else unpacked bytes with float scales): the same values, more memory.
    public var optimizesForDecode: Bool
    /// A GPT-2 tokenizer directory to use instead of the model directory's own files.
    public var tokenizerDirectory: URL?
    /// Where to find GPT-2 tokenizer files when a checkpoint directory has none (e.g. the cache's `gpt2/`).
    public var fallbackTokenizerDirectory: URL?
    /// A LoRA adapter directory (Hugging Face PEFT's layout, `LoRAAdapter`) merged into the weights
    /// at load. A GGUF model's matrices are then dequantized to float (`weightDType`), since the
    /// merged weights are no longer the file's blocks.
    public var adapter: URL?

    public init(weightDType: WeightDType = .f32, decodeActivations: QuantizedLinear.ActivationPrecision? = nil,
                prefill: PrefillPrecision? = nil, optimizesForDecode: Bool = true,
                tokenizerDirectory: URL? = nil, fallbackTokenizerDirectory: URL? = nil, adapter: URL? = nil) {
        self.adapter = adapter
        self.weightDType = weightDType
        self.decodeActivations = decodeActivations
        self.prefill = prefill
        self.optimizesForDecode = optimizesForDecode
        self.tokenizerDirectory = tokenizerDirectory
        self.fallbackTokenizerDirectory = fallbackTokenizerDirectory
    }
}

/// A model ready to run: its configuration, inference weights, tokenizer and stop tokens, from any
/// supported file (`ModelFormat`).
///
///     let model = try LanguageModel.load("gemma-3-270m-q4_k_m.gguf")
///     let story = try model.generate("Once upon a time", maxNewTokens: 50)
///     print(story.text)
public final class LanguageModel: @unchecked Sendable {
    /// The path it was loaded from.
    public let path: String
    public let format: ModelFormat
    public let config: Gemma3Config
    public let weights: InferenceWeights
    /// The tokenizer that belongs to the model (`GPT2Tokenizer` or `GemmaTokenizer`).
    public let tokenizer: any TextTokenizer
    /// Ids that end a generation: the config's `eos_token_id`s and the tokenizer's end of text.
    public let stopTokens: Set<TokenID>
    /// The float parameters of directory models (what training and `Evaluation.evaluate(config:…)`
    /// use); nil for GGUF files.
    public let parameters: ParameterStore?
    /// The mapped file of GGUF models.
    public let ggufFile: GGUFFile?

    /// The tokenizer as Gemma's, for Gemma models (chat needs its turn tokens).
    public var gemmaTokenizer: GemmaTokenizer? { tokenizer as? GemmaTokenizer }

    init(path: String, format: ModelFormat, config: Gemma3Config, weights: InferenceWeights, tokenizer: any TextTokenizer,
         parameters: ParameterStore?, ggufFile: GGUFFile?) throws {
        guard tokenizer.vocabularySize <= config.vocabSize else {
            throw Gemma3ModelError("\(path): the tokenizer has \(tokenizer.vocabularySize) tokens but the embedding only \(config.vocabSize) rows")
        }
        self.path = path
        self.format = format
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        self.parameters = parameters
        self.ggufFile = ggufFile
        var stops = Set(config.eosTokenIds.map { TokenID($0) })
        if Int(tokenizer.endOfTextID) < config.vocabSize { stops.insert(tokenizer.endOfTextID) }
        self.stopTokens = stops
    }

    /// Loads whatever is at `path`: a Gemma 3 GGUF file, a Hugging Face Gemma directory, or a
    /// checkpoint directory written by training. Errors are one line.
    public static func load(_ path: String, options: LoadOptions = LoadOptions()) throws -> LanguageModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw Gemma3ModelError("\(path) does not exist")
        }
        if !isDirectory.boolValue {
            guard isGGUF(path) else {
                throw Gemma3ModelError("\(path) is neither a GGUF file nor a model directory (config.json + model.safetensors)")
            }
            return try loadGGUF(path, options: options)
        }
        let directory = URL(fileURLWithPath: path, isDirectory: true)
        guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("config.json").path) else {
            throw Gemma3ModelError("\(path) has no config.json")
        }
        let gemmaTokenizer = options.tokenizerDirectory == nil ? try GemmaConversion.gemmaTokenizer(inDirectory: directory) : nil
        let tokenizer: any TextTokenizer = try gemmaTokenizer ?? gpt2Tokenizer(for: directory, options: options)
        let (config, store) = try HFCheckpoint.load(directory: directory)
        if let adapter = options.adapter { try LoRAAdapter.loadPEFT(directory: adapter, for: config).merge(into: store) }
        let weights = try InferenceWeights(config: config, parameters: store, dtype: options.weightDType)
        return try LanguageModel(path: path, format: gemmaTokenizer == nil ? .gpt2Checkpoint : .huggingFaceGemma,
                                 config: config, weights: weights, tokenizer: tokenizer, parameters: store, ggufFile: nil)
    }

    /// What fine-tuning starts from: the float32 weights of whatever `load` takes (GGUF matrices
    /// dequantized), with the config and tokenizer, and no inference weights built.
    public struct TrainableWeights {
        public let config: Gemma3Config
        public let parameters: ParameterStore
        public let tokenizer: any TextTokenizer
        public let format: ModelFormat
    }

    /// The config of the model at `path` (GGUF metadata or `config.json`), without its weights.
    public static func loadTrainableConfig(_ path: String) throws -> Gemma3Config {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw Gemma3ModelError("\(path) does not exist") }
        if isDirectory.boolValue { return try Gemma3Config.load(from: URL(fileURLWithPath: path).appendingPathComponent("config.json")) }
        guard isGGUF(path) else { throw Gemma3ModelError("\(path) is neither a GGUF file nor a model directory") }
        return try GGUFGemma3.config(from: try GGUFFile(path: path))
    }

    /// The float32 weights of the model at `path` (a GGUF file, a Hugging Face Gemma directory, a
    /// training checkpoint), `options.adapter` merged, for training. Errors are one line.
    public static func loadTrainable(_ path: String, options: LoadOptions = LoadOptions()) throws -> TrainableWeights {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw Gemma3ModelError("\(path) does not exist")
        }
        let config: Gemma3Config, store: ParameterStore, tokenizer: any TextTokenizer, format: ModelFormat
        if !isDirectory.boolValue {
            guard isGGUF(path) else {
                throw Gemma3ModelError("\(path) is neither a GGUF file nor a model directory (config.json + model.safetensors)")
            }
            let file = try GGUFFile(path: path)
            config = try GGUFGemma3.config(from: file)
            store = try GGUFGemma3.parameters(from: file, config: config)
            tokenizer = try GGUFGemma3.textTokenizer(from: file)
            format = .gguf
        } else {
            let directory = URL(fileURLWithPath: path, isDirectory: true)
            guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("config.json").path) else {
                throw Gemma3ModelError("\(path) has no config.json")
            }
            let gemma = options.tokenizerDirectory == nil ? try GemmaConversion.gemmaTokenizer(inDirectory: directory) : nil
            tokenizer = try gemma ?? gpt2Tokenizer(for: directory, options: options)
            (config, store) = try HFCheckpoint.load(directory: directory)
            format = gemma == nil ? .gpt2Checkpoint : .huggingFaceGemma
        }
        guard tokenizer.vocabularySize <= config.vocabSize else {
            throw Gemma3ModelError("\(path): the tokenizer has \(tokenizer.vocabularySize) tokens but the embedding only \(config.vocabSize) rows")
        }
        if let adapter = options.adapter { try LoRAAdapter.loadPEFT(directory: adapter, for: config).merge(into: store) }
        return TrainableWeights(config: config, parameters: store, tokenizer: tokenizer, format: format)
    }

    /// The tokenizer that belongs to the model at `path`, without loading its weights: a GGUF file's,
    /// a directory's (Gemma's `tokenizer.json`, else its GPT-2 files as `load` chooses), or a Gemma
    /// `tokenizer.json` file itself.
    public static func loadTokenizer(_ path: String, options: LoadOptions = LoadOptions()) throws -> any TextTokenizer {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw Gemma3ModelError("\(path) does not exist")
        }
        if isDirectory.boolValue {
            let directory = URL(fileURLWithPath: path, isDirectory: true)
            if options.tokenizerDirectory == nil, let gemma = try GemmaConversion.gemmaTokenizer(inDirectory: directory) { return gemma }
            return try gpt2Tokenizer(for: directory, options: options)
        }
        if path.lowercased().hasSuffix(".json") {
            let url = URL(fileURLWithPath: path)
            guard GemmaTokenizer.isGemmaTokenizerJSON(at: url) else {
                return try GPT2Tokenizer(directory: url.deletingLastPathComponent())
            }
            return try GemmaTokenizer(tokenizerJSON: url)
        }
        guard isGGUF(path) else { throw Gemma3ModelError("\(path) is neither a GGUF file, a tokenizer.json nor a model directory") }
        return try GGUFGemma3.textTokenizer(from: try GGUFFile(path: path))
    }

    /// Whether `path` names a GGUF file (by its magic bytes, or by its extension).
    public static func isGGUF(_ path: String) -> Bool {
        if let h = FileHandle(forReadingAtPath: path) {
            defer { try? h.close() }
            if (try? h.read(upToCount: 4)) == Data("GGUF".utf8) { return true }
        }
        return path.lowercased().hasSuffix(".gguf")
    }

    private static func loadGGUF(_ path: String, options: LoadOptions) throws -> LanguageModel {
        let settings = RuntimeSettings.current
        var activations = options.decodeActivations ?? settings.resolvedDecodeActivations
        if activations == .int8 && !QuantizedLinear.int8Supported { activations = .int16 }
        let prefill = options.prefill ?? settings.resolvedPrefill
        let file = try GGUFFile(path: path)
        let config = try GGUFGemma3.config(from: file)
        if let adapter = options.adapter {
            let lora = try LoRAAdapter.loadPEFT(directory: adapter, for: config)
            let store = try GGUFGemma3.parameters(from: file, config: config)
            try lora.merge(into: store)
            return try LanguageModel(path: path, format: .gguf, config: config,
                                     weights: try InferenceWeights(config: config, parameters: store, dtype: options.weightDType),
                                     tokenizer: try GGUFGemma3.textTokenizer(from: file), parameters: store, ggufFile: file)
        }
        // Q5_0/Q4_0 matrices widened to Q8_0 or unpacked (same values): ≈ 5–10% faster decoding
        // here (bench gemv shows both kernels), for 24 MB more memory on Gemma 3 270M Q4_K_M.
        let weights = try GGUFGemma3.inferenceWeights(from: file, config: config, activations: activations,
                                                       widenSmallBlocks: options.optimizesForDecode, prefill: prefill)
        return try LanguageModel(path: path, format: .gguf, config: config, weights: weights,
                                 tokenizer: try GGUFGemma3.textTokenizer(from: file), parameters: nil, ggufFile: file)
    }

    /// The GPT-2 tokenizer of a checkpoint directory: the override, else the directory's own files,
    /// else the fallback directory.
    private static func gpt2Tokenizer(for directory: URL, options: LoadOptions) throws -> GPT2Tokenizer {
        if let override = options.tokenizerDirectory { return try GPT2Tokenizer(directory: override) }
        let fm = FileManager.default
        let ownFiles = (fm.fileExists(atPath: directory.appendingPathComponent("vocab.json").path)
            && fm.fileExists(atPath: directory.appendingPathComponent("merges.txt").path))
            || fm.fileExists(atPath: directory.appendingPathComponent("tokenizer.json").path)
        if ownFiles { return try GPT2Tokenizer(directory: directory) }
        guard let fallback = options.fallbackTokenizerDirectory else {
            throw Gemma3ModelError("\(directory.path) has no tokenizer files (vocab.json + merges.txt or tokenizer.json); give a tokenizer directory")
        }
        return try GPT2Tokenizer(directory: fallback)
    }

    // MARK: Running it

    /// An inference engine over the weights with a KV cache of `context` positions (default: the
    /// model's `max_position_embeddings`).
    public func makeEngine(context: Int? = nil) throws -> InferenceEngine {
        try InferenceEngine(weights: weights, maxContext: min(context ?? config.maxPositionEmbeddings, config.maxPositionEmbeddings))
    }

    /// A generator (the decode loop) with the model's tokenizer over a fresh engine.
    public func makeGenerator(context: Int? = nil) throws -> Generator {
        Generator(engine: try makeEngine(context: context), tokenizer: tokenizer)
    }

    /// A conversation in Gemma's turn format (Gemma models only).
    public func makeChatSession(context: Int? = nil) throws -> GemmaChatSession {
        guard let gemma = gemmaTokenizer else {
            throw Gemma3ModelError("\(path): chat needs a Gemma 3 model (a GGUF file or a directory with Gemma's tokenizer.json)")
        }
        return try GemmaChatSession(engine: try makeEngine(context: context), tokenizer: gemma)
    }

    /// Generates a continuation of `prompt` (stopping at the model's stop tokens), on a fresh engine
    /// whose context fits the prompt and the new tokens. For many prompts, keep one `makeGenerator()`.
    public func generate(_ prompt: String, maxNewTokens: Int = 128, sampling: SamplingOptions = .greedy,
                         onText: ((String) -> Void)? = nil) throws -> GenerationResult {
        let ids = tokenizer.encode(prompt)
        let generator = try makeGenerator(context: ids.count + maxNewTokens)
        let options = GenerationOptions(maxNewTokens: maxNewTokens, sampling: sampling, stopTokenIds: stopTokens)
        return try generator.generate(promptIds: ids, options: options, onText: onText)
    }
}
