import Foundation
import Gemma3Formats
import Gemma3Kernels

/// A LoRA adapter of a Gemma 3 model in Hugging Face PEFT's layout: a directory with
/// `adapter_config.json` (`peft_type: "LORA"`, `r`, `lora_alpha`, `target_modules`, `use_rslora`)
/// and `adapter_model.safetensors` holding, per adapted projection,
/// `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` [r × in] and `….lora_B.weight`
/// [out × r]. The adapted weight is W + s·B·A with s = lora_alpha / r (lora_alpha / √r with rsLoRA).
public struct LoRAAdapter: Sendable {
    /// One adapted projection.
    public struct Pair: Sendable {
        /// The base weight's Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`.
        public let weightName: String
        public let rank: Int
        /// [rank × in], row-major.
        public let a: [Float]
        /// [out × rank], row-major.
        public let b: [Float]
        /// s of W + s·B·A.
        public let scale: Float
    }

    /// Where it was read from.
    public let path: String
    public let rank: Int
    public let alpha: Double
    public let usesRSLoRA: Bool
    /// The projections it adapts, in the order of the file.
    public let pairs: [Pair]

    /// The PEFT module names of the seven Gemma 3 projections, by the short names of `--lora-targets`.
    public static let projectionModules: [String: String] = [
        "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
        "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
    ]

    private struct Config: Decodable {
        var peftType: String?
        var r: Int?
        var loraAlpha: Double?
        var useRSLoRA: Bool?
        var useDoRA: Bool?
        var fanInFanOut: Bool?
        var bias: String?
        var alphaPattern: [String: Double]?
        var modulesToSave: [String]?

        enum CodingKeys: String, CodingKey {
            case peftType = "peft_type", r, loraAlpha = "lora_alpha", useRSLoRA = "use_rslora", useDoRA = "use_dora"
            case fanInFanOut = "fan_in_fan_out", bias, alphaPattern = "alpha_pattern", modulesToSave = "modules_to_save"
        }
    }

    /// Reads a PEFT adapter directory and checks it against `config` (every pair must adapt one
    /// of the model's projections with matching shapes). Errors are one line.
    public static func loadPEFT(directory: URL, for config: Gemma3Config) throws -> LoRAAdapter {
        let path = directory.path
        let configURL = directory.appendingPathComponent("adapter_config.json")
        let weightsURL = directory.appendingPathComponent("adapter_model.safetensors")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            throw Gemma3ModelError("\(path): no adapter_config.json (a PEFT LoRA adapter directory is expected)")
        }
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            throw Gemma3ModelError("\(path): no adapter_model.safetensors")
        }
        let c: Config
        do {
            c = try JSONDecoder().decode(Config.self, from: try Data(contentsOf: configURL))
        } catch let DecodingError.typeMismatch(_, context) {
            throw Gemma3ModelError("\(configURL.path): wrong type for \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\"")
        } catch {
            throw Gemma3ModelError("\(configURL.path): not valid JSON")
        }
        guard (c.peftType ?? "LORA").uppercased() == "LORA" else {
            throw Gemma3ModelError("\(configURL.path): peft_type \(c.peftType ?? "") is not LORA")
        }
        guard let rank = c.r, rank > 0, rank <= 65_536 else { throw Gemma3ModelError("\(configURL.path): r must be a positive integer") }
        let alpha = c.loraAlpha ?? Double(rank)
        guard alpha.isFinite else { throw Gemma3ModelError("\(configURL.path): lora_alpha must be finite") }
        guard c.useDoRA != true else { throw Gemma3ModelError("\(configURL.path): DoRA adapters (use_dora) are not supported") }
        guard c.fanInFanOut != true else { throw Gemma3ModelError("\(configURL.path): fan_in_fan_out adapters are not supported (Gemma's projections are nn.Linear)") }
        guard (c.bias ?? "none") == "none" else { throw Gemma3ModelError("\(configURL.path): bias \"\(c.bias ?? "")\" is not supported (only \"none\")") }
        guard (c.alphaPattern ?? [:]).isEmpty else { throw Gemma3ModelError("\(configURL.path): alpha_pattern is not supported") }
        guard (c.modulesToSave ?? []).isEmpty else {
            throw Gemma3ModelError("\(configURL.path): modules_to_save (\((c.modulesToSave ?? []).joined(separator: ", "))) is not supported")
        }
        let usesRSLoRA = c.useRSLoRA ?? false

        let file = try SafeTensorsFile(url: weightsURL)
        let layout = ParameterLayout(config: config)
        var pairs: [Pair] = []
        var seen = Set<String>()
        for info in file.tensors where info.name.hasSuffix(".lora_A.weight") {
            let module = String(info.name.dropLast(".lora_A.weight".count))
            let weightName = try baseWeightName(ofModule: module, in: weightsURL.path)
            guard let target = layout.tensor(named: weightName), target.isMatrix, target.shape.count == 2 else {
                throw Gemma3ModelError("\(weightsURL.path): \(info.name) adapts \(weightName), which is not a projection of this model")
            }
            guard seen.insert(weightName).inserted else { throw Gemma3ModelError("\(weightsURL.path): \(weightName) is adapted twice") }
            let bName = module + ".lora_B.weight"
            guard let bInfo = file.info(bName) else { throw Gemma3ModelError("\(weightsURL.path): \(info.name) has no \(bName)") }
            let (outFeatures, inFeatures) = (target.shape[0], target.shape[1])
            guard info.shape.count == 2, info.shape[1] == inFeatures, (1...65_536).contains(info.shape[0]) else {
                throw Gemma3ModelError("\(weightsURL.path): \(info.name) has shape \(info.shape), expected [r, \(inFeatures)]")
            }
            let r = info.shape[0]
            guard bInfo.shape == [outFeatures, r] else {
                throw Gemma3ModelError("\(weightsURL.path): \(bName) has shape \(bInfo.shape), expected [\(outFeatures), \(r)]")
            }
            let scale = Float(usesRSLoRA ? alpha / Double(r).squareRoot() : alpha / Double(r))
            pairs.append(Pair(weightName: weightName, rank: r, a: try file.floats(info.name), b: try file.floats(bName), scale: scale))
        }
        for info in file.tensors where info.name.hasSuffix(".lora_B.weight") {
            let aName = String(info.name.dropLast(".lora_B.weight".count)) + ".lora_A.weight"
            guard file.info(aName) != nil else { throw Gemma3ModelError("\(weightsURL.path): \(info.name) has no \(aName)") }
        }
        if let other = file.tensors.first(where: { !$0.name.hasSuffix(".lora_A.weight") && !$0.name.hasSuffix(".lora_B.weight") }) {
            throw Gemma3ModelError("\(weightsURL.path): \(other.name) is not a LoRA tensor (only lora_A/lora_B weights are supported)")
        }
        guard !pairs.isEmpty else { throw Gemma3ModelError("\(weightsURL.path): no lora_A/lora_B tensors") }
        for p in pairs {
            guard p.a.allSatisfy(\.isFinite), p.b.allSatisfy(\.isFinite) else {
                throw Gemma3ModelError("\(weightsURL.path): the adapter of \(p.weightName) has NaN or infinite values")
            }
        }
        return LoRAAdapter(path: path, rank: rank, alpha: alpha, usesRSLoRA: usesRSLoRA, pairs: pairs)
    }

    /// `base_model.model.model.layers.3.self_attn.q_proj` → `model.layers.3.self_attn.q_proj.weight`
    /// (also the multimodal `model.language_model.layers…` and names without PEFT's prefix).
    static func baseWeightName(ofModule module: String, in path: String) throws -> String {
        var m = Substring(module)
        if m.hasPrefix("base_model.model.") { m = m.dropFirst("base_model.model.".count) }
        if m.hasPrefix("model.language_model.") { m = "model." + m.dropFirst("model.language_model.".count) }
        if m.hasPrefix("language_model.model.") { m = "model." + m.dropFirst("language_model.model.".count) }
        guard m.hasPrefix("model.layers.") else {
            throw Gemma3ModelError("\(path): \(module) is not a module of the decoder layers")
        }
        return m + ".weight"
    }

    /// Adds s·B·A to each adapted weight of `store` (what PEFT's `merge_and_unload` computes).
    public func merge(into store: ParameterStore) throws {
        for p in pairs {
            guard let t = store.layout.tensor(named: p.weightName) else {
                throw Gemma3ModelError("\(path): the model has no \(p.weightName)")
            }
            let (outFeatures, inFeatures) = (t.shape[0], t.shape[1])
            p.b.withUnsafeBufferPointer { b in
                p.a.withUnsafeBufferPointer { a in
                    BLAS.sgemm(m: outFeatures, n: inFeatures, k: p.rank, alpha: p.scale, a: b.baseAddress!, b: a.baseAddress!,
                               beta: 1, c: store.pointer + t.offset)
                }
            }
        }
        store.markModified()
    }
}

extension LoRAAdapter {
    /// The adapter as a llama.cpp LoRA GGUF (`general.type` = adapter, `adapter.type` = lora,
    /// `adapter.lora.alpha`), which `llama-cli --lora FILE` applies to the base model: per adapted
    /// weight `blk.N.attn_q.weight.lora_a` (ggml [in, r], PEFT's A) and `….lora_b` (ggml [r, out]), F32.
    /// llama.cpp scales by alpha / r, so alpha is written as s·r (rsLoRA's α/√r included).
    public func ggufWriter(config: Gemma3Config) throws -> GGUFWriter {
        let layout = ParameterLayout(config: config)
        guard let first = pairs.first else { throw Gemma3ModelError("\(path): the adapter is empty") }
        let alpha = first.scale * Float(first.rank)
        guard pairs.allSatisfy({ abs($0.scale * Float($0.rank) - alpha) <= 1e-6 * abs(alpha) }) else {
            throw Gemma3ModelError("\(path): the projections have different alpha / r; a llama.cpp adapter has one alpha")
        }
        var w = GGUFWriter()
        w.set("general.architecture", .string(GGUFGemma3.architecture))
        w.set("general.type", .string("adapter"))
        w.set("adapter.type", .string("lora"))
        w.set("adapter.lora.alpha", .float32(alpha))
        for p in pairs {
            guard let t = layout.tensor(named: p.weightName) else { throw Gemma3ModelError("\(path): the model has no \(p.weightName)") }
            let (outFeatures, inFeatures) = (t.shape[0], t.shape[1])
            try w.addTensor(t.tensor.ggufName + ".lora_a", type: .f32, dimensions: [inFeatures, p.rank], values: p.a)
            try w.addTensor(t.tensor.ggufName + ".lora_b", type: .f32, dimensions: [p.rank, outFeatures], values: p.b)
        }
        return w
    }
}
