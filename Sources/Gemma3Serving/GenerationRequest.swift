import Gemma3Model
import Gemma3StructuredOutput
import Gemma3Tokenizers

/// One generation the scheduler runs: the prompt ids and every limit and sampling choice, already
/// validated by the HTTP layer (`OpenAIRequests`).
public struct GenerationRequest: Sendable {
    /// The prompt, as the model reads it (BOS and chat markup included).
    public var promptTokens: [TokenID]
    /// At most this many new tokens; nil: until a stop condition or the end of the context.
    public var maxTokens: Int?
    /// Temperature, top-k, top-p, min-p, repetition penalty and seed (the project's `Sampler`).
    public var sampling: SamplingOptions
    /// OpenAI's presence penalty: subtracted once from the logit of every token generated so far.
    public var presencePenalty: Float
    /// OpenAI's frequency penalty: subtracted from a token's logit once per time it was generated.
    public var frequencyPenalty: Float
    /// Ids that end the generation (kept in the usage count, not in the text).
    public var stopTokens: Set<TokenID>
    /// Strings that end the generation; the text is cut before the first one and never shows it.
    public var stopStrings: [String]
    /// nil: no log-probabilities; n: the sampled token's and the n most likely (0…20).
    public var logprobs: Int?
    /// Whether a slot's cached prefix may be reused (llama-server's `cache_prompt`).
    public var cachePrompt: Bool
    /// Structured output (`response_format`): only tokens that keep the answer a valid prefix of
    /// the grammar are sampled, and the answer ends when the value is complete. Owned by this
    /// request (a constraint holds the state of one generation).
    public var constraint: TokenConstraint?

    public init(promptTokens: [TokenID], maxTokens: Int?, sampling: SamplingOptions, presencePenalty: Float = 0,
                frequencyPenalty: Float = 0, stopTokens: Set<TokenID>, stopStrings: [String] = [], logprobs: Int? = nil,
                cachePrompt: Bool = true, constraint: TokenConstraint? = nil) {
        self.promptTokens = promptTokens
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.stopTokens = stopTokens
        self.stopStrings = stopStrings.filter { !$0.isEmpty }
        self.logprobs = logprobs
        self.cachePrompt = cachePrompt
        self.constraint = constraint
    }
}

/// A token with its log-probability (natural log, after the penalties, before temperature and
/// the filters), as OpenAI's `logprobs` report it.
public struct TokenLogprob: Sendable {
    public var token: TokenID
    /// The token's bytes (empty for control tokens).
    public var bytes: [UInt8]
    public var logprob: Float
}

/// The log-probabilities of one generated token.
public struct GeneratedTokenLogprobs: Sendable {
    public var chosen: TokenLogprob
    /// The most likely tokens, most likely first.
    public var top: [TokenLogprob]
}

/// Why a generation ended, in OpenAI's words.
public enum FinishReason: String, Sendable {
    /// A stop token or a stop string.
    case stop
    /// `max_tokens` or the end of the context.
    case length
}

/// Token counts of a finished generation (OpenAI's `usage`).
public struct GenerationUsage: Sendable {
    public var promptTokens: Int
    public var completionTokens: Int
    /// Prompt tokens whose KV cache was reused from an earlier request in the same slot.
    public var cachedTokens: Int
    public var totalTokens: Int { promptTokens + completionTokens }
}

/// What the scheduler sends to the request's HTTP handler, in order: pieces of text, then one
/// `finished` or `failed`.
public enum GenerationEvent: Sendable {
    /// New text (whole characters; possibly empty when text is held back, e.g. a possible stop
    /// string) and the log-probabilities of the tokens that produced it (when asked for).
    case text(String, [GeneratedTokenLogprobs])
    case finished(FinishReason, GenerationUsage)
    /// The engine failed (or the server is stopping); the message is for the client.
    case failed(String)
}

/// Why the scheduler refused a request.
public enum SubmissionError: Error, Sendable {
    /// The waiting queue is full (HTTP 429).
    case queueFull
    /// The server is shutting down.
    case stopping
}
