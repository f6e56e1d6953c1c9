import Foundation
import Gemma3Formats
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Tokenizers

/// Conversions between the two on-disk forms of a Gemma 3 model:
/// - a GGUF file (llama.cpp layout, norms stored as 1 + w, tokenizer in `tokenizer.ggml.*`), and
/// - a Hugging Face directory in the `google/gemma-3-270m` layout (`config.json`, `model.safetensors`
///   with `model.layers.N.…` names and plain norm weights, `tokenizer.json`, `tokenizer_config.json`).
///
/// Parameters travel through a float32 `ParameterStore` in the Hugging Face convention, so a
/// quantized GGUF becomes its dequantized values (exact in an F32 directory, rounded in BF16/F16).
public enum GemmaConversion {
    /// What a conversion wrote.
    public struct Summary: Sendable {
        public var config: Gemma3Config
        public var parameterCount: Int
        /// Whether a tokenizer was written (GGUF → HF: tokenizer.json; HF → GGUF: `tokenizer.ggml.*`).
        public var tokenizerWritten: Bool
        /// False when the tokenizer's scores cannot be expressed exactly in a tokenizer.json
        /// (see `GemmaTokenizer.scoresDecreaseWithID`); the files are still written.
        public var tokenizerExact: Bool
    }

    // MARK: Hugging Face directories

    /// The Gemma tokenizer of a Hugging Face directory: its `tokenizer.json` when that is a
    /// SentencePiece-style (byte-fallback) tokenizer, with `add_bos_token` from `tokenizer_config.json`
    /// (default true). Nil when the directory has no tokenizer.json or a GPT-2 (byte-level) one.
    public static func gemmaTokenizer(inDirectory directory: URL) throws -> GemmaTokenizer? {
        let url = directory.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: url.path), GemmaTokenizer.isGemmaTokenizerJSON(at: url) else { return nil }
        var addBOS = true
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        if let data = try? Data(contentsOf: configURL) {
            guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
                throw FormatError("\(configURL.path): not a JSON object")
            }
            if let flag = object["add_bos_token"] as? Bool { addBOS = flag }
        }
        do {
            return try GemmaTokenizer(tokenizerJSON: url, addBOS: addBOS)
        } catch let e as TokenizerError {
            throw FormatError(e.description)
        }
    }

    /// `tokenizer_config.json` for a Gemma tokenizer: the special tokens and BOS setting transformers'
    /// `AutoTokenizer` needs beside `tokenizer.json`.
    public static func tokenizerConfigJSON(_ tokenizer: GemmaTokenizer, maxLength: Int) throws -> Data {
        func text(_ id: Int32) -> String { String(decoding: tokenizer.pieces[Int(id)], as: UTF8.self) }
        var object: [String: Any] = [
            "tokenizer_class": "GemmaTokenizer",
            "add_bos_token": tokenizer.addBOS,
            "add_eos_token": false,
            "bos_token": text(tokenizer.bosTokenID),
            "eos_token": text(tokenizer.eosTokenID),
            "clean_up_tokenization_spaces": false,
            "spaces_between_special_tokens": false,
            "model_max_length": maxLength,
        ]
        if let pad = tokenizer.id(of: "<pad>") { object["pad_token"] = text(pad) }
        if let unk = tokenizer.id(of: "<unk>") { object["unk_token"] = text(unk) }
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    }

    /// Writes a Gemma tokenizer into `directory` as `tokenizer.json` + `tokenizer_config.json`, each
    /// atomically. Returns whether the tokenizer.json is exact (`scoresDecreaseWithID`).
    @discardableResult
    public static func writeTokenizer(_ tokenizer: GemmaTokenizer, directory: URL, maxLength: Int) throws -> Bool {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try AtomicFileWriter.write(tokenizer.tokenizerJSONData(), to: directory.appendingPathComponent("tokenizer.json"))
        try AtomicFileWriter.write(try tokenizerConfigJSON(tokenizer, maxLength: maxLength),
                             to: directory.appendingPathComponent("tokenizer_config.json"))
        return tokenizer.scoresDecreaseWithID
    }

    // MARK: GGUF → Hugging Face

    /// Converts a Gemma 3 GGUF file into a Hugging Face directory: `config.json` (the GGUF's
    /// hyper-parameters under HF keys), `model.safetensors` (every tensor dequantized, renamed to HF
    /// names, norms with GGUF's +1 removed, stored as `dtype`), and, when the file has a tokenizer,
    /// `tokenizer.json` + `tokenizer_config.json`. Every file is written atomically.
    public static func convertGGUFToHuggingFace(_ file: GGUFFile, directory: URL, dtype: SafeTensorsDType = .bf16) throws -> Summary {
        guard dtype.isFloat else { throw FormatError("safetensors dtype \(dtype.rawValue) is not a float type") }
        let config = try GGUFGemma3.config(from: file)
        let tokenizer = file["tokenizer.ggml.tokens"] == nil ? nil : try GGUFGemma3.tokenizer(from: file)
        if let tokenizer, tokenizer.vocabularySize > config.vocabSize {
            throw FormatError("\(file.path): the tokenizer has \(tokenizer.vocabularySize) tokens but the embedding only \(config.vocabSize) rows")
        }
        let store = try GGUFGemma3.parameters(from: file, config: config)
        try HFCheckpoint.save(config: config, parameters: store, directory: directory, dtype: dtype)
        var exact = true
        if let tokenizer {
            exact = try writeTokenizer(tokenizer, directory: directory, maxLength: config.maxPositionEmbeddings)
        }
        return Summary(config: config, parameterCount: store.layout.count, tokenizerWritten: tokenizer != nil, tokenizerExact: exact)
    }

    // MARK: Hugging Face → GGUF

    /// A GGUF writer (architecture `gemma3`) for a Hugging Face directory: its weights with matrices
    /// in `matrixType`, and its tokenizer: Gemma's when `tokenizer.json` is one, else the directory's
    /// GPT-2 files (a checkpoint of `gemma3 train`) as llama.cpp's `gpt2` tokenizer model, so that
    /// llama.cpp's tools run models trained here. `write(to:)` writes atomically.
    public static func ggufWriter(huggingFaceDirectory directory: URL, matrixType: GGMLType = .f32,
                                  name: String? = nil) throws -> (writer: GGUFWriter, summary: Summary) {
        let (config, store) = try HFCheckpoint.load(directory: directory)
        let tokenizer = try gemmaTokenizer(inDirectory: directory)
        if let tokenizer, tokenizer.vocabularySize > config.vocabSize {
            throw FormatError("\(directory.path): tokenizer.json has \(tokenizer.vocabularySize) tokens but the model only \(config.vocabSize)")
        }
        let vocabulary = tokenizer == nil && GPT2Tokenizer.hasTokenizerFiles(in: directory)
            ? try GPT2ByteLevelVocabulary(directory: directory) : nil
        let writer = try GGUFGemma3.writer(config: config, parameters: store, matrixType: matrixType, tokenizer: tokenizer,
                                           gpt2Vocabulary: vocabulary, name: name ?? directory.standardizedFileURL.lastPathComponent)
        return (writer, Summary(config: config, parameterCount: store.layout.count,
                                tokenizerWritten: tokenizer != nil || vocabulary != nil, tokenizerExact: true))
    }
}
