import Foundation
import Testing
import Gemma3Model

/// The published google/gemma-3-270m config.json (transformers 4.x spelling).
let published270mConfig = """
{
  "_sliding_window_pattern": 6,
  "architectures": ["Gemma3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attn_logit_softcapping": null,
  "bos_token_id": 2,
  "eos_token_id": 1,
  "final_logit_softcapping": null,
  "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 640,
  "initializer_range": 0.02,
  "intermediate_size": 2048,
  "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
    "full_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
    "full_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
    "full_attention"],
  "max_position_embeddings": 32768,
  "model_type": "gemma3_text",
  "num_attention_heads": 4,
  "num_hidden_layers": 18,
  "num_key_value_heads": 1,
  "pad_token_id": 0,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_local_base_freq": 10000.0,
  "rope_scaling": null,
  "rope_theta": 1000000.0,
  "sliding_window": 512,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.55.0.dev0",
  "use_bidirectional_attention": false,
  "use_cache": true,
  "vocab_size": 262144
}
"""

func decode(_ json: String) throws -> Gemma3Config {
    try Gemma3Config.decode(json: Data(json.utf8))
}

/// `published270mConfig` with one top-level key replaced (or removed with nil).
func variant(_ key: String, _ value: Any?) throws -> String {
    var object = try JSONSerialization.jsonObject(with: Data(published270mConfig.utf8)) as! [String: Any]
    object[key] = value
    return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
}

@Suite struct ConfigTests {
    @Test func transformers5GoldenConfigDecodes() throws {
        let c = try Gemma3Config.load(from: goldenRoot.appendingPathComponent("tiny/config.json"))
        #expect(c.hiddenSize == 32 && c.headDim == 16 && c.numAttentionHeads == 4 && c.numKeyValueHeads == 1)
        #expect(c.layerTypes == [.slidingAttention, .slidingAttention, .slidingAttention, .fullAttention])
        #expect(c.ropeThetaFull == 1_000_000 && c.ropeThetaSliding == 10_000)
        #expect(c.ropeTheta(layer: 0) == 10_000 && c.ropeTheta(layer: 3) == 1_000_000)
        #expect(c.slidingWindow == 8 && c.queryPreAttnScalar == 16 && c.tieWordEmbeddings)
        #expect(c.padTokenId == nil && c.bosTokenId == nil && c.eosTokenIds.isEmpty)
        #expect(c.queryScale == 0.25)
        #expect(c.embeddingScale == Float(5.656854))
    }

    @Test func publishedConfigWithOldRopeKeysMatchesPreset() throws {
        let c = try decode(published270mConfig)
        #expect(c == Gemma3Config.preset(named: "gemma3-270m"))
        #expect((0..<18).filter { !c.isSliding(layer: $0) } == [5, 11, 17])
        // Google's published parameter count of Gemma 3 270M.
        #expect(c.parameterCount == 268_098_176)
        #expect(c.embeddingScale == Float(25.298222))
    }

    @Test func slidingWindowPatternWithoutLayerTypes() throws {
        let c = try decode(try variant("layer_types", nil))
        #expect((0..<18).filter { !c.isSliding(layer: $0) } == [5, 11, 17])
        let three = try decode(try variant("layer_types", nil).replacingOccurrences(of: "\"_sliding_window_pattern\":6", with: "\"sliding_window_pattern\":3"))
        #expect((0..<18).filter { !three.isSliding(layer: $0) } == [2, 5, 8, 11, 14, 17])
    }

    /// Issue 18's probe: hostile sizes fail in validation, before anything of their size is allocated
    /// (1e9 layers without layer_types used to build the list and climb to 7 GB).
    @Test func hostileSizesAreRefusedBeforeAllocating() throws {
        let cases: [(String, Any, String)] = [
            ("num_hidden_layers", 1_000_000_000, "num_hidden_layers"), ("hidden_size", 1_000_000_000, "hidden_size"),
            ("hidden_size", 1_000_000_000_000_000, "hidden_size"), ("intermediate_size", 1 << 40, "intermediate_size"),
            ("sliding_window", 1 << 24, "sliding_window"), ("max_position_embeddings", 1 << 24, "max_position_embeddings"),
            ("num_attention_heads", 1 << 20, "num_attention_heads"), ("vocab_size", 1 << 30, "parameters"),
        ]
        func changed(_ changes: [String: Any?]) throws -> String {
            var object = try JSONSerialization.jsonObject(with: Data(published270mConfig.utf8)) as! [String: Any]
            for (k, v) in changes { object[k] = v }
            return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
        }
        for (key, value, fragment) in cases {
            // Without layer_types, so a layer count must not build its default list either.
            let json = try changed([key: value, "layer_types": nil])
            do {
                _ = try decode(json)
                Issue.record("\(key) = \(value) accepted")
            } catch {
                let message = "\(error)"
                #expect(message.contains(fragment) && !message.contains("\n"), "\(key): \(message)")
            }
        }
        // The largest published Gemma 3 text shapes stay accepted (27B: hidden 5376, MLP 21504, 62 layers).
        #expect(throws: Never.self) { _ = try decode(try changed(["hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 62, "layer_types": nil])) }
    }

    @Test func textConfigWrapperAndEosList() throws {
        var inner = try JSONSerialization.jsonObject(with: Data(published270mConfig.utf8)) as! [String: Any]
        inner["eos_token_id"] = [1, 106]
        let outer: [String: Any] = ["model_type": "gemma3", "text_config": inner, "vision_config": ["hidden_size": 1152]]
        let c = try Gemma3Config.decode(json: JSONSerialization.data(withJSONObject: outer))
        #expect(c.hiddenSize == 640 && c.numHiddenLayers == 18)
        #expect(c.eosTokenIds == [1, 106])
    }

    @Test func encodeRoundTripsAndWritesTransformers5Keys() throws {
        for name in Gemma3Config.presetNames {
            let c = try #require(Gemma3Config.preset(named: name))
            try c.validate()
            let data = try c.jsonData()
            #expect(try Gemma3Config.decode(json: data) == c, "\(name) round trip")
            let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
            #expect(object["model_type"] as? String == "gemma3_text")
            #expect(object["architectures"] as? [String] == ["Gemma3ForCausalLM"])
            let rope = object["rope_parameters"] as? [String: [String: Any]]
            #expect((rope?["sliding_attention"]?["rope_theta"] as? NSNumber)?.doubleValue == c.ropeThetaSliding)
            #expect((rope?["full_attention"]?["rope_theta"] as? NSNumber)?.doubleValue == c.ropeThetaFull)
            #expect((object["layer_types"] as? [String])?.count == c.numHiddenLayers)
            #expect(object.keys.contains("pad_token_id"))  // explicit null: HF's default would be 0
        }
    }

    @Test func presetSizes() throws {
        let counts = Gemma3Config.presetNames.map { Gemma3Config.preset(named: $0)!.parameterCount }
        #expect(counts == counts.sorted())
        let ts = try #require(Gemma3Config.preset(named: "tinystories-270m"))
        #expect(ts.parameterCount == 132_490_496)  // 50257·640 + 18 · 5,573,632 + 640 (≈ 132.5M, docs/performance.md)
        #expect(abs(Double(Gemma3Config.preset(named: "tinystories-5m")!.parameterCount) / 5e6 - 1) < 0.2)
        #expect(abs(Double(Gemma3Config.preset(named: "tinystories-15m")!.parameterCount) / 15e6 - 1) < 0.2)
        #expect(abs(Double(Gemma3Config.preset(named: "tinystories-30m")!.parameterCount) / 30e6 - 1) < 0.2)
        for name in Gemma3Config.presetNames where name.hasPrefix("tinystories") {
            let c = Gemma3Config.preset(named: name)!
            #expect(c.vocabSize == 50257 && c.numKeyValueHeads == 1)
            #expect(c.numHiddenLayers % 6 == 0 && (0..<c.numHiddenLayers).filter { !c.isSliding(layer: $0) }.count == c.numHiddenLayers / 6)
        }
        #expect(Gemma3Config.preset(named: "nope") == nil)
    }

    @Test(arguments: [
        ("num_key_value_heads", "3", "multiple of num_key_value_heads"),
        ("head_dim", "255", "head_dim must be even"),
        ("layer_types", #"["sliding_attention", "local"]"#, "unknown layer type \"local\""),
        ("num_hidden_layers", "17", "layer_types has 18 entries but num_hidden_layers is 17"),
        ("final_logit_softcapping", "30.0", "softcapping"),
        ("hidden_activation", #""relu""#, "hidden_activation"),
        ("hidden_size", "0", "hidden_size must be positive"),
        ("sliding_window", "-1", "sliding_window must be positive"),
        ("rope_scaling", #"{"rope_type": "linear", "factor": 8.0}"#, "rope_type"),
        ("vocab_size", #""many""#, "vocab_size"),
        ("bos_token_id", "300000", "outside the vocabulary"),
    ])
    func badConfigsAreRejected(_ key: String, _ valueJSON: String, _ message: String) throws {
        let value = try JSONSerialization.jsonObject(with: Data(valueJSON.utf8), options: [.fragmentsAllowed])
        let json = try variant(key, value)
        do {
            _ = try decode(json)
            Issue.record("\(key) = \(valueJSON) was accepted")
        } catch let error as Gemma3ConfigError {
            #expect(error.message.contains(message), "\(error.message)")
            #expect(!error.message.contains("\n"))
        }
    }

    @Test func missingKeyIsNamed() throws {
        do {
            _ = try decode(try variant("hidden_size", nil))
            Issue.record("accepted")
        } catch let error as Gemma3ConfigError {
            #expect(error.message.contains("hidden_size"))
        }
        #expect(throws: Gemma3ConfigError.self) { try decode("not json") }
        #expect(throws: Gemma3ConfigError.self) {
            try Gemma3Config.load(from: URL(fileURLWithPath: "/nonexistent/config.json"))
        }
    }
}
