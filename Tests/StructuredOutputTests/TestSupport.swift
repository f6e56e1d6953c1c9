import Foundation
import Gemma3TestSupport
import Gemma3Kernels
import Gemma3Model
import Gemma3StructuredOutput

/// The repository root and ../shared, located from this source file.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let sharedGPT2 = repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared/data/gpt2")

/// The real Gemma 3 270M GGUF: $GEMMA3_GGUF, else the `gemma3 download gemma3-270m` cache path.
let realModelPath: String? = {
    let env = ProcessInfo.processInfo.environment
    let candidates: [String?] = [env["GEMMA3_GGUF"],
                                 FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/gemma3/gemma-3-270m-q4_k_m.gguf").path]
    return candidates.compactMap { $0 }.first { FileManager.default.fileExists(atPath: $0) }
}()

func notice(_ message: String) { print("NOTICE: \(message)") }

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Runs `python3 -c code args…` with `stdin`; returns (status, stdout, stderr).
func python(_ code: String, _ arguments: [String] = [], stdin: Data = Data()) throws -> (Int32, String, String) {
    let r = try runProcess("/usr/bin/env", ["python3", "-c", code] + arguments, stdin: stdin)
    return (r.status, String(decoding: r.stdout, as: UTF8.self), String(decoding: r.stderr, as: UTF8.self))
}

/// Validates every (schema index, text) pair with Python's `json` and `jsonschema` (Draft 2020-12);
/// returns the failures as lines ("index: why: text"). Throws if Python or jsonschema is missing.
func jsonSchemaFailures(schemas: [String], outputs: [(Int, String)]) throws -> [String] {
    let script = """
    import json, sys
    import jsonschema
    schemas = [json.loads(s) for s in json.loads(sys.argv[1])]
    count = 0
    for line in sys.stdin:
        item = json.loads(line)
        count += 1
        try:
            value = json.loads(item["text"])
            jsonschema.Draft202012Validator(schemas[item["schema"]]).validate(value)
        except Exception as e:
            print("%d: %s: %r" % (item["schema"], str(e).splitlines()[0], item["text"]))
    print("checked %d" % count)
    """
    var lines = Data()
    for (i, text) in outputs {
        lines += try JSONSerialization.data(withJSONObject: ["schema": i, "text": text])
        lines += Data("\n".utf8)
    }
    let schemaList = String(decoding: try JSONSerialization.data(withJSONObject: schemas), as: UTF8.self)
    let (status, out, err) = try python(script, [schemaList], stdin: lines)
    guard status == 0 else { throw TestFailure("python3 with jsonschema failed (scripts/install-deps.sh installs it): \(err.suffix(1500))") }
    let all = out.split(separator: "\n").map(String.init)
    guard all.last == "checked \(outputs.count)" else { throw TestFailure("the validator checked \(all.last ?? "nothing") of \(outputs.count): \(out.suffix(500))") }
    return Array(all.dropLast())
}

/// Texts that `re.fullmatch(pattern, text)` rejects (pattern index: text).
func regexFailures(patterns: [String], outputs: [(Int, String)]) throws -> [String] {
    let script = """
    import json, re, sys
    patterns = json.loads(sys.argv[1])
    count = 0
    for line in sys.stdin:
        item = json.loads(line)
        count += 1
        if re.fullmatch(patterns[item["pattern"]], item["text"]) is None:
            print("%d: %r" % (item["pattern"], item["text"]))
    print("checked %d" % count)
    """
    var lines = Data()
    for (i, text) in outputs {
        lines += try JSONSerialization.data(withJSONObject: ["pattern": i, "text": text])
        lines += Data("\n".utf8)
    }
    let list = String(decoding: try JSONSerialization.data(withJSONObject: patterns), as: UTF8.self)
    let (status, out, err) = try python(script, [list], stdin: lines)
    guard status == 0 else { throw TestFailure("python3 failed: \(err.suffix(1500))") }
    let all = out.split(separator: "\n").map(String.init)
    guard all.last == "checked \(outputs.count)" else { throw TestFailure("the checker checked \(all.last ?? "nothing") of \(outputs.count)") }
    return Array(all.dropLast())
}

/// The GPT-2 tokenizer of ../shared.
func gpt2Tokenizer() throws -> GPT2Tokenizer { try GPT2Tokenizer(directory: sharedGPT2) }

/// A small Gemma-style vocabulary with no files: control tokens, the 256 byte-fallback tokens,
/// SentencePiece pieces with ▁ for spaces, and pieces that span several JSON syntax elements.
func syntheticGemmaTokenizer() throws -> GemmaTokenizer {
    var pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    var types: [Int32] = [3, 3, 3, 2, 3, 3]
    for b in 0..<256 { pieces.append(String(format: "<0x%02X>", b)); types.append(6) }
    let text = ["{", "}", "[", "]", ":", ",", "\"", "{\"", "\"}", "\":", "\",", "\":▁\"", "▁\"", "\"]", "},", "}]", "}}", "[{", "[\"",
                "\",▁\"", "\":▁", ",▁", "▁{", "\n", "\n▁▁", "▁▁", "▁", "true", "false", "null", "▁true", "▁null", "0", "1", "12", "2.",
                ".5", "e", "-", "-1", "name", "age", "▁the", "cat", "dog", "kind", "▁a", "a", "b", "c", "é", "日本", "\\", "\\n", "\\\"",
                "\\u00", "abc", "red", "green", "blue", "value", "children", "lives", "good", "@", ".com", "com", "org", "yes", "no",
                "▁cat", "\"name\":", "\"age\":", "x", "y", "z", "Hello", "▁World", "🙂", "😀!"]
    for t in text where !pieces.contains(t) { pieces.append(t); types.append(1) }
    let scores = (0..<pieces.count).map { -Float($0) }
    return try GemmaTokenizer(pieces: pieces, scores: scores, types: types, bosTokenID: 2, eosTokenID: 1, addBOS: true)
}

/// A tiny random-weight model over `vocabularySize` tokens: every token gets some probability,
/// which pushes a constrained generation toward every invalid token.
func tinyRandomEngine(vocabularySize: Int, seed: UInt64, context: Int = 512) throws -> InferenceEngine {
    var c = Gemma3Config(vocabSize: vocabularySize, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2,
                         numAttentionHeads: 2, numKeyValueHeads: 1, headDim: 8, slidingWindow: 16,
                         layerTypes: [.slidingAttention, .fullAttention], maxPositionEmbeddings: 1024)
    c.eosTokenIds = []
    let store = ParameterStore(config: c)
    var rng = SplitMix64(seed: seed)
    for t in store.layout.tensors { rng.fillNormal(store.view(t), std: t.isMatrix ? 0.5 : 0.1) }
    let weights = try InferenceWeights(config: c, parameters: store, dtype: .f32)
    return try InferenceEngine(weights: weights, maxContext: context)
}

let testPatterns: [String] = [
    #"[a-z]{3,8}@[a-z]{2,5}\.(com|org)"#,
    #"\d{3}-\d{4}"#,
    #"(yes|no|maybe)"#,
    #"[A-Z][a-z]*( [A-Z][a-z]*){0,2}"#,
    #"-?\d+(\.\d{1,2})?"#,
    #"[^0-9]{2,5}"#,
    #".{1,10}"#,
    #"\w+\s\w+"#,
    #"[\u00e9\u00e8a-c]{2,4}日?"#,
    #"^(ab|a)(bc|c)?$"#,
]
