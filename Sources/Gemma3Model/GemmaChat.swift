import Foundation
import Gemma3Tokenizers

extension GemmaTokenizer: GenerationTokenizer {
    /// Gemma prompts start with `<bos>` (the GGUF's `add_bos_token`); special-token text stays plain text.
    public func encodePrompt(_ text: String) throws -> [Int] { encode(text).map(Int.init) }

    /// Control tokens (`<end_of_turn>`, …) produce no text.
    public func bytes(of token: Int) -> [UInt8]? {
        token >= 0 && token <= Int(Int32.max) ? tokenBytes(Int32(token)) : nil
    }
}

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
    public let engine: InferenceEngine
    public let tokenizer: GemmaTokenizer
    public let endOfTurnID: Int
    /// Every token in the cache, in order (prompt and replies).
    public private(set) var history: [Int] = []
    /// Whether the last reply was closed by the model's own `<end_of_turn>` (not yet in the cache).
    private var pendingEndOfTurn = false

    public init(engine: InferenceEngine, tokenizer: GemmaTokenizer) throws {
        guard let eot = tokenizer.id(of: "<end_of_turn>"), tokenizer.id(of: "<start_of_turn>") != nil else {
            throw GenerationError("the tokenizer has no <start_of_turn>/<end_of_turn> tokens: not a Gemma chat vocabulary")
        }
        self.engine = engine
        self.tokenizer = tokenizer
        self.endOfTurnID = Int(eot)
        engine.reset()
    }

    /// The token ids one user turn adds to the cache (the previous turn's closing included).
    public func turnTokens(_ message: String) -> [Int] {
        var text = ""
        if !history.isEmpty { text += (pendingEndOfTurn ? "" : "<end_of_turn>") + "\n" }
        text += "<start_of_turn>user\n\(message)<end_of_turn>\n<start_of_turn>model\n"
        var ids = tokenizer.encode(text, addBOS: history.isEmpty, parseSpecial: true).map(Int.init)
        if pendingEndOfTurn { ids.insert(endOfTurnID, at: 0) }
        return ids
    }

    /// Appends a user message and generates the model's reply; `onText` streams it.
    public func reply(to message: String, options: GenerationOptions, onText: ((String) -> Void)? = nil) throws -> GenerationResult {
        let promptIds = turnTokens(message)
        guard engine.position + promptIds.count < engine.maxContext else {
            throw GenerationError("the conversation (\(engine.position + promptIds.count) tokens) no longer fits the context of \(engine.maxContext)")
        }
        try options.sampling.validate()
        var stopIds = options.stopTokenIds
        stopIds.insert(endOfTurnID)
        stopIds.insert(Int(tokenizer.eosTokenID))
        var sampler = Sampler(options: options.sampling)
        var seen = options.sampling.repetitionPenalty != 1 ? history + promptIds : []
        var utf8 = StreamingUTF8Decoder()
        var stops = StopStringFilter(options.stopStrings)
        var text = ""
        var generated: [Int] = []
        var reason = StopReason.maxNewTokens
        func emit(_ piece: String) {
            guard !piece.isEmpty else { return }
            text += piece
            onText?(piece)
        }
        let clock = ContinuousClock()
        let t0 = clock.now
        var logits = try engine.prefill(promptIds)
        history += promptIds
        pendingEndOfTurn = false
        let prefillSeconds = Generator.seconds(clock.now - t0)
        var decodeSeconds = 0.0
        var steps = 0
        while generated.count < options.maxNewTokens {
            let token = sampler.sample(logits, seen: seen)
            if options.sampling.repetitionPenalty != 1 { seen.append(token) }
            generated.append(token)
            if stopIds.contains(token) {
                reason = .stopToken
                pendingEndOfTurn = token == endOfTurnID
                break
            }
            guard let bytes = tokenizer.bytes(of: token) else {
                throw GenerationError("the model produced token \(token), which the tokenizer does not know")
            }
            let (safe, stopped) = stops.push(utf8.push(bytes))
            emit(safe)
            // The token joins the cache (and the history) before the next turn or step.
            guard engine.position < engine.maxContext else { reason = .contextFull; break }
            let t = clock.now
            logits = try engine.decode(token)
            decodeSeconds += Generator.seconds(clock.now - t)
            steps += 1
            history.append(token)
            if stopped { reason = .stopString; break }
        }
        if reason != .stopString {
            let (safe, stopped) = stops.push(utf8.finish())
            emit(safe)
            if stopped { reason = .stopString } else { emit(stops.flush()) }
        }
        return GenerationResult(promptIds: promptIds, generatedIds: generated, text: text, stopReason: reason,
                                prefillSeconds: prefillSeconds, decodeSeconds: decodeSeconds, decodeSteps: steps)
    }
}
