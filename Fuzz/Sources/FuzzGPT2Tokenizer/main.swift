// GPT-2's vocab.json + merges.txt (`GPT2Tokenizer(vocabularyJSON:merges:)`, the two files separated by
// a `fileSeparator` line) or, when the input starts with `{"`, also as a tokenizer.json; then encoding.
import FuzzSupport
import Gemma3Tokenizers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size) else { return 0 }
    let (vocabulary, merges) = splitInput(bytes, separator: fileSeparator)
    var tokenizers: [GPT2Tokenizer] = []
    if let t = try? GPT2Tokenizer(vocabularyJSON: vocabulary, merges: merges) { tokenizers.append(t) }
    if merges.isEmpty, let t = try? GPT2Tokenizer(tokenizerJSON: bytes) { tokenizers.append(t) }
    for tokenizer in tokenizers {
        let text = "Hello world, it's 2026!  \n\n\u{00e9}\u{1F600} <|endoftext|> aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        for allowSpecial in [false, true] {
            let ids = tokenizer.encode(text, allowSpecial: allowSpecial)
            _ = try? tokenizer.decodeToString(ids)
        }
    }
    return 0
}
