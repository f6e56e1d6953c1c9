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

    /// Builds a layer tensor by tensor: `matrix` gives the seven projections, `vector` the six norm weights.
    public init(matrix: (DecoderLayerTensor) throws -> any LinearWeight,
                vector: (DecoderLayerTensor) throws -> [Float]) rethrows {
        self.init(q: try matrix(.qProj), k: try matrix(.kProj), v: try matrix(.vProj), o: try matrix(.oProj),
                  gate: try matrix(.gateProj), up: try matrix(.upProj), down: try matrix(.downProj),
                  inputNorm: try vector(.inputNorm), qNorm: try vector(.qNorm), kNorm: try vector(.kNorm),
                  postAttentionNorm: try vector(.postAttentionNorm), preFeedforwardNorm: try vector(.preFeedforwardNorm),
                  postFeedforwardNorm: try vector(.postFeedforwardNorm))
    }

    /// A layer weight: a matrix (projections) or a vector (norm weights).
    public enum Weight {
        case matrix(any LinearWeight)
        case vector([Float])
    }

    /// The weight stored for `tensor`.
    public func weight(_ tensor: DecoderLayerTensor) -> Weight {
        switch tensor {
        case .qProj: .matrix(q)
        case .kProj: .matrix(k)
        case .vProj: .matrix(v)
        case .oProj: .matrix(o)
        case .gateProj: .matrix(gate)
        case .upProj: .matrix(up)
        case .downProj: .matrix(down)
        case .inputNorm: .vector(inputNorm)
        case .qNorm: .vector(qNorm)
        case .kNorm: .vector(kNorm)
        case .postAttentionNorm: .vector(postAttentionNorm)
        case .preFeedforwardNorm: .vector(preFeedforwardNorm)
        case .postFeedforwardNorm: .vector(postFeedforwardNorm)
        }
    }

    /// The seven projection matrices.
    var matrices: [any LinearWeight] { [q, k, v, o, gate, up, down] }
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
        // Every shape comes from the tensor table; messages name the tensor as Hugging Face does.
        func check(_ t: ModelTensor, _ weight: LayerWeights.Weight) throws {
            let shape = t.shape(in: config)
            switch weight {
            case .matrix(let w):
                guard [w.outFeatures, w.inFeatures] == shape else {
                    throw GenerationError("weights: \(t.huggingFaceName) is [\(w.outFeatures), \(w.inFeatures)], the config needs \(shape)")
                }
            case .vector(let v):
                guard [v.count] == shape else {
                    throw GenerationError("weights: \(t.huggingFaceName) has \(v.count) values, the config needs \(shape[0])")
                }
            }
        }
        try check(.embedding, .matrix(embedding))
        if let lmHead { try check(.lmHead, .matrix(lmHead)) }
        guard layers.count == config.numHiddenLayers else {
            throw GenerationError("weights: \(layers.count) layers, the config needs \(config.numHiddenLayers)")
        }
        for (l, w) in layers.enumerated() {
            for t in DecoderLayerTensor.allCases { try check(.layer(l, t), w.weight(t)) }
        }
        try check(.finalNorm, .vector(finalNorm))
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
        func matrix(_ t: ModelTensor) -> any LinearWeight {
            let p = layout.tensor(t)!, rows = p.shape[0], cols = p.shape[1]
            switch dtype {
            case .f32: return F32Linear(borrowing: store.pointer + p.offset, outFeatures: rows, inFeatures: cols, owner: store)
            case .bf16: return BF16Linear(converting: store.pointer + p.offset, outFeatures: rows, inFeatures: cols)
            }
        }
        func vector(_ t: ModelTensor) -> [Float] {
            let p = layout.tensor(t)!
            return Array(UnsafeBufferPointer(start: store.pointer + p.offset, count: p.count))
        }
        let layers = (0..<config.numHiddenLayers).map { l in
            LayerWeights(matrix: { matrix(.layer(l, $0)) }, vector: { vector(.layer(l, $0)) })
        }
        let head = layout.lmHead == nil ? nil : matrix(.lmHead)
        try self.init(config: config, embedding: matrix(.embedding), lmHead: head, layers: layers,
                      finalNorm: vector(.finalNorm), formatName: dtype.rawValue)
    }

    /// Bytes of weights one decode step reads: every layer matrix, the LM head, one embedding row.
    public var decodeBytesPerToken: Int {
        var total = lmHead.storageBytes + embedding.storageBytes / max(1, config.vocabSize)
        for w in layers {
            for m in w.matrices { total += m.storageBytes }
        }
        return total
    }

    /// Bytes of all weight storage (the tied embedding counted once).
    public var totalBytes: Int {
        var total = embedding.storageBytes + (lmHead === embedding ? 0 : lmHead.storageBytes)
        for w in layers {
            for m in w.matrices { total += m.storageBytes }
            total += 4 * (w.inputNorm.count + w.qNorm.count + w.kNorm.count + w.postAttentionNorm.count
                + w.preFeedforwardNorm.count + w.postFeedforwardNorm.count)
        }
        return total + 4 * finalNorm.count
    }
}
