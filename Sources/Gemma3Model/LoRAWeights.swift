import Foundation
import Gemma3Formats
import Gemma3Infrastructure
import Gemma3Kernels

/// The shape of a LoRA adapter: rank, scaling, dropout and which projections it adapts.
/// The keys are those of PEFT's `LoraConfig` (`r`, `lora_alpha`, `lora_dropout`, `use_rslora`).
public struct LoRASettings: Codable, Sendable, Equatable {
    public var rank: Int
    public var alpha: Double
    /// Dropout on each adapted projection's input to the adapter (PEFT's `lora_dropout`); training only.
    public var dropout: Double
    /// Short names of the adapted projections, in the canonical order of `LoRASettings.allTargets`.
    public var targets: [String]
    /// Scale alpha/√r instead of alpha/r (rank-stabilised LoRA).
    public var usesRSLoRA: Bool

    /// The seven projections of a Gemma 3 decoder layer, in storage order.
    public static let allTargets = ["q", "k", "v", "o", "gate", "up", "down"]

    enum CodingKeys: String, CodingKey {
        case rank = "r", alpha = "lora_alpha", dropout = "lora_dropout", targets, usesRSLoRA = "use_rslora"
    }

    /// Checks the values and puts `targets` in canonical order (duplicates removed).
    public init(rank: Int = 16, alpha: Double = 32, dropout: Double = 0, targets: [String] = LoRASettings.allTargets,
                usesRSLoRA: Bool = false) throws {
        guard (1...4096).contains(rank) else { throw Gemma3ModelError("LoRA rank must be in 1…4096, got \(rank)") }
        guard alpha.isFinite, alpha > 0 else { throw Gemma3ModelError("LoRA alpha must be a positive number, got \(alpha)") }
        guard dropout.isFinite, dropout >= 0, dropout < 1 else { throw Gemma3ModelError("LoRA dropout must be in [0, 1), got \(dropout)") }
        let unknown = targets.filter { !Self.allTargets.contains($0) }
        guard unknown.isEmpty else {
            throw Gemma3ModelError("unknown LoRA target \(unknown.map { "\"\($0)\"" }.joined(separator: ", ")) (known: \(Self.allTargets.joined(separator: ",")))")
        }
        guard !targets.isEmpty else { throw Gemma3ModelError("LoRA needs at least one target projection") }
        self.rank = rank; self.alpha = alpha; self.dropout = dropout; self.usesRSLoRA = usesRSLoRA
        self.targets = Self.allTargets.filter(targets.contains)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(rank: c.decode(Int.self, forKey: .rank), alpha: c.decode(Double.self, forKey: .alpha),
                      dropout: c.decode(Double.self, forKey: .dropout), targets: c.decode([String].self, forKey: .targets),
                      usesRSLoRA: c.decode(Bool.self, forKey: .usesRSLoRA))
    }

    /// s of W + s·B·A.
    public var scale: Float { Float(usesRSLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank)) }
}

/// Trainable LoRA factors for every adapted projection of a model, in one contiguous float block
/// (llm.c style: the optimizer and the checkpoint see one buffer): per layer, per target in canonical
/// order, A [r × in] then B [out × r], row-major as PEFT stores `lora_A.weight` / `lora_B.weight`.
public final class LoRAWeights: @unchecked Sendable {
    /// One adapted projection.
    public struct Entry: Sendable, Equatable {
        public let layer: Int
        /// Short name (`q`, …, `down`).
        public let target: String
        public let inFeatures: Int
        public let outFeatures: Int
        /// Offsets (floats) of A and B in `parameters`.
        public let aOffset: Int
        public let bOffset: Int
        /// The base weight, e.g. `model.layers.3.self_attn.q_proj.weight`.
        public var weightName: String { "model.layers.\(layer).\(LoRAAdapter.projectionModules[target]!).weight" }
        /// PEFT's module name, e.g. `base_model.model.model.layers.3.self_attn.q_proj`.
        public var peftModule: String { "base_model.model.model.layers.\(layer).\(LoRAAdapter.projectionModules[target]!)" }
    }

    public let settings: LoRASettings
    public let scale: Float
    /// Every entry, layer by layer.
    public let entries: [Entry]
    /// entries index per layer and target slot (nil where the target is not adapted).
    private let index: [[Int?]]
    /// The factors (a flat layout).
    public let parameters: ParameterStore

    public init(config: Gemma3Config, settings: LoRASettings) {
        self.settings = settings
        scale = settings.scale
        let H = config.hiddenSize, I = config.intermediateSize
        let q = config.numAttentionHeads * config.headDim, kv = config.numKeyValueHeads * config.headDim
        let shapes: [String: (inFeatures: Int, outFeatures: Int)] = [
            "q": (H, q), "k": (H, kv), "v": (H, kv), "o": (q, H), "gate": (H, I), "up": (H, I), "down": (I, H),
        ]
        var entries: [Entry] = [], index: [[Int?]] = []
        var cursor = 0
        let r = settings.rank
        for l in 0..<config.numHiddenLayers {
            var row = [Int?](repeating: nil, count: LoRASettings.allTargets.count)
            for (slot, t) in LoRASettings.allTargets.enumerated() where settings.targets.contains(t) {
                let (i, o) = shapes[t]!
                row[slot] = entries.count
                entries.append(Entry(layer: l, target: t, inFeatures: i, outFeatures: o, aOffset: cursor, bOffset: cursor + r * i))
                cursor += r * i + o * r
            }
            index.append(row)
        }
        self.entries = entries
        self.index = index
        parameters = ParameterStore(layout: .flat(count: cursor))
    }

    /// Floats in the block.
    public var count: Int { parameters.count }

    /// The entry adapting `target` of layer `layer`, or nil.
    public func entry(layer: Int, target: String) -> Entry? {
        entryIndex(layer: layer, target: target).map { entries[$0] }
    }

    var indexCount: Int { index.count }
    func slotIndex(layer: Int, slot: Int) -> Int? { index[layer][slot] }

    /// PEFT's initialisation: A ~ U(−1/√in, 1/√in) (`kaiming_uniform_(a=√5)`), B = 0, so the adapted
    /// model starts as the base model.
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let p = parameters.pointer
        for e in entries {
            let bound = 1 / Double(e.inFeatures).squareRoot()
            for i in 0..<(settings.rank * e.inFeatures) { p[e.aOffset + i] = Float((2 * rng.nextUniform() - 1) * bound) }
            (p + e.bOffset).update(repeating: 0, count: e.outFeatures * settings.rank)
        }
        parameters.markModified()
    }

    /// Fills the factors from an adapter with the same rank and targets (a PEFT directory).
    public func load(_ adapter: LoRAAdapter) throws {
        let byName = Dictionary(adapter.pairs.map { ($0.weightName, $0) }, uniquingKeysWith: { a, _ in a })
        guard adapter.pairs.count == entries.count else {
            throw Gemma3ModelError("\(adapter.path): adapts \(adapter.pairs.count) projections, the run's settings \(entries.count)")
        }
        for e in entries {
            guard let pair = byName[e.weightName], pair.rank == settings.rank,
                  pair.a.count == settings.rank * e.inFeatures, pair.b.count == e.outFeatures * settings.rank else {
                throw Gemma3ModelError("\(adapter.path): no rank-\(settings.rank) factors for \(e.weightName)")
            }
            (parameters.pointer + e.aOffset).update(from: pair.a, count: pair.a.count)
            (parameters.pointer + e.bOffset).update(from: pair.b, count: pair.b.count)
        }
        parameters.markModified()
    }

    /// The factors as an adapter value (for `LoRAAdapter.merge(into:)`).
    public func adapter(path: String = "") -> LoRAAdapter {
        let p = parameters.pointer, r = settings.rank
        let pairs = entries.map { e in
            LoRAAdapter.Pair(weightName: e.weightName, rank: r, a: Array(UnsafeBufferPointer(start: p + e.aOffset, count: r * e.inFeatures)),
                             b: Array(UnsafeBufferPointer(start: p + e.bOffset, count: e.outFeatures * r)), scale: scale)
        }
        return LoRAAdapter(path: path, rank: r, alpha: settings.alpha, usesRSLoRA: settings.usesRSLoRA, pairs: pairs)
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT's names, float32) into
    /// `directory`, each file atomically: a directory `PeftModel.from_pretrained` loads.
    /// - Parameter baseModel: recorded as `base_model_name_or_path`.
    public func writePEFT(to directory: URL, baseModel: String) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var w = SafeTensorsWriter()
        w.metadata = ["format": "pt"]
        let p = parameters.pointer, r = settings.rank
        for e in entries {
            try w.add(e.peftModule + ".lora_A.weight", shape: [r, e.inFeatures], floats: UnsafeBufferPointer(start: p + e.aOffset, count: r * e.inFeatures))
            try w.add(e.peftModule + ".lora_B.weight", shape: [e.outFeatures, r], floats: UnsafeBufferPointer(start: p + e.bOffset, count: e.outFeatures * r))
        }
        try w.write(to: directory.appendingPathComponent("adapter_model.safetensors"))
        let modules = settings.targets.map { LoRAAdapter.projectionModules[$0]!.split(separator: ".").last! }
        let config = """
        {
          "alpha_pattern": {},
          "base_model_name_or_path": \(jsonStringLiteral(baseModel)),
          "bias": "none",
          "fan_in_fan_out": false,
          "inference_mode": true,
          "init_lora_weights": true,
          "lora_alpha": \(settings.alpha),
          "lora_dropout": \(settings.dropout),
          "modules_to_save": null,
          "peft_type": "LORA",
          "r": \(r),
          "rank_pattern": {},
          "target_modules": [\(modules.map { "\"\($0)\"" }.joined(separator: ", "))],
          "task_type": "CAUSAL_LM",
          "use_dora": false,
          "use_rslora": \(settings.usesRSLoRA)
        }

        """
        try AtomicFileWriter.write(Data(config.utf8), to: directory.appendingPathComponent("adapter_config.json"))
    }
}

extension LoRAWeights {
    /// Position in `entries` of the adapter of `target` in layer `layer`, or nil.
    public func entryIndex(layer: Int, target: String) -> Int? {
        guard layer >= 0, layer < indexCount, let slot = LoRASettings.allTargets.firstIndex(of: target) else { return nil }
        return slotIndex(layer: layer, slot: slot)
    }
}
