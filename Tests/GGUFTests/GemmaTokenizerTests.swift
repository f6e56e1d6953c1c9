import Foundation
import Testing
import Gemma3Formats
@testable import Gemma3Model
import Gemma3Tokenizers

/// A small vocabulary in Gemma's layout: control tokens, user-defined whitespace runs and a tag,
/// 256 byte tokens, then scored pieces (higher score = merged earlier).
struct SmallVocabulary {
    var pieces: [String] = []
    var scores: [Float] = []
    var types: [Int32] = []
    var ids: [String: Int32] = [:]

    mutating func add(_ piece: String, _ score: Float, _ type: GemmaTokenizer.TokenType) {
        ids[piece] = Int32(pieces.count)
        pieces.append(piece); scores.append(score); types.append(type.rawValue)
    }

    init() {
        for p in ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"] { add(p, -1000, .control) }
        for p in ["\n", "\n\n", "  ", "   ", "<b>"] { add(p, -1000, .userDefined) }
        for b in 0..<256 { add(String(format: "<0x%02X>", b), 0, .byte) }
        // Scored pieces. Single characters first (their scores never matter: nothing merges into them).
        for p in ["a", "b", "c", "h", "e", "l", "o", "▁", "é", "世"] { add(p, -500, .normal) }
        add("ab", -10, .normal)     // beats "bc"
        add("bc", -20, .normal)
        add("abc", -30, .normal)
        add("he", -5, .normal)
        add("ll", -6, .normal)
        add("llo", -7, .normal)
        add("hello", -8, .normal)
        add("▁hello", -9, .normal)
        add("▁a", -40, .normal)
        add("aa", -50, .normal)     // equal scores: the leftmost pair merges first
        add("la", -50, .normal)
    }

    func tokenizer(addBOS: Bool = true) throws -> GemmaTokenizer {
        try GemmaTokenizer(pieces: pieces, scores: scores, types: types, bosTokenID: 2, eosTokenID: 1, addBOS: addBOS)
    }

    subscript(_ p: String) -> Int32 { ids[p]! }
    func byte(_ b: UInt8) -> Int32 { ids[String(format: "<0x%02X>", b)]! }
}

@Suite("Gemma tokenizer")
struct GemmaTokenizerTests {
    let v = SmallVocabulary()

    @Test("merges by score, leftmost on ties, byte fallback, whitespace, BOS")
    func smallVocabulary() throws {
        let t = try v.tokenizer()
        // abc: "ab" (−10) beats "bc" (−20), then "ab"+"c" = "abc".
        #expect(t.encode("abc", addBOS: false) == [v["abc"]])
        // "bc" alone, and "cb" (no piece) falls back to single characters.
        #expect(t.encode("bcb", addBOS: false) == [v["bc"], v["b"]])
        // "hello": he, ll, llo, hello by score order; a leading space becomes ▁ and merges.
        #expect(t.encode("hello", addBOS: false) == [v["hello"]])
        #expect(t.encode(" hello", addBOS: false) == [v["▁hello"]])
        #expect(t.encode("a a", addBOS: false) == [v["a"], v["▁a"]])
        // "laa": "la" and "aa" tie at −50: the leftmost pair ("la") merges, leaving "a".
        #expect(t.encode("laa", addBOS: false) == [v["la"], v["a"]])
        // Characters without pieces become their UTF-8 bytes.
        #expect(t.encode("zé世€", addBOS: false) == [v.byte(0x7A), v["é"], v["世"], v.byte(0xE2), v.byte(0x82), v.byte(0xAC)])
        // BOS by default; no space prefix.
        #expect(t.encode("a") == [2, v["a"]])
        #expect(t.encode("", addBOS: false) == [])
        #expect(t.encode("") == [2])
    }

    @Test("user-defined tokens match as literal text, control tokens only when allowed")
    func specialTokens() throws {
        let t = try v.tokenizer(addBOS: false)
        // Runs of spaces/newlines are user-defined: matched before anything else, longest first.
        #expect(t.encode("a  b", addBOS: false) == [v["a"], v["  "], v["b"]])
        #expect(t.encode("a     b", addBOS: false) == [v["a"], v["   "], v["  "], v["b"]])
        #expect(t.encode("a\n\n\nb<b>c") == [v["a"], v["\n\n"], v["\n"], v["b"], v["<b>"], v["c"]])
        // Control text is plain text unless parseSpecial.
        let plain = t.encode("<eos>a")
        #expect(!plain.contains(1))
        #expect(plain.count == 6)
        #expect(t.encode("<start_of_turn>a<eos>", parseSpecial: true) == [v["<start_of_turn>"], v["a"], 1])
    }

    @Test("decoding: ▁ → space, byte tokens → bytes, control tokens hidden unless asked")
    func decoding() throws {
        let t = try v.tokenizer()
        let text = "a hello  zé世€\n\nb"
        let ids = t.encode(text, addBOS: true)
        #expect(try t.decodeToString(ids) == text)
        #expect(try t.decodeToString([2, v["<start_of_turn>"], v["a"]], special: true) == "<bos><start_of_turn>a")
        #expect(try t.decodeToString([2, v["a"]]) == "a")
        #expect(throws: TokenizerError.self) { try t.decode([Int32(v.pieces.count)]) }
    }

    @Test("tokenizer.json (Hugging Face layout) gives the same ids as the scored vocabulary")
    func tokenizerJSON() throws {
        // Scores of a tokenizer.json are its id order, so reorder the pieces by descending score.
        var order = Array(0..<v.pieces.count)
        let head = order.prefix(11 + 256)     // control, user-defined and byte tokens keep their ids
        let rest = order.dropFirst(11 + 256).sorted { v.scores[$0] > v.scores[$1] }
        order = Array(head) + rest
        var vocab: [String] = [], added: [String] = []
        for (newID, old) in order.enumerated() {
            let piece = v.pieces[old]
            let escaped = String(data: try JSONSerialization.data(withJSONObject: [piece], options: [.withoutEscapingSlashes]), encoding: .utf8)!.dropFirst().dropLast()
            vocab.append("\(escaped): \(newID)")
            let type = GemmaTokenizer.TokenType(rawValue: v.types[old])!
            if type == .control || type == .userDefined {
                added.append("{\"id\": \(newID), \"content\": \(escaped), \"special\": \(type == .control)}")
            }
        }
        let json = "{\"added_tokens\": [\(added.joined(separator: ","))], \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\(vocab.joined(separator: ","))}, \"merges\": []}}"
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("tokenizer.json")
        try Data(json.utf8).write(to: url)
        let fromJSON = try GemmaTokenizer(tokenizerJSON: url)
        let direct = try v.tokenizer()
        // (No tied scores here: tokenizer.json orders ties by id, the GGUF vocabulary by position.)
        for text in ["abc", "bcb hello  a", "aab\n\n<b>", "zé世€", "<eos>x"] {
            let a = direct.encode(text, parseSpecial: true).map { direct.pieces[Int($0)] }
            let b = fromJSON.encode(text, parseSpecial: true).map { fromJSON.pieces[Int($0)] }
            #expect(a == b, "\(text)")
        }
        try Data("{\"model\": {\"type\": \"Unigram\"}}".utf8).write(to: url)
        #expect(throws: TokenizerError.self) { try GemmaTokenizer(tokenizerJSON: url) }
    }

    @Test("tokenizer metadata survives a GGUF round trip")
    func ggufRoundTrip() throws {
        let t = try v.tokenizer()
        var config = Gemma3Config(vocabSize: v.pieces.count, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                                  numAttentionHeads: 2, numKeyValueHeads: 1, headDim: 16, slidingWindow: 8, maxPositionEmbeddings: 64)
        config.bosTokenId = 2
        let store = ParameterStore(config: config)
        let w = try GGUFGemma3.writer(config: config, parameters: store, matrixType: .f32, tokenizer: t)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("m.gguf")
        try w.write(to: url)
        let back = try GGUFGemma3.tokenizer(from: try GGUFFile(url: url))
        #expect(back.pieces == t.pieces)
        #expect(back.types == t.types)
        #expect(back.encode(" hello  zé", parseSpecial: true) == t.encode(" hello  zé", parseSpecial: true))
    }
}

/// Texts covering the tokenizer's paths, for the comparison with llama.cpp.
let comparisonTexts: [String] = [
    "Hello world! This is a plain English sentence, with punctuation; and numbers: 12345, 3.14159.",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.",
    "  leading spaces,   repeated   spaces,    and trailing spaces   ",
    "line one\nline two\n\nparagraph\n\n\n\nfour newlines\r\nwindows line",
    "\ttab\t\ttwo tabs\t \t mixed\n\t\tindented",
    "Accents: café, naïve, résumé, Ærøskøbing, Đà Nẵng, São Paulo, Zürich.",
    "中文：我爱自然语言处理。日本語：こんにちは世界。한국어: 안녕하세요.",
    "Emoji: 🙂🚀🇫🇷 👩‍👩‍👧‍👦 and symbols ∑∫√ ≠ ≤ € ¥ © ™",
    "func add(_ a: Int, _ b: Int) -> Int {\n    return a + b // sum\n}\nlet x = [1, 2, 3].map { $0 * 2 }",
    "def f(x):\n    if x <= 0:\n        return {'k': [x, None]}\n    return f(x - 1)  # recursion",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
    "<bos>text with <eos> markers and <unused0> and <mask> inside",
    "HTML: <table><tr><td>cell</td></tr></table> <b>bold</b> <h1>T</h1>",
    "Mixed: ASCII, ελληνικά, русский, العربية, עברית, हिन्दी, ไทย",
    "weird bytes: \u{0}\u{1}\u{7f} zero-width:\u{200b}| nbsp:\u{a0}| BOM:\u{feff}",
    "a",
    " ",
    "www.example.com/path?query=1&x=y#frag   email@example.org",
]

@Suite("Gemma tokenizer against llama.cpp (real model)")
struct GemmaTokenizerLlamaCppTests {
    @Test("ids equal llama-tokenize's on the real Gemma 3 vocabulary, with and without special parsing")
    func compareWithLlamaTokenize() throws {
        guard let model = realModelPath else {
            notice("real model not found (GEMMA3_GGUF or ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf; run `gemma3 download gemma3-270m`): skipped the llama.cpp tokenizer comparison")
            return
        }
        guard let tool = llamaTool("llama-tokenize") else {
            notice("llama-tokenize not found (LLAMA_CPP_DIR/build/bin): skipped the llama.cpp tokenizer comparison")
            return
        }
        let tokenizer = try GGUFGemma3.tokenizer(from: try GGUFFile(path: model))
        #expect(tokenizer.vocabularySize == 262_144)
        // One llama-tokenize run per mode: the texts joined by the user-defined token "<h6>", which
        // llama.cpp always cuts out first, so each text between separators is tokenized on its own.
        let separator = "<h6>"
        let separatorID = try #require(tokenizer.id(of: separator))
        #expect(tokenizer.type(of: separatorID) == .userDefined)
        #expect(!comparisonTexts.contains { $0.contains(separator) })
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("texts.txt")
        try Data(comparisonTexts.joined(separator: separator).utf8).write(to: file)
        var compared = 0
        for special in [false, true] {
            var args = ["-m", model, "-f", file.path, "--ids", "--no-escape", "--log-disable"]
            if !special { args.append("--no-parse-special") }
            let r = try run(tool, args)
            #expect(r.status == 0, "llama-tokenize failed: \(String(decoding: r.stderr, as: UTF8.self).suffix(500))")
            let line = String(decoding: r.stdout, as: UTF8.self).split(separator: "\n").last(where: { $0.hasPrefix("[") }) ?? ""
            let theirs = line.dropFirst().dropLast().split(separator: ",").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
            #expect(theirs.first == tokenizer.bosTokenID)
            let segments = theirs.dropFirst().split(separator: separatorID, omittingEmptySubsequences: false)
            #expect(segments.count == comparisonTexts.count)
            for (i, (text, segment)) in zip(comparisonTexts, segments).enumerated() {
                let ours = tokenizer.encode(text, addBOS: false, parseSpecial: special)
                #expect(ours == Array(segment), "text #\(i) special=\(special): ours \(ours) vs llama.cpp \(Array(segment))")
                compared += 1
            }
            // And the whole file in one piece, BOS included.
            #expect(tokenizer.encode(comparisonTexts.joined(separator: separator), parseSpecial: special) == theirs)
        }
        print("compared \(compared) tokenizations with llama-tokenize")
    }
}
