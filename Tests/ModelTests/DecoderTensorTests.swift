import Foundation
import Testing
import Gemma3Formats
import Gemma3Model
import Gemma3Training

/// The tensor table (`ModelTensor`, `DecoderLayerTensor`) against independent sources: a real
/// transformers checkpoint, llama.cpp's GGUF names, a layout computed here from the config, and the
/// training recipe's weight-decay rule.
@Suite struct DecoderTensorTests {
    /// Configurations that differ in every dimension the table uses (GQA, untied head, head_dim ≠ H/heads).
    static let configs: [Gemma3Config] = [
        tinyConfig(), tinyConfig(kvHeads: 2, tied: false), tinyConfig(heads: 2, kvHeads: 2, headDim: 6, layers: 2),
        Gemma3Config.preset(named: "gemma3-270m")!,
    ]

    /// llama.cpp's Gemma 3 tensor names (`convert_hf_to_gguf.py`, `gguf-py` TENSOR_NAMES), per layer, in
    /// Hugging Face storage order; spelled here independently of the table.
    static let llamaCppLayerNames = [
        "attn_norm", "attn_q", "attn_k", "attn_v", "attn_q_norm", "attn_k_norm", "attn_output",
        "post_attention_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "post_ffw_norm",
    ]

    static func expectedGGUFNames(_ c: Gemma3Config) -> [String] {
        ["token_embd.weight"]
            + (0..<c.numHiddenLayers).flatMap { l in llamaCppLayerNames.map { "blk.\(l).\($0).weight" } }
            + ["output_norm.weight"] + (c.tieWordEmbeddings ? [] : ["output.weight"])
    }

    /// The Hugging Face names and shapes are exactly the parameters of transformers' checkpoint.
    @Test func huggingFaceNamesMatchTheGoldenCheckpoint() throws {
        let dir = goldenRoot.appendingPathComponent("tiny")
        let config = try Gemma3Config.load(from: dir.appendingPathComponent("config.json"))
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("golden.safetensors"))
        // Everything that is not a test vector (README: input_ids, logits, loss, grad.*, greedy_ids, act.*) is a parameter.
        let vectors: Set = ["input_ids", "logits", "loss", "greedy_ids"]
        let parameters = file.tensors.filter { !vectors.contains($0.name) && !$0.name.hasPrefix("grad.") && !$0.name.hasPrefix("act.") }
        let table = ModelTensor.all(config: config)
        #expect(Set(parameters.map(\.name)) == Set(table.map(\.huggingFaceName)))
        #expect(parameters.count == table.count)
        for t in table {
            #expect(file.info(t.huggingFaceName)?.shape == t.shape(in: config), "\(t.huggingFaceName)")
            #expect(file.info("grad." + t.huggingFaceName)?.shape == t.shape(in: config), "grad.\(t.huggingFaceName)")
            #expect(ModelTensor(huggingFaceName: t.huggingFaceName) == t)
        }
    }

    /// The GGUF writer emits llama.cpp's names in storage order, and the reader finds every tensor by them.
    @Test(arguments: configs.prefix(3))
    func ggufNamesMatchLlamaCppInWriterAndReader(config: Gemma3Config) throws {
        let expected = Self.expectedGGUFNames(config)
        #expect(ModelTensor.all(config: config).map(\.ggufName) == expected)
        for (t, name) in zip(ModelTensor.all(config: config), expected) {
            #expect(ModelTensor(ggufName: name) == t)
            #expect(GGUFGemma3.ggufName(forHuggingFace: t.huggingFaceName) == name)
            #expect(GGUFGemma3.huggingFaceName(forGGUF: name) == t.huggingFaceName)
        }

        let store = randomParameters(config, seed: 11)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("model.gguf")
        try GGUFGemma3.writer(config: config, parameters: store).write(to: url)
        let file = try GGUFFile(url: url)
        #expect(file.tensors.map(\.name) == expected)
        // The reader looks every tensor up by name: both paths load, and the float path gives back the store.
        _ = try GGUFGemma3.inferenceWeights(from: file, config: config)
        let back = try GGUFGemma3.parameters(from: file, config: config)
        for t in store.layout.tensors {
            let d = zip(store.view(t), back.view(t)).map { abs($0 - $1) }.max() ?? 0
            #expect(d <= 1e-6, "\(t.name): \(d)")
        }
    }

    /// When the real Gemma 3 270M GGUF is in the download cache, its tensor names are the table's.
    @Test func ggufNamesMatchTheRealModel() throws {
        let path = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/gemma3/gemma-3-270m-q4_k_m.gguf").path
        guard FileManager.default.fileExists(atPath: path) else {
            print("NOTICE: \(path) not found: skipped comparing the table with the real model's GGUF names")
            return
        }
        let file = try GGUFFile(path: path)
        let config = try GGUFGemma3.config(from: file)
        #expect(Set(file.tensors.map(\.name)) == Set(ModelTensor.all(config: config).map(\.ggufName)))
        #expect(Set(file.tensors.map(\.name)) == Set(Self.expectedGGUFNames(config)))
    }

    @Test func unknownNamesAreRejected() {
        for name in ["model.layers.0.self_attn.q_proj", "model.layers.x.mlp.up_proj.weight", "model.layers.-1.mlp.up_proj.weight",
                     "model.layers.0.mlp.weight", "blk.0.attn_q", "blk.0.self_attn.q_proj.weight", "token_embd", ""] {
            #expect(ModelTensor(huggingFaceName: name) == nil, "\(name)")
            #expect(ModelTensor(ggufName: name) == nil, "\(name)")
        }
    }

    /// Order, offsets and shapes of the flat layout, recomputed here from the config alone (checkpoints,
    /// AdamW moments and the golden tests depend on them).
    @Test(arguments: configs)
    func layoutOffsetsAreUnchanged(config c: Gemma3Config) {
        let (V, H, I, hd) = (c.vocabSize, c.hiddenSize, c.intermediateSize, c.headDim)
        let q = c.numAttentionHeads * hd, kv = c.numKeyValueHeads * hd
        var expected: [(name: String, shape: [Int], offset: Int)] = []
        var cursor = 0
        func add(_ name: String, _ shape: [Int]) { expected.append((name, shape, cursor)); cursor += shape.reduce(1, *) }
        add("model.embed_tokens.weight", [V, H])
        for l in 0..<c.numHiddenLayers {
            let p = "model.layers.\(l)."
            add(p + "input_layernorm.weight", [H])
            add(p + "self_attn.q_proj.weight", [q, H])
            add(p + "self_attn.k_proj.weight", [kv, H])
            add(p + "self_attn.v_proj.weight", [kv, H])
            add(p + "self_attn.q_norm.weight", [hd])
            add(p + "self_attn.k_norm.weight", [hd])
            add(p + "self_attn.o_proj.weight", [H, q])
            add(p + "post_attention_layernorm.weight", [H])
            add(p + "pre_feedforward_layernorm.weight", [H])
            add(p + "mlp.gate_proj.weight", [I, H])
            add(p + "mlp.up_proj.weight", [I, H])
            add(p + "mlp.down_proj.weight", [H, I])
            add(p + "post_feedforward_layernorm.weight", [H])
        }
        add("model.norm.weight", [H])
        if !c.tieWordEmbeddings { add("lm_head.weight", [V, H]) }

        let layout = ParameterLayout(config: c)
        #expect(layout.count == cursor)
        #expect(layout.tensors.map(\.name) == expected.map(\.name))
        #expect(layout.tensors.map(\.offset) == expected.map(\.offset))
        #expect(layout.tensors.map(\.shape) == expected.map(\.shape))
        func offset(_ name: String) -> Int { expected.first { $0.name == name }!.offset }
        #expect(layout.embedding == offset("model.embed_tokens.weight"))
        #expect(layout.finalNorm == offset("model.norm.weight"))
        #expect(layout.lmHead == (c.tieWordEmbeddings ? nil : offset("lm_head.weight")))
        for (l, o) in layout.layers.enumerated() {
            let p = "model.layers.\(l)."
            #expect([o.inputNorm, o.qProj, o.kProj, o.vProj, o.qNorm, o.kNorm, o.oProj, o.postAttentionNorm,
                     o.preFeedforwardNorm, o.gateProj, o.upProj, o.downProj, o.postFeedforwardNorm]
                    == Self.llamaCppLayerNames.indices.map { expected[1 + l * 13 + $0].offset })
            #expect(o.qProj == offset(p + "self_attn.q_proj.weight") && o.downProj == offset(p + "mlp.down_proj.weight"))
            // The fused QKV and gate/up products rely on adjacency.
            #expect(o.kProj == o.qProj + q * H && o.vProj == o.kProj + kv * H && o.upProj == o.gateProj + I * H)
        }
        for t in ModelTensor.all(config: c) { #expect(layout.tensor(t)?.tensor == t) }
        #expect(layout.tensor(.layer(c.numHiddenLayers, .qProj)) == nil)
        #expect((layout.tensor(.lmHead) == nil) == c.tieWordEmbeddings)
    }

    /// Today's recipe: decoupled weight decay on tensors with ≥ 2 dimensions (matrices, embedding,
    /// LM head), never on the RMSNorm weights; AdamW's segments follow the same flags.
    @Test(arguments: configs)
    func weightDecayFollowsTheRecipe(config: Gemma3Config) {
        let layout = ParameterLayout(config: config)
        for t in layout.tensors {
            #expect(t.appliesWeightDecay == (t.shape.count >= 2), "\(t.name)")
            #expect(t.appliesWeightDecay != t.name.hasSuffix("norm.weight"), "\(t.name)")
        }
        let segments = ParameterSegment.from(layout: layout)
        for t in layout.tensors where t.count > 0 {
            let segment = segments.first { $0.range.contains(t.offset) }
            #expect(segment?.decay == (t.shape.count >= 2) && segment?.range.contains(t.offset + t.count - 1) == true, "\(t.name)")
        }
    }
}
