import Gemma3Kernels

/// Storage format of the matrices of an inference model.
public enum WeightDType: String, Sendable, CaseIterable {
    /// float32, read in place from the parameter store (4 bytes per weight).
    case f32
    /// bfloat16 copies (2 bytes per weight), widened to float32 inside the kernels.
    case bf16
}

/// The matrices and norm weights of one decoder layer, as the inference engine consumes them.
///
/// Matrices use the `nn.Linear` layout [out, in] behind `LinearWeight`, so any storage format works.
/// Norm weights are float32 in Hugging Face's convention: RMSNorm scales by **(1 + w)**. (GGUF files
/// converted by llama.cpp store 1 + w for Gemma; subtract 1 before passing them here.)
public struct LayerWeights: Sendable {
    public var q: any LinearWeight          // [nh·hd, H]
    public var k: any LinearWeight          // [nkv·hd, H]
    public var v: any LinearWeight          // [nkv·hd, H]
    public var o: any LinearWeight          // [H, nh·hd]
    public var gate: any LinearWeight       // [I, H]
    public var up: any LinearWeight         // [I, H]
    public var down: any LinearWeight       // [H, I]
    public var inputNorm: [Float]           // [H]
    public var qNorm: [Float]               // [hd]
    public var kNorm: [Float]               // [hd]
    public var postAttentionNorm: [Float]   // [H]
    public var preFeedforwardNorm: [Float]  // [H]
    public var postFeedforwardNorm: [Float] // [H]

    public init(q: any LinearWeight, k: any LinearWeight, v: any LinearWeight, o: any LinearWeight,
                gate: any LinearWeight, up: any LinearWeight, down: any LinearWeight,
                inputNorm: [Float], qNorm: [Float], kNorm: [Float], postAttentionNorm: [Float],
                preFeedforwardNorm: [Float], postFeedforwardNorm: [Float]) {
        self.q = q; self.k = k; self.v = v; self.o = o
        self.gate = gate; self.up = up; self.down = down
        self.inputNorm = inputNorm; self.qNorm = qNorm; self.kNorm = kNorm
        self.postAttentionNorm = postAttentionNorm
        self.preFeedforwardNorm = preFeedforwardNorm
        self.postFeedforwardNorm = postFeedforwardNorm
    }
}

/// Everything the inference engine reads: the config, the embedding (also the LM head when tied),
/// per-layer weights and the final norm. Built from a training `ParameterStore` (float32 or
/// bfloat16), or from any other `LinearWeight` source (e.g. quantized GGUF tensors) through the
/// memberwise initializer.
public final class InferenceWeights: @unchecked Sendable {
    public let config: Gemma3Config
    /// [V, H]; rows are looked up (`dequantize`) for the input embedding.
    public let embedding: any LinearWeight
    /// [V, H]; the same object as `embedding` when the embedding is tied.
    public let lmHead: any LinearWeight
    public let layers: [LayerWeights]
    public let finalNorm: [Float]
    /// A description of the storage ("f32", "bf16", "Q4_K_M", …) for reports.
    public let formatName: String

    /// Checks every shape against `config` and throws a one-line error on a mismatch.
    public init(config: Gemma3Config, embedding: any LinearWeight, lmHead: (any LinearWeight)?,
                layers: [LayerWeights], finalNorm: [Float], formatName: String) throws {
        let H = config.hiddenSize, I = config.intermediateSize, hd = config.headDim
        let qDim = config.numAttentionHeads * hd, kvDim = config.numKeyValueHeads * hd
        func check(_ w: any LinearWeight, _ out: Int, _ inp: Int, _ name: String) throws {
            guard w.outFeatures == out, w.inFeatures == inp else {
                throw GenerationError("weights: \(name) is [\(w.outFeatures), \(w.inFeatures)], the config needs [\(out), \(inp)]")
            }
        }
        func check(_ v: [Float], _ n: Int, _ name: String) throws {
            guard v.count == n else { throw GenerationError("weights: \(name) has \(v.count) values, the config needs \(n)") }
        }
        try check(embedding, config.vocabSize, H, "embedding")
        if let lmHead { try check(lmHead, config.vocabSize, H, "lm_head") }
        guard layers.count == config.numHiddenLayers else {
            throw GenerationError("weights: \(layers.count) layers, the config needs \(config.numHiddenLayers)")
        }
        for (l, w) in layers.enumerated() {
            let p = "layer \(l) "
            try check(w.q, qDim, H, p + "q_proj"); try check(w.k, kvDim, H, p + "k_proj"); try check(w.v, kvDim, H, p + "v_proj")
            try check(w.o, H, qDim, p + "o_proj")
            try check(w.gate, I, H, p + "gate_proj"); try check(w.up, I, H, p + "up_proj"); try check(w.down, H, I, p + "down_proj")
            try check(w.inputNorm, H, p + "input_layernorm"); try check(w.qNorm, hd, p + "q_norm"); try check(w.kNorm, hd, p + "k_norm")
            try check(w.postAttentionNorm, H, p + "post_attention_layernorm")
            try check(w.preFeedforwardNorm, H, p + "pre_feedforward_layernorm")
            try check(w.postFeedforwardNorm, H, p + "post_feedforward_layernorm")
        }
        try check(finalNorm, H, "model.norm")
        self.config = config
        self.embedding = embedding
        self.lmHead = lmHead ?? embedding
        self.layers = layers
        self.finalNorm = finalNorm
        self.formatName = formatName
    }

    /// Wraps a model's parameters. `.f32` reads the store in place (and keeps it alive);
    /// `.bf16` rounds every matrix (embedding included) to bfloat16 copies, norms stay float32.
    public convenience init(config: Gemma3Config, parameters store: ParameterStore, dtype: WeightDType = .f32) throws {
        let layout = store.layout
        guard layout == ParameterLayout(config: config) else {
            throw GenerationError("weights: the parameter store does not match the config")
        }
        func matrix(_ offset: Int, _ rows: Int, _ cols: Int) -> any LinearWeight {
            switch dtype {
            case .f32: return F32Linear(borrowing: store.pointer + offset, outFeatures: rows, inFeatures: cols, owner: store)
            case .bf16: return BF16Linear(converting: store.pointer + offset, outFeatures: rows, inFeatures: cols)
            }
        }
        func vector(_ offset: Int, _ n: Int) -> [Float] { Array(UnsafeBufferPointer(start: store.pointer + offset, count: n)) }
        let H = config.hiddenSize, I = config.intermediateSize, hd = config.headDim
        let qDim = config.numAttentionHeads * hd, kvDim = config.numKeyValueHeads * hd
        let layers = layout.layers.map { o in
            LayerWeights(
                q: matrix(o.qProj, qDim, H), k: matrix(o.kProj, kvDim, H), v: matrix(o.vProj, kvDim, H),
                o: matrix(o.oProj, H, qDim),
                gate: matrix(o.gateProj, I, H), up: matrix(o.upProj, I, H), down: matrix(o.downProj, H, I),
                inputNorm: vector(o.inputNorm, H), qNorm: vector(o.qNorm, hd), kNorm: vector(o.kNorm, hd),
                postAttentionNorm: vector(o.postAttentionNorm, H),
                preFeedforwardNorm: vector(o.preFeedforwardNorm, H),
                postFeedforwardNorm: vector(o.postFeedforwardNorm, H))
        }
        let embedding = matrix(layout.embedding, config.vocabSize, H)
        let head = layout.lmHead.map { matrix($0, config.vocabSize, H) }
        try self.init(config: config, embedding: embedding, lmHead: head, layers: layers,
                      finalNorm: vector(layout.finalNorm, H), formatName: dtype.rawValue)
    }

    /// Bytes of weights one decode step reads: every layer matrix, the LM head, one embedding row.
    public var decodeBytesPerToken: Int {
        var total = lmHead.storageBytes + embedding.storageBytes / max(1, config.vocabSize)
        for w in layers {
            for m in [w.q, w.k, w.v, w.o, w.gate, w.up, w.down] { total += m.storageBytes }
        }
        return total
    }

    /// Bytes of all weight storage (the tied embedding counted once).
    public var totalBytes: Int {
        var total = embedding.storageBytes + (lmHead === embedding ? 0 : lmHead.storageBytes)
        for w in layers {
            for m in [w.q, w.k, w.v, w.o, w.gate, w.up, w.down] { total += m.storageBytes }
            total += 4 * (w.inputNorm.count + w.qNorm.count + w.kNorm.count + w.postAttentionNorm.count
                + w.preFeedforwardNorm.count + w.postFeedforwardNorm.count)
        }
        return total + 4 * finalNorm.count
    }
}
