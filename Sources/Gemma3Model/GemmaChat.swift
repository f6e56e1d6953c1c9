import Foundation
import Gemma3Tokenizers

/// A multi-turn conversation in Gemma's chat format, keeping the KV cache between turns:
///
///     <bos><start_of_turn>user
///     {message}<end_of_turn>
///     <start_of_turn>model
///     {reply}<end_of_turn>
///     <start_of_turn>user
///     …
///
/// Each turn feeds only its new tokens. Turn text is tokenized with special tokens allowed (so a
/// message can contain markup of the format, as in llama.cpp's chat). A reply ends at `<end_of_turn>`
/// or `<eos>` (or the token limit); the turn is then closed with `<end_of_turn>\n` before the next.
/// The base Gemma 3 270M model is not instruction-tuned, so its replies are modest; the format is
/// what instruction-tuned GGUF files expect.
public final class GemmaChatSession: @unchecked Sendable {
    /// The decode loop, continuing from the cache turn after turn.
    public let generator: Generator
    public let tokenizer: GemmaTokenizer
    public let endOfTurnID: TokenID
    public var engine: InferenceEngine { generator.engine }
    /// Every token in the cache, in order (prompt and replies).
    public var history: [TokenID] { generator.cachedTokens }
    /// Whether the last reply was closed by the model's own `<end_of_turn>` (not yet in the cache).
    private var pendingEndOfTurn = false

    public init(engine: InferenceEngine, tokenizer: GemmaTokenizer) throws {
        guard let eot = tokenizer.id(of: "<end_of_turn>"), tokenizer.id(of: "<start_of_turn>") != nil else {
            throw GenerationError("the tokenizer has no <start_of_turn>/<end_of_turn> tokens: not a Gemma chat vocabulary")
        }
        self.generator = Generator(engine: engine, tokenizer: tokenizer)
        self.tokenizer = tokenizer
        self.endOfTurnID = eot
    }

    /// The token ids one user turn adds to the cache (the previous turn's closing included).
    public func turnTokens(_ message: String) -> [TokenID] {
        var text = ""
        if !history.isEmpty { text += (pendingEndOfTurn ? "" : "<end_of_turn>") + "\n" }
        text += "<start_of_turn>user\n\(message)<end_of_turn>\n<start_of_turn>model\n"
        var ids = tokenizer.encode(text, addBOS: history.isEmpty, parseSpecial: true)
        if pendingEndOfTurn { ids.insert(endOfTurnID, at: 0) }
        return ids
    }

    /// Appends a user message and generates the model's reply; `onText` streams it. The reply ends
    /// at `<end_of_turn>` or `<eos>` as well as at the options' own stop conditions.
    public func reply(to message: String, options: GenerationOptions, onText: ((String) -> Void)? = nil) throws -> GenerationResult {
        let promptIds = turnTokens(message)
        guard engine.position + promptIds.count < engine.maxContext else {
            throw GenerationError("the conversation (\(engine.position + promptIds.count) tokens) no longer fits the context of \(engine.maxContext)")
        }
        var turnOptions = options
        turnOptions.stopTokenIds.formUnion([endOfTurnID, tokenizer.eosTokenID])
        let positionBefore = engine.position
        do {
            let result = try generator.generate(promptIds: promptIds, options: turnOptions, continuing: true, onText: onText)
            pendingEndOfTurn = result.stopReason == .stopToken && result.generatedIds.last == endOfTurnID
            return result
        } catch {
            // Once the turn is in the cache, its leading <end_of_turn> is no longer pending.
            if engine.position != positionBefore { pendingEndOfTurn = false }
            throw error
        }
    }
}
