import Foundation
import Gemma3Formats
import Gemma3Kernels
import Gemma3Tokenizers

/// Gemma 3 models in GGUF files (as written by llama.cpp's `convert_hf_to_gguf.py`, architecture
/// `gemma3`): hyper-parameters, tensor names, weights and tokenizer.
///
/// Facts of that format this code relies on:
/// - Norm weights are stored **with Gemma's +1 already added** (the converter adds 1 so that
///   llama.cpp can multiply by the stored value). This project's model computes x·(1 + w), so 1 is
///   subtracted on load and added back on export.
/// - Q and K projections are *not* permuted for Gemma 3 (llama.cpp runs it with NeoX-style
///   rotate-half RoPE, like Hugging Face), so they map one to one.
/// - The local (sliding-window) RoPE base is not in the file unless `gemma3.rope.freq_base_swa` is
///   present; llama.cpp then uses 10 000, as Gemma 3 does. Layer l is full attention when
///   (l + 1) % 6 == 0 unless `gemma3.attention.sliding_window_pattern` says otherwise.
/// - Attention scores are scaled by 1/√head_dim (llama.cpp: 1/√(hidden/heads) for the 27B model only).
public enum GGUFGemma3 {
    /// The architecture string of Gemma 3 GGUF files.
    public static let architecture = "gemma3"

    // MARK: Tensor names

    /// GGUF tensor name → Hugging Face name (`model.layers.N.…`), or nil when unknown (`ModelTensor`'s table).
    public static func huggingFaceName(forGGUF name: String) -> String? {
        ModelTensor(ggufName: name)?.huggingFaceName
    }

    /// Hugging Face name → GGUF tensor name, or nil when unknown (`ModelTensor`'s table).
    public static func ggufName(forHuggingFace name: String) -> String? {
        ModelTensor(huggingFaceName: name)?.ggufName
    }

    // MARK: Configuration

    /// The model hyper-parameters from the `gemma3.*` metadata (and the embedding's shape).
    public static func config(from file: GGUFFile) throws -> Gemma3Config {
        let arch = try file.string("general.architecture")
        guard arch == architecture else {
            throw FormatError("\(file.path): architecture \"\(arch)\" is not supported (only \(architecture))")
        }
        func key(_ k: String) -> String { "\(architecture).\(k)" }
        func optionalInt(_ k: String) throws -> Int? { file[key(k)] == nil ? nil : try file.int(key(k)) }
        let hidden = try file.int(key("embedding_length"))
        let layers = try file.int(key("block_count"))
        // Before the per-layer lists are built from it (issue 18's probe: 0xFFFFFFFF allocated 4 GB, −1 trapped).
        guard layers >= 1, layers <= Gemma3Config.limits.layers else {
            throw FormatError("\(file.path): block_count \(layers) is outside 1…\(Gemma3Config.limits.layers)")
        }
        let heads = try file.int(key("attention.head_count"))
        guard file[key("attention.head_count_kv")]?.arrayValue == nil else {
            throw FormatError("\(file.path): per-layer head_count_kv arrays are not supported")
        }
        let kvHeads = try optionalInt("attention.head_count_kv") ?? heads
        let headDim = try optionalInt("attention.key_length") ?? (heads > 0 ? hidden / heads : 0)
        if let v = try optionalInt("attention.value_length"), v != headDim {
            throw FormatError("\(file.path): value_length \(v) differs from key_length \(headDim), which Gemma 3 does not do")
        }
        let embeddingName = ModelTensor.embedding.ggufName
        guard let embedding = file.tensor(named: embeddingName), embedding.dimensions.count == 2 else {
            throw FormatError("\(file.path): missing 2-D tensor \(embeddingName)")
        }
        guard embedding.dimensions[0] == hidden else {
            throw FormatError("\(file.path): \(embeddingName) rows have \(embedding.dimensions[0]) values, embedding_length is \(hidden)")
        }
        let window = try optionalInt("attention.sliding_window") ?? 0
        var layerTypes = Gemma3Config.layerTypes(count: layers, slidingWindowPattern: window > 0 ? 6 : 0)
        if window <= 0 {
            layerTypes = Array(repeating: .fullAttention, count: layers)
        } else if let pattern = file[key("attention.sliding_window_pattern")] {
            if let items = pattern.arrayValue {
                guard items.count == layers else {
                    throw FormatError("\(file.path): sliding_window_pattern has \(items.count) entries for \(layers) layers")
                }
                layerTypes = try items.map { item in
                    if let b = item.boolValue { return b ? .slidingAttention : .fullAttention }
                    if let i = item.intValue { return i != 0 ? .slidingAttention : .fullAttention }
                    throw FormatError("\(file.path): sliding_window_pattern holds \(item.type) values")
                }
            } else if let n = pattern.intValue {
                guard n >= 0 else { throw FormatError("\(file.path): sliding_window_pattern \(n) is negative") }
                // llama.cpp: layer l slides when l % n < n − 1 (n = 0: all sliding).
                layerTypes = (0..<layers).map { l in n == 0 || l % n < n - 1 ? .slidingAttention : .fullAttention }
            }
        }
        if let cap = file[key("final_logit_softcapping")]?.doubleValue, cap > 0 {
            throw FormatError("\(file.path): final logit softcapping (\(cap)) is not supported")
        }
        let ropeFull = file[key("rope.freq_base")]?.doubleValue ?? 10_000
        let ropeLocal = file[key("rope.freq_base_swa")]?.doubleValue ?? 10_000
        let eps = try file.double(key("attention.layer_norm_rms_epsilon"))
        let bos = file["tokenizer.ggml.bos_token_id"]?.intValue
        var eos: [Int] = []
        if let e = file["tokenizer.ggml.eos_token_id"]?.intValue { eos.append(e) }
        if let tokens = file["tokenizer.ggml.tokens"]?.arrayValue,
           let endOfTurn = tokens.firstIndex(where: { $0.stringValue == "<end_of_turn>" }), !eos.contains(endOfTurn) {
            eos.append(endOfTurn)
        }
        var config = Gemma3Config(
            vocabSize: embedding.dimensions[1], hiddenSize: hidden,
            intermediateSize: try file.int(key("feed_forward_length")),
            numHiddenLayers: layers, numAttentionHeads: heads, numKeyValueHeads: kvHeads, headDim: headDim,
            queryPreAttnScalar: layers == 62 ? Double(hidden / max(1, heads)) : Double(headDim),
            slidingWindow: window > 0 ? window : (try optionalInt("context_length") ?? 8192),
            layerTypes: layerTypes,
            ropeThetaFull: ropeFull, ropeThetaSliding: ropeLocal,
            rmsNormEps: Double(Float(eps)),
            tieWordEmbeddings: file.tensor(named: ModelTensor.lmHead.ggufName) == nil,
            maxPositionEmbeddings: try optionalInt("context_length") ?? 32768,
            bosTokenId: bos, eosTokenIds: eos,
            padTokenId: file["tokenizer.ggml.padding_token_id"]?.intValue)
        config.rmsNormEps = eps == Double(Float(1e-6)) ? 1e-6 : eps  // the float32-rounded 1e-6 is HF's 1e-6
        do { try config.validate() } catch let e as Gemma3ConfigError {
            throw FormatError("\(file.path): \(e.message)")
        }
        return config
    }

    /// llama.cpp's `general.file_type` names (the "mostly" type of a file).
    public static func fileTypeName(_ v: Int) -> String? {
        let names: [Int: String] = [
            0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
            11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
            18: "Q6_K", 32: "BF16",
        ]
        return names[v]
    }

    /// A short description of the file's weight format ("Q4_K_M", or the types used).
    public static func formatName(of file: GGUFFile) -> String {
        if let t = file["general.file_type"]?.intValue, let name = fileTypeName(t) { return name }
        var types: [String] = []
        for t in file.tensors where t.dimensions.count == 2 && !types.contains(t.typeName) { types.append(t.typeName) }
        return types.joined(separator: "+")
    }

    // MARK: Weights

    /// Inference weights that use the file's blocks in place (`QuantizedLinear` borrowing the
    /// mapping). Norm weights are converted to the (1 + w) convention. With `widenSmallBlocks`, every
    /// quantized matrix gets its fastest decode form with identical values
    /// (`QuantizedLinear.widenedForDecode`): with `.int8` activations on an AVX-512 VNNI CPU a copy of
    /// the packed blocks in huge pages, otherwise bytes with float scales (`UnpackedBlockLinear`).
    ///
    /// `prefill` chooses the arithmetic of batched products (prompts, several tokens at once): with
    /// `.bfloat16` on a CPU that has AVX-512 BF16, the layer matrices stored in block formats
    /// (Q4_0 … Q8_0, Q4_K, Q6_K) or BF16 get a bfloat16 copy for those products (`BF16PrefillLinear`,
    /// built by the first product of ≥ 32 tokens; shorter products always use float32, so results
    /// depend on a product's size only, never on earlier calls). Otherwise (`.float32`, or F16 matrices) non-F32 layer matrices get a
    /// float32 copy for batched products, built the same way (`Float32PrefillLinear`; 4 bytes a weight,
    /// one sgemm per product instead of dequantizing on every call). F32 matrices, decoding and the LM head always stay as
    /// they are, and `activations: .float` (exact arithmetic on the stored weights) keeps float32
    /// prefill too. The default, `.float32`, gives the same numbers on every CPU; the command-line
    /// tool passes `PrefillPrecision.automatic`.
    public static func inferenceWeights(from file: GGUFFile, config: Gemma3Config? = nil,
                                        activations: QuantizedLinear.ActivationPrecision = .int16,
                                        widenSmallBlocks: Bool = false,
                                        prefill: PrefillPrecision = .float32) throws -> InferenceWeights {
        let config = try config ?? self.config(from: file)
        let bf16Prefill = prefill == .bfloat16 && activations != .float && PrefillPrecision.bfloat16Supported
        func matrix(_ name: String) throws -> any LinearWeight {
            let m = try file.linear(named: name, activations: activations)
            return widenSmallBlocks ? m.widenedForDecode() : m
        }
        // A layer matrix, with a bfloat16 copy for batched products where the format's own rounding is
        // at least as coarse as bfloat16's.
        func layerMatrix(_ name: String) throws -> any LinearWeight {
            let m = try matrix(name)
            guard let type = file.tensor(named: name)?.type, type != .f32 else { return m }
            if bf16Prefill && type != .f16 { return BF16PrefillLinear(m) }
            return Float32PrefillLinear(m)
        }
        func norm(_ name: String) throws -> [Float] { try file.floats(tensor: name).map { $0 - 1 } }
        let layers = try (0..<config.numHiddenLayers).map { l in
            try LayerWeights(matrix: { try layerMatrix(ModelTensor.layer(l, $0).ggufName) },
                             vector: { try norm(ModelTensor.layer(l, $0).ggufName) })
        }
        let embedding = try matrix(ModelTensor.embedding.ggufName)
        let headName = ModelTensor.lmHead.ggufName
        let head = file.tensor(named: headName) == nil ? nil : try matrix(headName)
        do {
            return try InferenceWeights(config: config, embedding: embedding, lmHead: head, layers: layers,
                                        finalNorm: try norm(ModelTensor.finalNorm.ggufName), formatName: formatName(of: file))
        } catch let e as GenerationError {
            throw FormatError("\(file.path): \(e)")
        }
    }

    /// Every parameter dequantized to float32 in a `ParameterStore` (Hugging Face layout and norm
    /// convention): the "float path" on exactly the file's weights.
    public static func parameters(from file: GGUFFile, config: Gemma3Config) throws -> ParameterStore {
        let store = ParameterStore(config: config)
        for t in store.layout.tensors {
            let name = t.tensor.ggufName
            guard let info = file.tensor(named: name) else { throw FormatError("\(file.path): missing tensor \(name)") }
            guard info.dimensions.reversed() == t.shape else {
                throw FormatError("\(file.path): tensor \(name) has dimensions \(info.dimensions), the config needs \(Array(t.shape.reversed()))")
            }
            guard let type = info.type, type.hasKernels else {
                throw FormatError("\(file.path): tensor \(name) has type \(info.typeName), which cannot be dequantized here")
            }
            let raw = try file.data(of: info)
            let rowBytes = raw.count / info.rows
            let dst = store.view(t).baseAddress!
            for r in 0..<info.rows {
                GGMLBlocks.dequantizeRowUnchecked(type, raw.baseAddress! + r * rowBytes, dst + r * info.columns, count: info.columns)
            }
            if t.tensor.role == .norm {
                for i in 0..<t.count { dst[i] -= 1 }
            }
        }
        return store
    }

    // MARK: Tokenizer

    /// The tokenizer stored in the file's `tokenizer.ggml.*` metadata: Gemma's (`llama`, SentencePiece)
    /// or GPT-2's byte-level BPE (`gpt2`, what `gemma3 convert` writes for models trained here).
    public static func textTokenizer(from file: GGUFFile) throws -> any TextTokenizer {
        if file["tokenizer.ggml.model"]?.stringValue == "gpt2" { return try gpt2Tokenizer(from: file) }
        return try tokenizer(from: file)
    }

    /// The GPT-2 tokenizer stored as `tokenizer.ggml.model = "gpt2"` (tokens and merges).
    public static func gpt2Tokenizer(from file: GGUFFile) throws -> GPT2Tokenizer {
        let vocabulary = GPT2ByteLevelVocabulary(tokens: try file.strings("tokenizer.ggml.tokens"),
                                                 merges: try file.strings("tokenizer.ggml.merges"), specialIDs: [])
        do {
            return try GPT2Tokenizer(vocabulary, source: file.path)
        } catch let e as TokenizerError {
            throw FormatError(e.description)
        }
    }

    /// The Gemma tokenizer stored in the file's `tokenizer.ggml.*` metadata.
    public static func tokenizer(from file: GGUFFile) throws -> GemmaTokenizer {
        let model = try file.string("tokenizer.ggml.model")
        guard model == "llama" else {
            throw FormatError("\(file.path): tokenizer model \"\(model)\" is not supported (Gemma files use \"llama\", SentencePiece)")
        }
        let pieces = try file.strings("tokenizer.ggml.tokens")
        let scores = file["tokenizer.ggml.scores"] == nil ? [Float](repeating: 0, count: pieces.count) : try file.floats("tokenizer.ggml.scores")
        let types = file["tokenizer.ggml.token_type"] == nil ? [Int](repeating: 1, count: pieces.count) : try file.ints("tokenizer.ggml.token_type")
        func tokenID(_ key: String) throws -> Int32 {
            let id = try file.int(key)
            guard let small = Int32(exactly: id), small >= 0, Int(small) < pieces.count else {
                throw FormatError("\(file.path): \(key) \(id) is outside the vocabulary of \(pieces.count) tokens")
            }
            return small
        }
        do {
            return try GemmaTokenizer(
                pieces: pieces, scores: scores, types: types.map { Int32(truncatingIfNeeded: $0) },
                bosTokenID: try tokenID("tokenizer.ggml.bos_token_id"),
                eosTokenID: try tokenID("tokenizer.ggml.eos_token_id"),
                addBOS: file["tokenizer.ggml.add_bos_token"]?.boolValue ?? true,
                addSpacePrefix: file["tokenizer.ggml.add_space_prefix"]?.boolValue ?? false,
                source: file.path)
        } catch let e as TokenizerError {
            throw FormatError(e.description)
        }
    }

    // MARK: Export

    /// A GGUF file (architecture `gemma3`) holding a model's parameters: matrices in `matrixType`
    /// (F32, F16, BF16, Q8_0, Q4_0, Q5_0, …; the embedding too), norms in F32 with +1 added, and the
    /// Gemma tokenizer or a GPT-2 vocabulary when given (llama.cpp's `gpt2` tokenizer model: byte-level
    /// BPE, no BOS, `<|endoftext|>` ends a text). The result can be read back with `inferenceWeights(from:)`.
    public static func writer(config: Gemma3Config, parameters store: ParameterStore, matrixType: GGMLType = .f32,
                              tokenizer: GemmaTokenizer? = nil, gpt2Vocabulary: GPT2ByteLevelVocabulary? = nil,
                              name: String = "gemma3-swift") throws -> GGUFWriter {
        var w = GGUFWriter()
        w.set("general.architecture", .string(architecture))
        w.set("general.name", .string(name))
        w.set("general.file_type", .uint32(matrixType == .f32 ? 0 : matrixType == .f16 ? 1 : matrixType == .bf16 ? 32 :
                                            matrixType == .q8_0 ? 7 : matrixType == .q4_0 ? 2 : matrixType == .q5_0 ? 8 : 1024))
        func k(_ s: String) -> String { "\(architecture).\(s)" }
        w.set(k("context_length"), .uint32(UInt32(config.maxPositionEmbeddings)))
        w.set(k("embedding_length"), .uint32(UInt32(config.hiddenSize)))
        w.set(k("block_count"), .uint32(UInt32(config.numHiddenLayers)))
        w.set(k("feed_forward_length"), .uint32(UInt32(config.intermediateSize)))
        w.set(k("attention.head_count"), .uint32(UInt32(config.numAttentionHeads)))
        w.set(k("attention.head_count_kv"), .uint32(UInt32(config.numKeyValueHeads)))
        w.set(k("attention.key_length"), .uint32(UInt32(config.headDim)))
        w.set(k("attention.value_length"), .uint32(UInt32(config.headDim)))
        w.set(k("attention.layer_norm_rms_epsilon"), .float32(Float(config.rmsNormEps)))
        w.set(k("rope.freq_base"), .float32(Float(config.ropeThetaFull)))
        w.set(k("rope.freq_base_swa"), .float32(Float(config.ropeThetaSliding)))
        w.set(k("attention.sliding_window"), .uint32(UInt32(config.slidingWindow)))
        w.set(k("attention.sliding_window_pattern"), .array(.bool, config.layerTypes.map { .bool($0 == .slidingAttention) }))
        if let tokenizer {
            w.set("tokenizer.ggml.model", .string("llama"))
            w.set("tokenizer.ggml.pre", .string("default"))
            w.set("tokenizer.ggml.tokens", .array(.string, tokenizer.pieces.map { .string(String(decoding: $0, as: UTF8.self)) }))
            w.set("tokenizer.ggml.scores", .array(.float32, tokenizer.scores.map { .float32($0) }))
            w.set("tokenizer.ggml.token_type", .array(.int32, tokenizer.types.map { .int32($0.rawValue) }))
            w.set("tokenizer.ggml.bos_token_id", .uint32(UInt32(tokenizer.bosTokenID)))
            w.set("tokenizer.ggml.eos_token_id", .uint32(UInt32(tokenizer.eosTokenID)))
            w.set("tokenizer.ggml.add_bos_token", .bool(tokenizer.addBOS))
            w.set("tokenizer.ggml.add_space_prefix", .bool(tokenizer.addSpacePrefix))
        } else if let vocabulary = gpt2Vocabulary {
            guard vocabulary.tokens.count <= config.vocabSize else {
                throw FormatError("the GPT-2 vocabulary has \(vocabulary.tokens.count) tokens but the embedding only \(config.vocabSize) rows")
            }
            // The end-of-text token both opens nothing (no BOS is added) and ends a text.
            let endOfText = vocabulary.tokens.firstIndex(of: "<|endoftext|>") ?? Int(GPT2Tokenizer.endOfTextID)
            w.set("tokenizer.ggml.model", .string("gpt2"))
            w.set("tokenizer.ggml.pre", .string("gpt-2"))
            w.set("tokenizer.ggml.tokens", .array(.string, vocabulary.tokens.map { .string($0) }))
            w.set("tokenizer.ggml.token_type", .array(.int32, vocabulary.tokens.indices.map {
                .int32(vocabulary.specialIDs.contains($0) ? 3 : 1)  // 3: control, 1: normal
            }))
            w.set("tokenizer.ggml.merges", .array(.string, vocabulary.merges.map { .string($0) }))
            w.set("tokenizer.ggml.bos_token_id", .uint32(UInt32(endOfText)))
            w.set("tokenizer.ggml.eos_token_id", .uint32(UInt32(endOfText)))
            w.set("tokenizer.ggml.add_bos_token", .bool(false))
            w.set("tokenizer.ggml.add_eos_token", .bool(false))
        } else {
            if let bos = config.bosTokenId { w.set("tokenizer.ggml.bos_token_id", .uint32(UInt32(bos))) }
            if let eos = config.eosTokenIds.first { w.set("tokenizer.ggml.eos_token_id", .uint32(UInt32(eos))) }
        }
        for t in store.layout.tensors {
            let name = t.tensor.ggufName
            let view = store.view(t)
            let dims = Array(t.shape.reversed())
            if t.tensor.role == .norm {
                try w.addTensor(name, type: .f32, dimensions: dims, values: view.map { $0 + 1 })
            } else {
                try w.addTensor(name, type: matrixType, dimensions: dims, values: Array(view))
            }
        }
        return w
    }
}
