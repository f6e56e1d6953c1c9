// Gemma's tokenizer.json (`GemmaTokenizer(tokenizerJSON: Data)`), then encoding and decoding with it.
import Foundation
import FuzzSupport
import Gemma3Tokenizers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size),
          let tokenizer = try? GemmaTokenizer(tokenizerJSON: Data(bytes), source: "fuzz-tokenizer.json") else { return 0 }
    // Text made of the vocabulary's own pieces (and markup) reaches the merge loop and the special tokens.
    var text = "Hello world <start_of_turn>user\n\u{00e9}\u{1F600}  \t"
    for id in 0..<min(tokenizer.vocabularySize, 64) { text += String(decoding: tokenizer.pieces[id], as: UTF8.self) + " " }
    for parseSpecial in [false, true] {
        let ids = tokenizer.encode(text, parseSpecial: parseSpecial)
        _ = try? tokenizer.decodeToString(ids, special: parseSpecial)
    }
    _ = tokenizer.mergePairs()
    return 0
}
