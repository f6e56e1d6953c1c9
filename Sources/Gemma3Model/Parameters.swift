import Gemma3Kernels

/// One named tensor inside a `ParameterStore` buffer.
public struct ParameterTensor: Sendable, Equatable {
    /// Which tensor of the model this is (names, role: `ModelTensor`).
    public let tensor: ModelTensor
    /// Hugging Face name, e.g. `model.layers.3.self_attn.q_proj.weight`.
    public let name: String
    /// Row-major shape; matrices use the `nn.Linear` layout [out, in].
    public let shape: [Int]
    /// Offset of the first element, in floats, from the start of the buffer.
    public let offset: Int
    /// Number of elements (product of `shape`).
    public let count: Int
    /// True for the matrices and the embedding; false for RMSNorm weights.
    public var isMatrix: Bool { tensor.role == .matrix }
    /// Whether decoupled weight decay applies (`TensorRole.appliesWeightDecay`).
    public var appliesWeightDecay: Bool { tensor.role.appliesWeightDecay }
}

/// Offsets (in floats) of one decoder layer's tensors. The hot code uses these, not names.
///
/// q/k/v are stored back to back, so `qProj` is also the start of a [(nh+2·nkv)·hd, H] fused QKV matrix;
/// likewise `gateProj` starts a [2·I, H] fused gate/up matrix.
public struct LayerOffsets: Sendable, Equatable {
    public var inputNorm = 0, qProj = 0, kProj = 0, vProj = 0, qNorm = 0, kNorm = 0, oProj = 0
    public var postAttentionNorm = 0, preFeedforwardNorm = 0, gateProj = 0, upProj = 0, downProj = 0
    public var postFeedforwardNorm = 0

    /// The offsets of the tensors at `offsets[DecoderLayerTensor.rawValue]`.
    init(_ offsets: [Int]) {
        func at(_ t: DecoderLayerTensor) -> Int { offsets[t.rawValue] }
        inputNorm = at(.inputNorm); qProj = at(.qProj); kProj = at(.kProj); vProj = at(.vProj)
        qNorm = at(.qNorm); kNorm = at(.kNorm); oProj = at(.oProj)
        postAttentionNorm = at(.postAttentionNorm); preFeedforwardNorm = at(.preFeedforwardNorm)
        gateProj = at(.gateProj); upProj = at(.upProj); downProj = at(.downProj)
        postFeedforwardNorm = at(.postFeedforwardNorm)
    }
}

/// The layout of every parameter of a model in one contiguous float buffer, in Hugging Face names and
/// order (`ModelTensor.all(config:)`). Parameters, gradients and AdamW moments all share one layout (same offsets).
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
        var tensors: [ParameterTensor] = []
        var cursor = 0
        for t in ModelTensor.all(config: config) {
            let shape = t.shape(in: config)
            let n = shape.reduce(1, *)
            tensors.append(ParameterTensor(tensor: t, name: t.huggingFaceName, shape: shape, offset: cursor, count: n))
            cursor += n
        }
        let L = config.numHiddenLayers, untied = !config.tieWordEmbeddings
        func offset(_ t: ModelTensor) -> Int? { Self.index(of: t, layers: L, untied: untied).map { tensors[$0].offset } }
        embedding = offset(.embedding)!
        layers = (0..<L).map { l in LayerOffsets(DecoderLayerTensor.allCases.map { offset(.layer(l, $0))! }) }
        finalNorm = offset(.finalNorm)!
        lmHead = offset(.lmHead)
        self.tensors = tensors
        count = cursor
    }

    private init(flatCount: Int) {
        tensors = []; embedding = 0; layers = []; finalNorm = 0; lmHead = nil; count = flatCount
    }

    /// A layout of `count` unnamed floats: the storage of weights that are not the model's own (a LoRA
    /// adapter's factors, their gradients and AdamW moments), which keep their own names.
    public static func flat(count: Int) -> ParameterLayout { ParameterLayout(flatCount: count) }

    /// Position of `t` in `tensors` (the order of `ModelTensor.all(config:)`), or nil when absent.
    private static func index(of t: ModelTensor, layers: Int, untied: Bool) -> Int? {
        let perLayer = DecoderLayerTensor.allCases.count
        switch t {
        case .embedding: return 0
        case .layer(let l, let part): return l >= 0 && l < layers ? 1 + l * perLayer + part.rawValue : nil
        case .finalNorm: return 1 + layers * perLayer
        case .lmHead: return untied ? 2 + layers * perLayer : nil
        }
    }

    /// The entry of tensor `t`, or nil when the layout has none (`.lmHead` of a tied model, a layer past the last).
    public func tensor(_ t: ModelTensor) -> ParameterTensor? {
        Self.index(of: t, layers: layers.count, untied: lmHead != nil).map { tensors[$0] }
    }

    /// The tensor called `name`, or nil.
    public func tensor(named name: String) -> ParameterTensor? {
        tensors.first { $0.name == name }
    }

    /// Offset of the LM head matrix: `lm_head.weight` when untied, else the embedding.
    public var outputProjection: Int { lmHead ?? embedding }

    /// The floats of decoder layer `l` (all its tensors, contiguous in storage order).
    public func layerRange(_ l: Int) -> Range<Int> {
        let perLayer = DecoderLayerTensor.allCases.count
        return tensors[1 + l * perLayer].offset ..< tensors[1 + (l + 1) * perLayer].offset
    }

    /// The ranges in the order the backward finishes them (`Gemma3TrainingModel.backward(gradientsFinal:)`):
    /// final norm and untied head, layers L−1 … 1, then the embedding with layer 0. Together they cover
    /// every float once.
    public var gradientBuckets: [Range<Int>] {
        [finalNorm ..< count] + stride(from: layers.count - 1, through: 1, by: -1).map(layerRange) + [0 ..< layerRange(0).upperBound]
    }
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

    deinit {
        pointer.deallocate()
        roundedCopy?.pointer.deallocate()
        bfloat16Bits?.pointer.deallocate()
    }

    /// Changes with every `markModified()`: copies derived from the values are redone when it has changed.
    public private(set) var generation: UInt64 = 0

    /// Call after changing the values in place (the optimizer step does; `zero`, `copy(from:)` and
    /// `initializeForTraining` do it themselves), so that `bfloat16Rounded()` is redone.
    public func markModified() { generation &+= 1 }

    private var roundedCopy: (pointer: UnsafeMutablePointer<Float>, generation: UInt64)?
    private var bfloat16Bits: (pointer: UnsafeMutablePointer<UInt16>, generation: UInt64)?

    /// Every value rounded to the nearest bfloat16 (ties to even), kept as float32, in the same layout:
    /// the weights the products read under bfloat16 mixed precision. Made on the first call after a
    /// change (`generation`), so once per optimizer step however many models and micro-batches read it.
    public func bfloat16Rounded() -> UnsafePointer<Float> {
        derivedCopy(&roundedCopy) { NumberFormats.roundToBFloat16(from: $0, into: $1, count: $2) }
    }

    /// The values of `bfloat16Rounded()` as bfloat16 bits, in the same layout: the weights of native
    /// bfloat16 products (`BFloat16Products`). Made once per change, as `bfloat16Rounded()`.
    public func bfloat16Copy() -> UnsafePointer<UInt16> {
        derivedCopy(&bfloat16Bits) { NumberFormats.convertToBFloat16(from: $0, into: $1, count: $2) }
    }

    /// `slot`'s copy, redone by `convert` (source, destination, count) over all cores when the values
    /// changed since it was made; the buffer is allocated once and reused.
    private func derivedCopy<T>(_ slot: inout (pointer: UnsafeMutablePointer<T>, generation: UInt64)?,
                                _ convert: (UnsafePointer<Float>, UnsafeMutablePointer<T>, Int) -> Void) -> UnsafePointer<T> {
        if let copy = slot, copy.generation == generation { return UnsafePointer(copy.pointer) }
        let n = max(1, count)
        let copy = slot?.pointer ?? UnsafeMutableRawPointer.allocate(byteCount: n * MemoryLayout<T>.stride, alignment: 64)
            .bindMemory(to: T.self, capacity: n)
        let src = UncheckedSendable(UnsafePointer(pointer)), dst = UncheckedSendable(copy)
        Parallel.chunks(n, minimumPerChunk: 1 << 16) { r in
            convert(src.value + r.lowerBound, dst.value + r.lowerBound, r.count)
        }
        slot = (copy, generation)
        return UnsafePointer(copy)
    }

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
        markModified()
    }

    /// Copies all values from a store with the same layout.
    public func copy(from other: ParameterStore) {
        precondition(other.layout == layout, "ParameterStore.copy(from:) needs identical layouts")
        pointer.update(from: other.pointer, count: layout.count)
        markModified()
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
        markModified()
    }
}
