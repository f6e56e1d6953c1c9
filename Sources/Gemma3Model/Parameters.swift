import Gemma3Kernels

/// One named tensor inside a `ParameterStore` buffer.
public struct ParameterTensor: Sendable, Equatable {
    /// Hugging Face name, e.g. `model.layers.3.self_attn.q_proj.weight`.
    public let name: String
    /// Row-major shape; matrices use the `nn.Linear` layout [out, in].
    public let shape: [Int]
    /// Offset of the first element, in floats, from the start of the buffer.
    public let offset: Int
    /// Number of elements (product of `shape`).
    public let count: Int
    /// True for tensors with ≥ 2 dimensions (matrices and the embedding): the ones weight decay applies to.
    public var isMatrix: Bool { shape.count >= 2 }
}

/// Offsets (in floats) of one decoder layer's tensors. The hot code uses these, not names.
///
/// q/k/v are stored back to back, so `qProj` is also the start of a [(nh+2·nkv)·hd, H] fused QKV matrix;
/// likewise `gateProj` starts a [2·I, H] fused gate/up matrix.
public struct LayerOffsets: Sendable, Equatable {
    public var inputNorm = 0, qProj = 0, kProj = 0, vProj = 0, qNorm = 0, kNorm = 0, oProj = 0
    public var postAttentionNorm = 0, preFeedforwardNorm = 0, gateProj = 0, upProj = 0, downProj = 0
    public var postFeedforwardNorm = 0
}

/// The layout of every parameter of a model in one contiguous float buffer, in Hugging Face names and order.
/// Parameters, gradients and AdamW moments all share one layout (same offsets).
public struct ParameterLayout: Sendable, Equatable {
    /// All tensors in storage order.
    public let tensors: [ParameterTensor]
    /// Offset of `model.embed_tokens.weight` [V, H].
    public let embedding: Int
    public let layers: [LayerOffsets]
    /// Offset of `model.norm.weight` [H].
    public let finalNorm: Int
    /// Offset of `lm_head.weight` [V, H] when untied; nil when the embedding doubles as the LM head.
    public let lmHead: Int?
    /// Total number of floats.
    public let count: Int

    public init(config: Gemma3Config) {
        let H = config.hiddenSize, I = config.intermediateSize, hd = config.headDim
        let q = config.numAttentionHeads * hd, kv = config.numKeyValueHeads * hd
        var tensors: [ParameterTensor] = []
        var cursor = 0
        func add(_ name: String, _ shape: [Int]) -> Int {
            let n = shape.reduce(1, *)
            tensors.append(ParameterTensor(name: name, shape: shape, offset: cursor, count: n))
            defer { cursor += n }
            return cursor
        }
        embedding = add("model.embed_tokens.weight", [config.vocabSize, H])
        var layers: [LayerOffsets] = []
        for l in 0..<config.numHiddenLayers {
            let p = "model.layers.\(l)."
            var o = LayerOffsets()
            o.inputNorm = add(p + "input_layernorm.weight", [H])
            o.qProj = add(p + "self_attn.q_proj.weight", [q, H])
            o.kProj = add(p + "self_attn.k_proj.weight", [kv, H])
            o.vProj = add(p + "self_attn.v_proj.weight", [kv, H])
            o.qNorm = add(p + "self_attn.q_norm.weight", [hd])
            o.kNorm = add(p + "self_attn.k_norm.weight", [hd])
            o.oProj = add(p + "self_attn.o_proj.weight", [H, q])
            o.postAttentionNorm = add(p + "post_attention_layernorm.weight", [H])
            o.preFeedforwardNorm = add(p + "pre_feedforward_layernorm.weight", [H])
            o.gateProj = add(p + "mlp.gate_proj.weight", [I, H])
            o.upProj = add(p + "mlp.up_proj.weight", [I, H])
            o.downProj = add(p + "mlp.down_proj.weight", [H, I])
            o.postFeedforwardNorm = add(p + "post_feedforward_layernorm.weight", [H])
            layers.append(o)
        }
        self.layers = layers
        finalNorm = add("model.norm.weight", [H])
        lmHead = config.tieWordEmbeddings ? nil : add("lm_head.weight", [config.vocabSize, H])
        self.tensors = tensors
        count = cursor
    }

    /// The tensor called `name`, or nil.
    public func tensor(named name: String) -> ParameterTensor? {
        tensors.first { $0.name == name }
    }

    /// Offset of the LM head matrix: `lm_head.weight` when untied, else the embedding.
    public var outputProjection: Int { lmHead ?? embedding }
}

/// One contiguous, 64-byte aligned float buffer holding every parameter of a model (or their gradients,
/// or an optimizer moment), with named views.
///
/// A class because the buffer is shared by pointer with the compute code; it is not thread-safe to
/// mutate from several threads except through disjoint ranges.
public final class ParameterStore: @unchecked Sendable {
    public let layout: ParameterLayout
    /// Base address of `count` floats, zero-initialised.
    public let pointer: UnsafeMutablePointer<Float>

    /// Allocates a zero-filled store.
    public init(layout: ParameterLayout) {
        self.layout = layout
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, layout.count) * 4, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(1, layout.count))
        pointer.initialize(repeating: 0, count: max(1, layout.count))
    }

    /// Allocates a zero-filled store for `config`.
    public convenience init(config: Gemma3Config) { self.init(layout: ParameterLayout(config: config)) }

    deinit { pointer.deallocate() }

    /// Number of floats.
    public var count: Int { layout.count }

    /// The whole buffer.
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: layout.count) }

    /// View of one tensor.
    public func view(_ tensor: ParameterTensor) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer + tensor.offset, count: tensor.count)
    }

    /// View of the tensor called `name`, or nil.
    public subscript(name: String) -> UnsafeMutableBufferPointer<Float>? {
        layout.tensor(named: name).map(view)
    }

    /// Sets every element to zero.
    public func zero() {
        let p = UncheckedSendable(pointer)
        Parallel.chunks(layout.count, minimumPerChunk: 1 << 16) { r in
            (p.value + r.lowerBound).update(repeating: 0, count: r.count)
        }
    }

    /// Copies all values from a store with the same layout.
    public func copy(from other: ParameterStore) {
        precondition(other.layout == layout, "ParameterStore.copy(from:) needs identical layouts")
        pointer.update(from: other.pointer, count: layout.count)
    }

    /// Hugging Face's initialisation for training from scratch: matrices and the embedding ~ N(0, initializer_range²),
    /// RMSNorm weights 0 (Gemma scales by 1 + w). Deterministic for a given seed.
    public func initializeForTraining(config: Gemma3Config, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for t in layout.tensors {
            if t.isMatrix {
                rng.fillNormal(view(t), std: config.initializerRange)
            } else {
                view(t).update(repeating: 0)
            }
        }
    }

    /// Sum of squares of every element (in double), e.g. for a global gradient norm.
    public func sumOfSquares() -> Double {
        let p = UncheckedSendable(pointer)
        let n = layout.count
        let workers = max(1, min(Parallel.threadCount, n / (1 << 16)))
        var partial = [Double](repeating: 0, count: workers)
        partial.withUnsafeMutableBufferPointer { out in
            let o = UncheckedSendable(out)
            Parallel.forEach(workers) { w in
                let lo = n * w / workers, hi = n * (w + 1) / workers
                var acc: Double = 0
                var i = lo
                while i < hi {
                    let end = min(hi, i + 4096)
                    var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0
                    var j = i
                    while j + 4 <= end {
                        let x0 = p.value[j], x1 = p.value[j + 1], x2 = p.value[j + 2], x3 = p.value[j + 3]
                        a0 += x0 * x0; a1 += x1 * x1; a2 += x2 * x2; a3 += x3 * x3
                        j += 4
                    }
                    while j < end { a0 += p.value[j] * p.value[j]; j += 1 }
                    acc += Double(a0) + Double(a1) + Double(a2) + Double(a3)
                    i = end
                }
                o.value[w] = acc
            }
        }
        return partial.reduce(0, +)
    }
}
