// Gemma3Tokenizers module: GPT-2 byte-level BPE (tiktoken-identical) and Gemma's SentencePiece-style
// BPE with byte fallback, behind one protocol.

/// A token id. One type across tokenizers, the inference engine, the sampler and generation; token
/// files store ids as `UInt16` (GPT-2's 50257 fit) and are widened to this on reading.
public typealias TokenID = Int32

/// What every tokenizer of this package offers, so a loaded model hands out "its" tokenizer whatever
/// the vocabulary: prompt text to ids, ids back to bytes and text.
public protocol TextTokenizer: Sendable {
    /// Number of ids (the largest id + 1).
    var vocabularySize: Int { get }
    /// Token ids of a prompt, as the model's format expects it: plain text for GPT-2 (no special
    /// tokens), `<bos>` first for Gemma; special-token text stays plain text.
    func encode(_ text: String) -> [TokenID]
    /// The bytes a token stands for (control tokens: none); nil for an id the tokenizer does not know.
    func bytes(of token: TokenID) -> [UInt8]?
    /// The text of a token sequence (invalid UTF-8 becomes U+FFFD); throws for unknown ids.
    func text(of ids: [TokenID]) throws -> String
    /// The id that ends a document or a reply (GPT-2's `<|endoftext|>`, Gemma's `<eos>`).
    var endOfTextID: TokenID { get }
}

extension GPT2Tokenizer: TextTokenizer {
    /// GPT-2 prompts are plain text: `encode_ordinary` (no special tokens, no BOS).
    public func encode(_ text: String) -> [TokenID] { encodeOrdinary(text) }
    public func bytes(of token: TokenID) -> [UInt8]? { tokenBytes(token) }
    public func text(of ids: [TokenID]) throws -> String { try decodeToString(ids) }
    public var endOfTextID: TokenID { endOfTextTokenID }
}

extension GemmaTokenizer: TextTokenizer {
    /// `<bos>` first when the model adds it (the GGUF's `add_bos_token`); special-token text stays plain text.
    public func encode(_ text: String) -> [TokenID] { encode(text, addBOS: nil, parseSpecial: false) }
    /// Control tokens (`<end_of_turn>`, …) produce no bytes.
    public func bytes(of token: TokenID) -> [UInt8]? { tokenBytes(token) }
    public func text(of ids: [TokenID]) throws -> String { try decodeToString(ids) }
    public var endOfTextID: TokenID { eosTokenID }
}
