import Foundation
import Gemma3Infrastructure

/// Writing Gemma's tokenizer as a Hugging Face `tokenizer.json`, and telling such a file apart from a
/// GPT-2 (byte-level BPE) one.
///
/// The file has the layout of `google/gemma-3-*` (transformers' `GemmaConverter`): normalizer
/// " " → "▁", a BPE model with `byte_fallback`, every piece in `model.vocab` under its id, control and
/// user-defined tokens also in `added_tokens` (special = control), `<bos>` prepended by the post-processor.
///
/// Scores: a tokenizer.json has no piece scores, only merge ranks, and `init(tokenizerJSON:)` ranks
/// pieces by id (score = −id), which is how SentencePiece orders Gemma's pieces. The file is therefore
/// exact for vocabularies whose normal pieces' scores strictly decrease with the id (Gemma 3's do:
/// score = 494 − id); see `scoresDecreaseWithID`.
extension GemmaTokenizer {
    /// Whether the normal pieces' scores strictly decrease with the id, so that a tokenizer.json
    /// (which ranks pieces by id) encodes every text exactly as this tokenizer does.
    public var scoresDecreaseWithID: Bool {
        var previous = Float.infinity
        for (id, type) in types.enumerated() where type == .normal && pieces[id].dropFirst().contains(where: { $0 & 0xC0 != 0x80 }) {
            // Single-character pieces never result from a merge, so their scores never matter.
            guard scores[id] < previous else { return false }
            previous = scores[id]
        }
        return true
    }

    /// The merges a Hugging Face BPE model needs to reproduce SentencePiece's merging: every split of a
    /// normal piece (at a UTF-8 character boundary) into two pieces of the vocabulary, ordered by the
    /// merged piece's rank (score, then id), then by the left part's length.
    public func mergePairs() -> [(left: Int32, right: Int32)] {
        var ranked: [(score: Float, id: Int32, left: Int32, right: Int32)] = []
        for (id, piece) in pieces.enumerated() where types[id] == .normal && piece.count > 1 {
            var k = 1
            while k < piece.count {
                // Only split at character starts (not in front of a UTF-8 continuation byte).
                if piece[k] & 0xC0 != 0x80,
                   let left = self.id(of: String(decoding: piece[..<k], as: UTF8.self)),
                   let right = self.id(of: String(decoding: piece[k...], as: UTF8.self)) {
                    ranked.append((scores[id], Int32(id), left, right))
                }
                k += 1
            }
        }
        // Stable sort: splits of one piece keep their left-length order.
        let order = ranked.indices.sorted { a, b in
            let x = ranked[a], y = ranked[b]
            if x.score != y.score { return x.score > y.score }
            if x.id != y.id { return x.id < y.id }
            return a < b
        }
        return order.map { (ranked[$0].left, ranked[$0].right) }
    }

    /// The tokenizer as Hugging Face `tokenizer.json` text (UTF-8), which `init(tokenizerJSON:)` reads
    /// back to the same pieces, token types and encodings (given `scoresDecreaseWithID`), and which the
    /// `tokenizers` library loads as a Gemma tokenizer.
    public func tokenizerJSONData() -> Data {
        var out = ""
        out.reserveCapacity(pieces.count * 40)
        func piece(_ id: Int) -> String { String(decoding: pieces[id], as: UTF8.self) }
        out += "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": ["
        var first = true
        for (id, type) in types.enumerated() {
            let special: Bool
            switch type {
            case .control, .unknown, .unused: special = true
            case .userDefined: special = false
            case .normal, .byte: continue
            }
            out += first ? "\n    " : ",\n    "
            first = false
            out += "{\"id\": \(id), \"content\": "
            out += jsonStringLiteral(piece(id))
            out += ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": \(special)}"
        }
        out += "\n  ],\n"
        out += "  \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"▁\"},\n"
        out += "  \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"MergedWithPrevious\", \"invert\": false},\n"
        let bos = piece(Int(bosTokenID))
        if addBOS {
            var b = ""
            b += jsonStringLiteral(bos)
            out += "  \"post_processor\": {\"type\": \"TemplateProcessing\", "
            out += "\"single\": [{\"SpecialToken\": {\"id\": \(b), \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
            out += "\"pair\": [{\"SpecialToken\": {\"id\": \(b), \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, "
            out += "{\"SpecialToken\": {\"id\": \(b), \"type_id\": 1}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}], "
            out += "\"special_tokens\": {\(b): {\"id\": \(b), \"ids\": [\(bosTokenID)], \"tokens\": [\(b)]}}},\n"
        } else {
            out += "  \"post_processor\": null,\n"
        }
        out += "  \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"▁\"}, \"content\": \" \"}, "
        out += "{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}]},\n"
        out += "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": "
        if let unk = types.firstIndex(of: .unknown) ?? (id(of: "<unk>").map(Int.init)) {
            out += jsonStringLiteral(piece(unk))
        } else {
            out += "null"
        }
        out += ", \"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": true, "
        out += "\"byte_fallback\": true, \"ignore_merges\": false,\n    \"vocab\": {"
        for id in 0..<pieces.count {
            out += id == 0 ? "\n      " : ",\n      "
            out += jsonStringLiteral(piece(id))
            out += ": \(id)"
        }
        out += "\n    },\n    \"merges\": ["
        for (k, m) in mergePairs().enumerated() {
            out += k == 0 ? "\n      [" : ",\n      ["
            out += jsonStringLiteral(piece(Int(m.left)))
            out += ", "
            out += jsonStringLiteral(piece(Int(m.right)))
            out += "]"
        }
        out += "\n    ]\n  }\n}\n"
        return Data(out.utf8)
    }

    /// Whether the `tokenizer.json` at `url` is a SentencePiece-style (Gemma) tokenizer — a BPE model
    /// with `"byte_fallback": true` — rather than GPT-2's byte-level BPE (which has no byte fallback).
    /// False when the file cannot be read.
    public static func isGemmaTokenizerJSON(at url: URL) -> Bool {
        guard let data = try? Data(contentsOf: url, options: .mappedIfSafe) else { return false }
        return data.withUnsafeBytes { raw -> Bool in
            let bytes = raw.bindMemory(to: UInt8.self)
            let key = Array("\"byte_fallback\"".utf8)
            var i = 0
            while i + key.count <= bytes.count {
                if bytes[i] == key[0] && zip(key.indices, key).allSatisfy({ bytes[i + $0] == $1 }) {
                    var j = i + key.count
                    while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x0A || bytes[j] == 0x0D || bytes[j] == 0x09 || bytes[j] == 0x3A { j += 1 }
                    if j + 4 <= bytes.count, Array(bytes[j..<(j + 4)]) == Array("true".utf8) { return true }
                    i = j
                } else {
                    i += 1
                }
            }
            return false
        }
    }
}
