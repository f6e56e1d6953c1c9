import Foundation
import Gemma3Formats
import Gemma3Infrastructure

/// A configuration error: one line that says what is wrong and where.
public struct Gemma3ConfigError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The Gemma 3 text model hyper-parameters, with the field names of Hugging Face `config.json`.
///
/// Decoding accepts both spellings written in the wild:
/// - transformers 5: `rope_parameters.{sliding_attention,full_attention}.rope_theta` and `layer_types`;
/// - transformers 4 / the published `google/gemma-3-270m`: `rope_theta` + `rope_local_base_freq`,
///   `layer_types` or `sliding_window_pattern` (`_sliding_window_pattern`);
/// - a multimodal wrapper whose text model sits under `text_config`.
///
/// `encode` writes the transformers-5 form (`gemma3_text`, `Gemma3ForCausalLM`, `rope_parameters`, `layer_types`).
/// Decoding does not validate; call `validate()` (``load(from:)`` does).
public struct Gemma3Config: Codable, Sendable, Equatable {
    /// The attention kind of one decoder layer.
    public enum LayerType: String, Codable, Sendable, Equatable {
        /// Causal attention restricted to the last `sliding_window` positions (the query included).
        case slidingAttention = "sliding_attention"
        /// Causal attention over every earlier position.
        case fullAttention = "full_attention"
    }

    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    /// Attention scores are multiplied by `query_pre_attn_scalar^-0.5` (not `head_dim^-0.5`).
    public var queryPreAttnScalar: Double
    /// Sliding layers see at most this many keys, the query itself included.
    public var slidingWindow: Int
    /// One entry per layer; authoritative over any pattern.
    public var layerTypes: [LayerType]
    /// RoPE base of full-attention layers (`rope_parameters.full_attention.rope_theta`, older `rope_theta`).
    public var ropeThetaFull: Double
    /// RoPE base of sliding layers (`rope_parameters.sliding_attention.rope_theta`, older `rope_local_base_freq`).
    public var ropeThetaSliding: Double
    public var rmsNormEps: Double
    public var tieWordEmbeddings: Bool
    public var maxPositionEmbeddings: Int
    /// Only `gelu_pytorch_tanh` (the Gemma 3 activation) is supported.
    public var hiddenActivation: String
    public var initializerRange: Double
    public var bosTokenId: Int?
    /// HF allows one id or a list; both decode into a list.
    public var eosTokenIds: [Int]
    public var padTokenId: Int?
    /// Gemma 2 feature; Gemma 3 has none. Kept so a config that sets it is rejected, not silently ignored.
    public var finalLogitSoftcapping: Double?
    public var attnLogitSoftcapping: Double?
    /// Non-default RoPE scaling (e.g. `linear` in the larger Gemma 3 models) is not supported; kept for validation.
    public var ropeTypeFull: String
    public var ropeTypeSliding: String

    /// Memberwise initializer with Gemma 3 defaults for the rarely changed fields.
    public init(
        vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
        numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int,
        queryPreAttnScalar: Double? = nil, slidingWindow: Int,
        layerTypes: [LayerType]? = nil,
        ropeThetaFull: Double = 1_000_000, ropeThetaSliding: Double = 10_000,
        rmsNormEps: Double = 1e-6, tieWordEmbeddings: Bool = true, maxPositionEmbeddings: Int,
        hiddenActivation: String = "gelu_pytorch_tanh", initializerRange: Double = 0.02,
        bosTokenId: Int? = nil, eosTokenIds: [Int] = [], padTokenId: Int? = nil
    ) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim
        self.queryPreAttnScalar = queryPreAttnScalar ?? Double(headDim)
        self.slidingWindow = slidingWindow
        self.layerTypes = layerTypes ?? Gemma3Config.layerTypes(count: numHiddenLayers, slidingWindowPattern: 6)
        self.ropeThetaFull = ropeThetaFull
        self.ropeThetaSliding = ropeThetaSliding
        self.rmsNormEps = rmsNormEps
        self.tieWordEmbeddings = tieWordEmbeddings
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.hiddenActivation = hiddenActivation
        self.initializerRange = initializerRange
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        self.padTokenId = padTokenId
        self.finalLogitSoftcapping = nil
        self.attnLogitSoftcapping = nil
        self.ropeTypeFull = "default"
        self.ropeTypeSliding = "default"
    }

    /// HF's pattern rule: layer l is full attention when (l + 1) % pattern == 0, sliding otherwise.
    public static func layerTypes(count: Int, slidingWindowPattern pattern: Int) -> [LayerType] {
        (0..<max(0, count)).map { l in
            pattern > 0 && (l + 1) % pattern == 0 ? .fullAttention : .slidingAttention
        }
    }

    // MARK: Derived quantities

    /// Whether layer `layer` uses sliding-window attention.
    @inlinable public func isSliding(layer: Int) -> Bool { layerTypes[layer] == .slidingAttention }

    /// The RoPE base of layer `layer` (local base on sliding layers, global base on full layers).
    @inlinable public func ropeTheta(layer: Int) -> Double { isSliding(layer: layer) ? ropeThetaSliding : ropeThetaFull }

    /// The factor applied to q·k scores: query_pre_attn_scalar^-0.5, in float32 as HF computes it.
    public var queryScale: Float { Float(1.0 / queryPreAttnScalar.squareRoot()) }

    /// HF keeps √hidden as a float32 tensor: sqrt in double, rounded once to float32.
    public var embeddingScale: Float { Float(Double(hiddenSize).squareRoot()) }

    /// Query heads per KV head (`repeat_kv` group size).
    public var queriesPerKeyValueHead: Int { numAttentionHeads / max(1, numKeyValueHeads) }

    /// Number of parameters (the tied embedding counted once).
    public var parameterCount: Int { ParameterLayout(config: self).count }

    /// Upper bounds `validate()` enforces: far above every published Gemma 3, small enough that sizes
    /// derived from them cannot overflow.
    public static let limits = (width: 1 << 16, layers: 1024, heads: 1024, positions: 1 << 20, parameters: 1 << 36)

    /// The parameter count computed with overflow checks; nil past `limits.parameters`.
    static func parameterCountChecked(_ c: Gemma3Config) -> Int? {
        let q = c.numAttentionHeads.multipliedReportingOverflow(by: c.headDim), kv = c.numKeyValueHeads.multipliedReportingOverflow(by: c.headDim)
        guard !q.overflow, !kv.overflow else { return nil }
        // Per layer: q, k, v, o projections; gate, up, down; norms (generous: 8 vectors of hidden or head_dim).
        let terms: [(Int, Int)] = [(c.hiddenSize, q.partialValue), (c.hiddenSize, kv.partialValue), (c.hiddenSize, kv.partialValue),
                                   (q.partialValue, c.hiddenSize), (c.hiddenSize, c.intermediateSize), (c.hiddenSize, c.intermediateSize),
                                   (c.intermediateSize, c.hiddenSize), (8, max(c.hiddenSize, c.headDim))]
        var perLayer = 0
        for (a, b) in terms {
            let (p, o) = a.multipliedReportingOverflow(by: b)
            guard !o, p <= limits.parameters else { return nil }
            perLayer += p
        }
        let (layers, o1) = perLayer.multipliedReportingOverflow(by: c.numHiddenLayers)
        let (embedding, o2) = c.vocabSize.multipliedReportingOverflow(by: c.hiddenSize)
        guard !o1, !o2 else { return nil }
        let total = layers + embedding * (c.tieWordEmbeddings ? 1 : 2)
        return total <= limits.parameters ? total : nil
    }

    // MARK: Validation

    /// Throws a one-line `Gemma3ConfigError` if the configuration cannot describe a working model.
    public func validate() throws {
        func positive(_ v: Int, _ name: String) throws {
            guard v > 0 else { throw Gemma3ConfigError("config: \(name) must be positive, got \(v)") }
        }
        try positive(vocabSize, "vocab_size")
        try positive(hiddenSize, "hidden_size")
        try positive(intermediateSize, "intermediate_size")
        try positive(numHiddenLayers, "num_hidden_layers")
        try positive(numAttentionHeads, "num_attention_heads")
        try positive(numKeyValueHeads, "num_key_value_heads")
        try positive(headDim, "head_dim")
        try positive(slidingWindow, "sliding_window")
        try positive(maxPositionEmbeddings, "max_position_embeddings")
        guard vocabSize <= Int(Int32.max) else {
            throw Gemma3ConfigError("config: vocab_size \(vocabSize) does not fit 32-bit token ids")
        }
        // Bounds far above any Gemma 3 (27B: 62 layers, hidden 5376, MLP 21504, 32 heads, 128K context), so
        // that a hostile config fails here instead of allocating its sizes.
        let bounds: [(Int, Int, String)] = [
            (hiddenSize, Self.limits.width, "hidden_size"), (intermediateSize, Self.limits.width, "intermediate_size"),
            (numHiddenLayers, Self.limits.layers, "num_hidden_layers"), (numAttentionHeads, Self.limits.heads, "num_attention_heads"),
            (numKeyValueHeads, Self.limits.heads, "num_key_value_heads"), (headDim, Self.limits.width, "head_dim"),
            (maxPositionEmbeddings, Self.limits.positions, "max_position_embeddings"), (slidingWindow, Self.limits.positions, "sliding_window"),
        ]
        for (value, limit, name) in bounds where value > limit {
            throw Gemma3ConfigError("config: \(name) \(value) is above the supported \(limit)")
        }
        guard Self.parameterCountChecked(self) != nil else {
            throw Gemma3ConfigError("config: the model's parameters (vocab \(vocabSize) × hidden \(hiddenSize), \(numHiddenLayers) layers) exceed \(Self.limits.parameters)")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw Gemma3ConfigError(
                "config: num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        }
        guard headDim % 2 == 0 else {
            throw Gemma3ConfigError("config: head_dim must be even for rotate-half RoPE, got \(headDim)")
        }
        guard layerTypes.count == numHiddenLayers else {
            throw Gemma3ConfigError(
                "config: layer_types has \(layerTypes.count) entries but num_hidden_layers is \(numHiddenLayers)")
        }
        guard queryPreAttnScalar > 0, queryPreAttnScalar.isFinite else {
            throw Gemma3ConfigError("config: query_pre_attn_scalar must be positive, got \(queryPreAttnScalar)")
        }
        guard rmsNormEps > 0, rmsNormEps.isFinite else {
            throw Gemma3ConfigError("config: rms_norm_eps must be positive, got \(rmsNormEps)")
        }
        guard ropeThetaFull > 1, ropeThetaSliding > 1, ropeThetaFull.isFinite, ropeThetaSliding.isFinite else {
            throw Gemma3ConfigError("config: rope_theta values must be finite and > 1, got full \(ropeThetaFull), sliding \(ropeThetaSliding)")
        }
        guard ropeTypeFull == "default", ropeTypeSliding == "default" else {
            throw Gemma3ConfigError(
                "config: only rope_type \"default\" is supported, got full \"\(ropeTypeFull)\", sliding \"\(ropeTypeSliding)\"")
        }
        guard hiddenActivation == "gelu_pytorch_tanh" || hiddenActivation == "gelu_tanh" else {
            throw Gemma3ConfigError("config: hidden_activation \"\(hiddenActivation)\" is not supported (Gemma 3 uses gelu_pytorch_tanh)")
        }
        guard finalLogitSoftcapping == nil, attnLogitSoftcapping == nil else {
            throw Gemma3ConfigError("config: logit softcapping is a Gemma 2 feature and is not supported; set final_logit_softcapping and attn_logit_softcapping to null")
        }
        guard initializerRange >= 0, initializerRange.isFinite else {
            throw Gemma3ConfigError("config: initializer_range must be >= 0, got \(initializerRange)")
        }
        for (name, id) in [("bos_token_id", bosTokenId), ("pad_token_id", padTokenId)] + eosTokenIds.map({ ("eos_token_id", Optional($0)) }) {
            if let id, id < 0 || id >= vocabSize {
                throw Gemma3ConfigError("config: \(name) \(id) is outside the vocabulary (size \(vocabSize))")
            }
        }
    }

    // MARK: Files

    /// Reads and validates a HF `config.json` (plain or with a `text_config` wrapper).
    public static func load(from url: URL) throws -> Gemma3Config {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw Gemma3ConfigError("cannot read config \(url.path): \(error.localizedDescription)")
        }
        return try decode(json: data, source: url.path)
    }

    /// Decodes and validates config JSON; `source` names it in error messages.
    public static func decode(json data: Data, source: String = "config.json") throws -> Gemma3Config {
        let config: Gemma3Config
        do {
            config = try JSONDecoder().decode(Gemma3Config.self, from: data)
        } catch let error as Gemma3ConfigError {
            throw Gemma3ConfigError("\(source): \(error.message)")
        } catch let DecodingError.keyNotFound(key, context) {
            throw Gemma3ConfigError("\(source): missing key \"\(Gemma3Config.path(context.codingPath + [key]))\"")
        } catch let DecodingError.typeMismatch(_, context) {
            throw Gemma3ConfigError("\(source): wrong type for \"\(Gemma3Config.path(context.codingPath))\": \(context.debugDescription)")
        } catch let DecodingError.valueNotFound(_, context) {
            throw Gemma3ConfigError("\(source): null value for \"\(Gemma3Config.path(context.codingPath))\"")
        } catch {
            throw Gemma3ConfigError("\(source): not valid config JSON (\(error))")
        }
        do { try config.validate() } catch let error as Gemma3ConfigError {
            throw Gemma3ConfigError("\(source): \(error.message)")
        }
        return config
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }

    /// HF-style `config.json` text (sorted keys, pretty printed).
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// Writes `config.json` atomically (temp file, fsync, rename).
    public func write(to url: URL) throws {
        try AtomicFileWriter.write(try jsonData(), to: url)
    }

    // MARK: Codable

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case queryPreAttnScalar = "query_pre_attn_scalar"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case slidingWindowPattern = "sliding_window_pattern"
        case privateSlidingWindowPattern = "_sliding_window_pattern"
        case ropeParameters = "rope_parameters"
        case ropeTheta = "rope_theta"
        case ropeLocalBaseFreq = "rope_local_base_freq"
        case ropeScaling = "rope_scaling"
        case rmsNormEps = "rms_norm_eps"
        case tieWordEmbeddings = "tie_word_embeddings"
        case maxPositionEmbeddings = "max_position_embeddings"
        case hiddenActivation = "hidden_activation"
        case hiddenAct = "hidden_act"
        case initializerRange = "initializer_range"
        case bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id"
        case padTokenId = "pad_token_id"
        case finalLogitSoftcapping = "final_logit_softcapping"
        case attnLogitSoftcapping = "attn_logit_softcapping"
        case textConfig = "text_config"
        case modelType = "model_type"
        case architectures
        case attentionBias = "attention_bias"
        case attentionDropout = "attention_dropout"
        case useBidirectionalAttention = "use_bidirectional_attention"
        case torchDtype = "dtype"
    }

    private struct RopeEntry: Codable {
        var ropeTheta: Double?
        var ropeType: String?
        enum CodingKeys: String, CodingKey {
            case ropeTheta = "rope_theta"
            case ropeType = "rope_type"
        }
    }

    public init(from decoder: any Decoder) throws {
        let outer = try decoder.container(keyedBy: CodingKeys.self)
        // Multimodal checkpoints (Gemma3ForConditionalGeneration) nest the text model.
        let c = outer.contains(.textConfig) ? try outer.nestedContainer(keyedBy: CodingKeys.self, forKey: .textConfig) : outer

        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? 256
        queryPreAttnScalar = try c.decodeIfPresent(Double.self, forKey: .queryPreAttnScalar) ?? 256
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow) ?? 4096

        if let names = try c.decodeIfPresent([String].self, forKey: .layerTypes) {
            layerTypes = try names.enumerated().map { index, name in
                guard let type = LayerType(rawValue: name) else {
                    throw Gemma3ConfigError(
                        "unknown layer type \"\(name)\" at layer_types[\(index)] (expected sliding_attention or full_attention)")
                }
                return type
            }
        } else {
            let pattern = try c.decodeIfPresent(Int.self, forKey: .slidingWindowPattern)
                ?? c.decodeIfPresent(Int.self, forKey: .privateSlidingWindowPattern) ?? 6
            guard pattern > 0 else { throw Gemma3ConfigError("sliding_window_pattern must be positive, got \(pattern)") }
            // Checked before the list is built: a hostile count must not allocate it.
            guard numHiddenLayers > 0, numHiddenLayers <= Self.limits.layers else {
                throw Gemma3ConfigError("config: num_hidden_layers must be 1…\(Self.limits.layers), got \(numHiddenLayers)")
            }
            layerTypes = Gemma3Config.layerTypes(count: numHiddenLayers, slidingWindowPattern: pattern)
        }

        // RoPE: transformers 5 nests per layer type; older configs use two top-level keys.
        var full = RopeEntry(ropeTheta: nil, ropeType: nil)
        var sliding = RopeEntry(ropeTheta: nil, ropeType: nil)
        if c.contains(.ropeParameters), try !c.decodeNil(forKey: .ropeParameters) {
            let params = try c.nestedContainer(keyedBy: RopeKeys.self, forKey: .ropeParameters)
            if params.contains(.fullAttention) || params.contains(.slidingAttention) {
                full = try params.decodeIfPresent(RopeEntry.self, forKey: .fullAttention) ?? full
                sliding = try params.decodeIfPresent(RopeEntry.self, forKey: .slidingAttention) ?? sliding
            } else {
                // A flat `rope_parameters` applies to the global layers only.
                full = try c.decode(RopeEntry.self, forKey: .ropeParameters)
            }
        }
        if let scaling = try c.decodeIfPresent(RopeEntry.self, forKey: .ropeScaling), full.ropeType == nil {
            full.ropeType = scaling.ropeType
        }
        // The older keys are type-checked even when `rope_parameters` takes precedence over them.
        let legacyFull = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
        let legacySliding = try c.decodeIfPresent(Double.self, forKey: .ropeLocalBaseFreq)
        ropeThetaFull = full.ropeTheta ?? legacyFull ?? 1_000_000
        ropeThetaSliding = sliding.ropeTheta ?? legacySliding ?? 10_000
        ropeTypeFull = full.ropeType ?? "default"
        ropeTypeSliding = sliding.ropeType ?? "default"

        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings)
            ?? outer.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 131_072
        hiddenActivation = try c.decodeIfPresent(String.self, forKey: .hiddenActivation)
            ?? c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu_pytorch_tanh"
        initializerRange = try c.decodeIfPresent(Double.self, forKey: .initializerRange) ?? 0.02
        bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        if let one = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId) {
            eosTokenIds = [one]
        } else {
            eosTokenIds = try c.decodeIfPresent([Int].self, forKey: .eosTokenId) ?? []
        }
        padTokenId = try c.decodeIfPresent(Int.self, forKey: .padTokenId)
        finalLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .finalLogitSoftcapping)
        attnLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .attnLogitSoftcapping)
        if try c.decodeIfPresent(Bool.self, forKey: .attentionBias) == true {
            throw Gemma3ConfigError("attention_bias true is not supported (Gemma 3 has no biases)")
        }
        if try c.decodeIfPresent(Bool.self, forKey: .useBidirectionalAttention) == true {
            throw Gemma3ConfigError("use_bidirectional_attention true is not supported (causal language model only)")
        }
    }

    private enum RopeKeys: String, CodingKey {
        case fullAttention = "full_attention"
        case slidingAttention = "sliding_attention"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode("gemma3_text", forKey: .modelType)
        try c.encode(["Gemma3ForCausalLM"], forKey: .architectures)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        // HF writes an integer when the scalar is whole (256, not 256.0).
        if queryPreAttnScalar == queryPreAttnScalar.rounded(), abs(queryPreAttnScalar) < 1e15 {
            try c.encode(Int(queryPreAttnScalar), forKey: .queryPreAttnScalar)
        } else {
            try c.encode(queryPreAttnScalar, forKey: .queryPreAttnScalar)
        }
        try c.encode(slidingWindow, forKey: .slidingWindow)
        try c.encode(layerTypes, forKey: .layerTypes)
        var rope = c.nestedContainer(keyedBy: RopeKeys.self, forKey: .ropeParameters)
        try rope.encode(RopeEntry(ropeTheta: ropeThetaFull, ropeType: ropeTypeFull), forKey: .fullAttention)
        try rope.encode(RopeEntry(ropeTheta: ropeThetaSliding, ropeType: ropeTypeSliding), forKey: .slidingAttention)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(hiddenActivation, forKey: .hiddenActivation)
        try c.encode(initializerRange, forKey: .initializerRange)
        // Explicit nulls: HF's defaults (pad 0, eos 1, bos 2) would otherwise apply on load.
        try c.encode(bosTokenId, forKey: .bosTokenId)
        switch eosTokenIds.count {
        case 0: try c.encodeNil(forKey: .eosTokenId)
        case 1: try c.encode(eosTokenIds[0], forKey: .eosTokenId)
        default: try c.encode(eosTokenIds, forKey: .eosTokenId)
        }
        try c.encode(padTokenId, forKey: .padTokenId)
        try c.encode(finalLogitSoftcapping, forKey: .finalLogitSoftcapping)
        try c.encode(attnLogitSoftcapping, forKey: .attnLogitSoftcapping)
        try c.encode(false, forKey: .attentionBias)
        try c.encode(0.0, forKey: .attentionDropout)
        try c.encode(false, forKey: .useBidirectionalAttention)
        try c.encode("float32", forKey: .torchDtype)
    }
}

// MARK: - Presets

extension Gemma3Config {
    /// Names accepted by `preset(named:)`, smallest first.
    public static let presetNames = ["tinystories-5m", "tinystories-15m", "tinystories-30m", "tinystories-270m", "gemma3-270m"]

    /// A named configuration, or nil for an unknown name.
    ///
    /// - `gemma3-270m`: Google's published Gemma 3 270M (vocabulary 262144, tied).
    /// - `tinystories-270m`: the same body with the GPT-2 vocabulary (50257), the original from-scratch project.
    /// - `tinystories-5m/15m/30m`: small CPU models with the same structure (5:1 sliding/full, MQA,
    ///   QK-norm, four norms per block); parameter counts include the 50257 × hidden embedding.
    public static func preset(named name: String) -> Gemma3Config? {
        switch name {
        case "gemma3-270m":
            return Gemma3Config(
                vocabSize: 262_144, hiddenSize: 640, intermediateSize: 2048, numHiddenLayers: 18,
                numAttentionHeads: 4, numKeyValueHeads: 1, headDim: 256, queryPreAttnScalar: 256,
                slidingWindow: 512, maxPositionEmbeddings: 32_768,
                bosTokenId: 2, eosTokenIds: [1], padTokenId: 0)
        case "tinystories-270m":
            return Gemma3Config(
                vocabSize: 50_257, hiddenSize: 640, intermediateSize: 2048, numHiddenLayers: 18,
                numAttentionHeads: 4, numKeyValueHeads: 1, headDim: 256, queryPreAttnScalar: 256,
                slidingWindow: 512, maxPositionEmbeddings: 32_768, eosTokenIds: [50_256])
        case "tinystories-5m":  // ≈ 5.5M parameters, 4.8M of them the embedding
            return small(hidden: 96, layers: 6, headDim: 32, ffn: 288)
        case "tinystories-15m":  // ≈ 15M parameters
            return small(hidden: 192, layers: 12, headDim: 64, ffn: 576)
        case "tinystories-30m":  // ≈ 29.5M parameters
            return small(hidden: 384, layers: 6, headDim: 96, ffn: 1152)
        default:
            return nil
        }
    }

    private static func small(hidden: Int, layers: Int, headDim: Int, ffn: Int) -> Gemma3Config {
        Gemma3Config(
            vocabSize: 50_257, hiddenSize: hidden, intermediateSize: ffn, numHiddenLayers: layers,
            numAttentionHeads: 4, numKeyValueHeads: 1, headDim: headDim, queryPreAttnScalar: Double(headDim),
            slidingWindow: 128, maxPositionEmbeddings: 2048, eosTokenIds: [50_256])
    }
}
