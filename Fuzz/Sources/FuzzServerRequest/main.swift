// The server's request bodies: `/v1/completions` and `/v1/chat/completions` JSON read and validated
// (`OpenAIRequests`), with a small Gemma vocabulary so the chat template and the prompt encoding run.
import FuzzSupport
import Gemma3Serving
import Gemma3Tokenizers

/// Gemma's control tokens, the 256 byte tokens and a few pieces.
let model: ServedModel = {
    let control = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    let normal = ["\u{2581}", "a", "b", "e", "h", "l", "o", "\u{2581}a", "he", "ll", "llo", "hello", "\u{2581}hello"]
    let bytePieces = (0..<256).map { "<0x" + String($0, radix: 16, uppercase: true).leftPadded(to: 2) + ">" }
    let pieces = control + bytePieces + normal
    let types: [Int32] = control.map { $0 == "<unk>" ? 2 : 3 } + bytePieces.map { _ in 6 } + normal.map { _ in 1 }
    let scores = pieces.indices.map { -Float($0) }
    let tokenizer = try! GemmaTokenizer(pieces: pieces, scores: scores, types: types, bosTokenID: 2, eosTokenID: 1)
    return ServedModel(id: "fuzz", tokenizer: tokenizer, stopTokens: [1], contextLength: 256, created: 0)
}()

extension String {
    func leftPadded(to n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size) else { return 0 }
    _ = try? OpenAIRequests.completion(bytes, model: model)
    _ = try? OpenAIRequests.chat(bytes, model: model)
    return 0
}
