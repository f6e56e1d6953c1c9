// The tensors of a Gemma 3 model, declared once: their Hugging Face and GGUF names, shapes and
// roles. The flat parameter layout (`ParameterLayout`), the inference weights' shape checks, the
// safetensors and GGUF readers and writers all derive from these tables.

/// What a tensor is, which decides its initialisation, weight decay and GGUF storage.
public enum TensorRole: Sendable, Equatable {
    /// A projection matrix (`nn.Linear` layout [out, in]) or the embedding [V, H].
    case matrix
    /// An RMSNorm weight [dim]; Gemma scales by (1 + w), and GGUF stores 1 + w.
    case norm

    /// Whether decoupled weight decay applies: matrices and the embedding decay, RMSNorm weights never
    /// (nanoGPT's rule: parameters with ≥ 2 dimensions).
    public var appliesWeightDecay: Bool { self == .matrix }
}

/// One dimension of a tensor's shape, in terms of `Gemma3Config`.
public enum TensorDimension: Sendable, Equatable {
    case vocabulary, hidden, intermediate, headDim
    /// All query heads side by side: heads × head_dim.
    case queryWidth
    /// All key (or value) heads side by side: KV heads × head_dim.
    case keyValueWidth

    /// The size of this dimension in `config`.
    public func size(in config: Gemma3Config) -> Int {
        switch self {
        case .vocabulary: config.vocabSize
        case .hidden: config.hiddenSize
        case .intermediate: config.intermediateSize
        case .headDim: config.headDim
        case .queryWidth: config.numAttentionHeads * config.headDim
        case .keyValueWidth: config.numKeyValueHeads * config.headDim
        }
    }
}

/// The name, shape and role of one tensor kind.
public struct TensorSpec: Sendable, Equatable {
    /// Hugging Face name; for a decoder-layer tensor the part between `model.layers.{i}.` and `.weight`.
    public let huggingFaceName: String
    /// GGUF (llama.cpp) name; for a decoder-layer tensor the part between `blk.{i}.` and `.weight`.
    public let ggufName: String
    /// Row-major shape; matrices use the `nn.Linear` layout [out, in].
    public let shape: [TensorDimension]
    public let role: TensorRole
}

/// One of the 13 tensors of a decoder layer. Case order is storage order inside a layer: q/k/v are
/// adjacent (a fused QKV matrix) and so are gate/up, which the training code relies on.
public enum DecoderLayerTensor: Int, CaseIterable, Sendable {
    case inputNorm, qProj, kProj, vProj, qNorm, kNorm, oProj
    case postAttentionNorm, preFeedforwardNorm, gateProj, upProj, downProj, postFeedforwardNorm

    /// The table: every decoder-layer tensor's names, shape and role.
    public var spec: TensorSpec {
        switch self {
        case .inputNorm: TensorSpec(huggingFaceName: "input_layernorm", ggufName: "attn_norm", shape: [.hidden], role: .norm)
        case .qProj: TensorSpec(huggingFaceName: "self_attn.q_proj", ggufName: "attn_q", shape: [.queryWidth, .hidden], role: .matrix)
        case .kProj: TensorSpec(huggingFaceName: "self_attn.k_proj", ggufName: "attn_k", shape: [.keyValueWidth, .hidden], role: .matrix)
        case .vProj: TensorSpec(huggingFaceName: "self_attn.v_proj", ggufName: "attn_v", shape: [.keyValueWidth, .hidden], role: .matrix)
        case .qNorm: TensorSpec(huggingFaceName: "self_attn.q_norm", ggufName: "attn_q_norm", shape: [.headDim], role: .norm)
        case .kNorm: TensorSpec(huggingFaceName: "self_attn.k_norm", ggufName: "attn_k_norm", shape: [.headDim], role: .norm)
        case .oProj: TensorSpec(huggingFaceName: "self_attn.o_proj", ggufName: "attn_output", shape: [.hidden, .queryWidth], role: .matrix)
        case .postAttentionNorm:
            TensorSpec(huggingFaceName: "post_attention_layernorm", ggufName: "post_attention_norm", shape: [.hidden], role: .norm)
        case .preFeedforwardNorm:
            TensorSpec(huggingFaceName: "pre_feedforward_layernorm", ggufName: "ffn_norm", shape: [.hidden], role: .norm)
        case .gateProj: TensorSpec(huggingFaceName: "mlp.gate_proj", ggufName: "ffn_gate", shape: [.intermediate, .hidden], role: .matrix)
        case .upProj: TensorSpec(huggingFaceName: "mlp.up_proj", ggufName: "ffn_up", shape: [.intermediate, .hidden], role: .matrix)
        case .downProj: TensorSpec(huggingFaceName: "mlp.down_proj", ggufName: "ffn_down", shape: [.hidden, .intermediate], role: .matrix)
        case .postFeedforwardNorm:
            TensorSpec(huggingFaceName: "post_feedforward_layernorm", ggufName: "post_ffw_norm", shape: [.hidden], role: .norm)
        }
    }
}

/// A tensor of a Gemma 3 model: the embedding, one decoder layer's tensor, the final norm, or the
/// LM head of an untied model.
public enum ModelTensor: Hashable, Sendable {
    /// `model.embed_tokens.weight` [V, H]; also the LM head when tied.
    case embedding
    case layer(Int, DecoderLayerTensor)
    /// `model.norm.weight` [H].
    case finalNorm
    /// `lm_head.weight` [V, H], present only when the embedding is not tied.
    case lmHead

    private static let layerNamePrefix = (huggingFace: "model.layers.", gguf: "blk.")
    private static let nameSuffix = ".weight"

    /// The table of the model-level tensors (for a layer tensor: its `DecoderLayerTensor.spec`).
    public var spec: TensorSpec {
        switch self {
        case .embedding:
            TensorSpec(huggingFaceName: "model.embed_tokens.weight", ggufName: "token_embd.weight", shape: [.vocabulary, .hidden], role: .matrix)
        case .layer(_, let t): t.spec
        case .finalNorm: TensorSpec(huggingFaceName: "model.norm.weight", ggufName: "output_norm.weight", shape: [.hidden], role: .norm)
        case .lmHead: TensorSpec(huggingFaceName: "lm_head.weight", ggufName: "output.weight", shape: [.vocabulary, .hidden], role: .matrix)
        }
    }

    /// Every tensor of a model with `config`, in storage order (Hugging Face's): embedding, each layer's
    /// 13 tensors, final norm, then the LM head when untied.
    public static func all(config: Gemma3Config) -> [ModelTensor] {
        [.embedding]
            + (0..<config.numHiddenLayers).flatMap { l in DecoderLayerTensor.allCases.map { ModelTensor.layer(l, $0) } }
            + [.finalNorm] + (config.tieWordEmbeddings ? [] : [.lmHead])
    }

    /// Full Hugging Face name, e.g. `model.layers.3.self_attn.q_proj.weight`.
    public var huggingFaceName: String {
        guard case .layer(let l, let t) = self else { return spec.huggingFaceName }
        return Self.layerNamePrefix.huggingFace + "\(l)." + t.spec.huggingFaceName + Self.nameSuffix
    }

    /// Full GGUF name, e.g. `blk.3.attn_q.weight`.
    public var ggufName: String {
        guard case .layer(let l, let t) = self else { return spec.ggufName }
        return Self.layerNamePrefix.gguf + "\(l)." + t.spec.ggufName + Self.nameSuffix
    }

    /// Row-major shape in `config`.
    public func shape(in config: Gemma3Config) -> [Int] { spec.shape.map { $0.size(in: config) } }

    public var role: TensorRole { spec.role }

    /// The tensor with this Hugging Face name, or nil (the layer index is not checked against a config).
    public init?(huggingFaceName name: String) {
        guard let t = Self.parse(name, prefix: Self.layerNamePrefix.huggingFace, name: \.huggingFaceName) else { return nil }
        self = t
    }

    /// The tensor with this GGUF name, or nil (the layer index is not checked against a config).
    public init?(ggufName name: String) {
        guard let t = Self.parse(name, prefix: Self.layerNamePrefix.gguf, name: \.ggufName) else { return nil }
        self = t
    }

    private static func parse(_ name: String, prefix: String, name field: KeyPath<TensorSpec, String>) -> ModelTensor? {
        if let t = [ModelTensor.embedding, .finalNorm, .lmHead].first(where: { $0.spec[keyPath: field] == name }) { return t }
        guard name.hasPrefix(prefix), name.hasSuffix(nameSuffix) else { return nil }
        let rest = name.dropFirst(prefix.count).dropLast(nameSuffix.count)
        guard let dot = rest.firstIndex(of: "."), let l = Int(rest[..<dot]), l >= 0 else { return nil }
        let part = rest[rest.index(after: dot)...]
        guard let t = DecoderLayerTensor.allCases.first(where: { $0.spec[keyPath: field] == part }) else { return nil }
        return .layer(l, t)
    }
}
