// `gemma3 finetune`'s JSON Lines examples (`FineTuneDataset.examples(jsonLines:)`): messages through
// Gemma's chat template, prompt + completion, text; both loss scopes, on a small Gemma vocabulary with
// the turn markers and byte fallback.
import Foundation
import FuzzSupport
import Gemma3Tokenizers
import Gemma3Training

let tokenizer: GemmaTokenizer = {
    var pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    pieces += (0..<256).map { String(format: "<0x%02X>", $0) }
    pieces += ["\u{2581}", "a", "b", "u", "s", "e", "r", "m", "o", "d", "l", "\u{2581}a", "us", "er", "user", "mo", "model"]
    let vocab = pieces.enumerated().map { "\"\($0.element)\": \($0.offset)" }.joined(separator: ", ")
    let added = pieces.prefix(6).enumerated().map { "{\"id\": \($0.offset), \"content\": \"\($0.element)\", \"special\": true}" }.joined(separator: ", ")
    let json = """
    {"added_tokens": [\(added)], "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "vocab": {\(vocab)},
     "merges": [["u", "s"], ["e", "r"], ["us", "er"], ["m", "o"], ["mo", "d"]]}}
    """
    return try! GemmaTokenizer(tokenizerJSON: Data(json.utf8), source: "fuzz-tokenizer.json")
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size) else { return 0 }
    let scope: LossScope = bytes.count % 2 == 0 ? .completions : .all
    _ = try? FineTuneDataset.examples(jsonLines: bytes, source: "fuzz.jsonl", tokenizer: tokenizer, lossScope: scope)
    return 0
}
