import Foundation
import Gemma3Formats
import Gemma3Infrastructure
import Gemma3Kernels

/// Loading and saving model weights as Hugging Face safetensors (tensor names as in `Gemma3ForCausalLM`).
extension ParameterStore {
    /// Fills this store from a safetensors file, checking every tensor's shape against the layout.
    ///
    /// - Parameters:
    ///   - allowUnexpected: ignore tensors that are not parameters (e.g. `logits` in a golden file);
    ///     when false they are an error.
    ///   - prefix: stripped from file names first, e.g. `language_model.` for multimodal checkpoints.
    /// Missing parameters are always an error. A tied model accepts (and ignores) an `lm_head.weight`
    /// equal in shape to the embedding, since some exporters write it anyway.
    public func load(from file: SafeTensorsFile, allowUnexpected: Bool = false, prefix: String = "") throws {
        defer { markModified() }
        var missing: [String] = []
        for t in layout.tensors {
            guard let info = file.info(prefix + t.name) else { missing.append(t.name); continue }
            guard info.shape == t.shape else {
                throw FormatError("\(file.path): tensor \"\(t.name)\" has shape \(info.shape), the config needs \(t.shape)")
            }
            guard info.dtype.isFloat else {
                throw FormatError("\(file.path): tensor \"\(t.name)\" has dtype \(info.dtype.rawValue), expected F32, F16 or BF16")
            }
            try file.copyFloats(prefix + t.name, into: view(t))
        }
        guard missing.isEmpty else {
            let list = missing.prefix(3).joined(separator: ", ") + (missing.count > 3 ? " and \(missing.count - 3) more" : "")
            throw FormatError("\(file.path): missing \(missing.count) tensor(s): \(list)")
        }
        if !allowUnexpected {
            let known = Set(layout.tensors.map { prefix + $0.name })
            let headName = ModelTensor.lmHead.huggingFaceName
            let unexpected = file.tensors.map(\.name).filter { !known.contains($0) && $0 != prefix + headName }
            guard unexpected.isEmpty else {
                let list = unexpected.prefix(3).joined(separator: ", ") + (unexpected.count > 3 ? " and \(unexpected.count - 3) more" : "")
                throw FormatError("\(file.path): unexpected tensor(s) for this config: \(list)")
            }
            if layout.lmHead == nil, let head = file.info(prefix + headName),
               head.shape != layout.tensors[0].shape {
                throw FormatError("\(file.path): \(headName) has shape \(head.shape) but the model is tied with embedding \(layout.tensors[0].shape)")
            }
        }
    }

    /// Loads a safetensors file at `url` (see `load(from:allowUnexpected:prefix:)`).
    public func load(contentsOf url: URL, allowUnexpected: Bool = false, prefix: String = "") throws {
        try load(from: try SafeTensorsFile(url: url), allowUnexpected: allowUnexpected, prefix: prefix)
    }

    /// Writes every parameter (HF names; no `lm_head.weight` when tied) as a safetensors file, atomically.
    public func save(to url: URL, dtype: SafeTensorsDType = .f32, metadata: [String: String] = ["format": "pt"]) throws {
        var writer = SafeTensorsWriter()
        writer.metadata = metadata
        for t in layout.tensors {
            try writer.add(t.name, shape: t.shape, floats: UnsafeBufferPointer(view(t)), dtype: dtype)
        }
        try writer.write(to: url)
    }
}

/// A Hugging Face model directory: `config.json` + `model.safetensors`.
public enum HFCheckpoint {
    /// Reads `config.json` and `model.safetensors` from `directory`.
    public static func load(directory: URL) throws -> (config: Gemma3Config, parameters: ParameterStore) {
        let config = try Gemma3Config.load(from: directory.appendingPathComponent("config.json"))
        let weights = directory.appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: weights.path) else {
            throw FormatError("\(directory.path): no model.safetensors (sharded checkpoints are not supported)")
        }
        let store = ParameterStore(config: config)
        let file = try SafeTensorsFile(url: weights)
        // Multimodal checkpoints keep the text model under `language_model.`.
        let embeddingName = ModelTensor.embedding.huggingFaceName, multimodalPrefix = "language_model."
        let prefix = file.info(embeddingName) == nil && file.info(multimodalPrefix + embeddingName) != nil ? multimodalPrefix : ""
        try store.load(from: file, allowUnexpected: !prefix.isEmpty, prefix: prefix)
        return (config, store)
    }

    /// Writes `config.json` and `model.safetensors` into `directory` (created if needed), each atomically.
    public static func save(config: Gemma3Config, parameters: ParameterStore, directory: URL, dtype: SafeTensorsDType = .f32) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try parameters.save(to: directory.appendingPathComponent("model.safetensors"), dtype: dtype)
        // config.json's "dtype" names the stored precision (transformers uses it for dtype="auto").
        var object = try JSONSerialization.jsonObject(with: try config.jsonData()) as? [String: Any] ?? [:]
        object["dtype"] = dtype == .bf16 ? "bfloat16" : dtype == .f16 ? "float16" : "float32"
        let json = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        try AtomicFileWriter.write(json, to: directory.appendingPathComponent("config.json"))
    }
}
