import Foundation
import Gemma3Infrastructure
import Gemma3Model
import Gemma3StructuredOutput
import Gemma3Tokenizers

/// What the HTTP layer needs to know about the loaded model to read requests.
public struct ServedModel: Sendable {
    /// The name `/v1/models` lists and responses carry.
    public let id: String
    public let tokenizer: any TextTokenizer
    /// The model's own stop tokens (`LanguageModel.stopTokens`).
    public let stopTokens: Set<TokenID>
    /// Positions per slot.
    public let contextLength: Int
    /// Unix time the model was loaded (`created` of `/v1/models`).
    public let created: Int
    /// Gemma's `<end_of_turn>`, when the vocabulary has the chat turn tokens (else chat is refused).
    public let endOfTurn: TokenID?
    /// The tokens' byte trie that `response_format` constraints walk, built on first use (≈ 0.2 s
    /// and some megabytes for a 262,144-token vocabulary, so a server that never constrains never pays).
    let constraintVocabulary: LazyTokenVocabulary

    public init(id: String, tokenizer: any TextTokenizer, stopTokens: Set<TokenID>, contextLength: Int, created: Int) {
        self.id = id
        self.tokenizer = tokenizer
        self.stopTokens = stopTokens
        self.contextLength = contextLength
        self.created = created
        constraintVocabulary = LazyTokenVocabulary(tokenizer: tokenizer)
        if let gemma = tokenizer as? GemmaTokenizer, gemma.id(of: "<start_of_turn>") != nil {
            endOfTurn = gemma.id(of: "<end_of_turn>")
        } else {
            endOfTurn = nil
        }
    }

    /// Ids the tokenizer knows (prompt token ids must be below this).
    var vocabularySize: Int { tokenizer.vocabularySize }
}

/// A `TokenVocabulary` built once, by the first request that needs it.
final class LazyTokenVocabulary: @unchecked Sendable {
    private let tokenizer: any TextTokenizer
    private let lock = NSLock()
    private var built: TokenVocabulary?

    init(tokenizer: any TextTokenizer) { self.tokenizer = tokenizer }

    var vocabulary: TokenVocabulary {
        lock.lock()
        defer { lock.unlock() }
        if let built { return built }
        let v = TokenVocabulary(tokenizer: tokenizer)
        built = v
        return v
    }
}

/// A parsed `/v1/completions` or `/v1/chat/completions` request.
public struct ParsedGeneration: Sendable {
    /// What the scheduler runs.
    public var request: GenerationRequest
    /// Whether the reply is streamed as server-sent events.
    public var stream: Bool
    /// Streams only: whether the last chunk carries the usage (`stream_options.include_usage`).
    public var includeUsage: Bool
    /// Completions with `echo`: the prompt's text, written before the answer.
    public var echo: String?
}

/// The JSON object of a request body, with typed accessors that answer 400 for a known field of
/// the wrong type or out of range. A null member counts as absent; unknown members are ignored.
struct RequestFields {
    let value: JSONValue

    /// Parses `bytes` (valid UTF-8 and one JSON object, else 400).
    init(_ bytes: [UInt8]) throws(APIError) {
        let result: Result<JSONValue, APIError> = bytes.withUnsafeBufferPointer { buffer in
            if let offset = firstInvalidUTF8Offset(buffer) { return .failure(APIError.invalid("the request body is not valid UTF-8 (byte \(offset))")) }
            do { return .success(try JSONReader.parse(buffer)) } catch let error as JSONSyntaxError {
                return .failure(APIError.invalid("malformed JSON at byte \(error.offset): \(error.reason)"))
            } catch {
                return .failure(APIError.invalid("malformed JSON"))
            }
        }
        let parsed = try result.get()
        guard case .object = parsed else { throw APIError.invalid("the request body must be a JSON object") }
        value = parsed
    }

    init(object: JSONValue) { value = object }

    func raw(_ key: String) -> JSONValue? {
        guard let v = value[key] else { return nil }
        if case .null = v { return nil }
        return v
    }

    func int(_ key: String, in range: ClosedRange<Int>? = nil) throws(APIError) -> Int? {
        guard let v = raw(key) else { return nil }
        guard case .number(let d) = v, d.rounded() == d, abs(d) < 9.2e18 else {
            throw APIError.invalid("'\(key)' must be an integer", param: key)
        }
        let i = Int(d)
        if let range, !range.contains(i) {
            throw APIError.invalid("'\(key)' must be in \(range.lowerBound)…\(range.upperBound), got \(i)", param: key)
        }
        return i
    }

    func number(_ key: String, in range: ClosedRange<Double>? = nil) throws(APIError) -> Double? {
        guard let v = raw(key) else { return nil }
        guard case .number(let d) = v, d.isFinite else { throw APIError.invalid("'\(key)' must be a number", param: key) }
        if let range, !range.contains(d) {
            throw APIError.invalid("'\(key)' must be in [\(range.lowerBound), \(range.upperBound)], got \(d)", param: key)
        }
        return d
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        guard let v = raw(key) else { return nil }
        guard case .bool(let b) = v else { throw APIError.invalid("'\(key)' must be a boolean", param: key) }
        return b
    }

    func string(_ key: String) throws(APIError) -> String? {
        guard let v = raw(key) else { return nil }
        guard case .string(let s) = v else { throw APIError.invalid("'\(key)' must be a string", param: key) }
        return s
    }
}

/// Reading OpenAI's request bodies into `GenerationRequest`s: every field is checked, and a body
/// that is not valid UTF-8, not a JSON object, or has a field of the wrong type or out of range is
/// a 400 `APIError` with a one-line message (what the server answers).
public enum OpenAIRequests {
    /// The fields `/v1/completions` and `/v1/chat/completions` share.
    private static func common(_ f: RequestFields, prompt: [TokenID], stopTokens: Set<TokenID>, defaultMaxTokens: Int?,
                               logprobs: Int?, model: ServedModel) throws(APIError) -> ParsedGeneration {
        if let n = try f.int("n"), n != 1 { throw APIError.invalid("only n = 1 is supported, got \(n)", param: "n") }
        if let bestOf = try f.int("best_of"), bestOf != 1 { throw APIError.invalid("only best_of = 1 is supported", param: "best_of") }
        _ = try f.string("model")
        guard !prompt.isEmpty else { throw APIError.invalid("the prompt is empty", param: "prompt") }
        guard prompt.count <= model.contextLength else {
            throw APIError.invalid("the prompt has \(prompt.count) tokens, longer than the context length \(model.contextLength)",
                                   param: "messages", code: "context_length_exceeded")
        }
        // Length: OpenAI's max_completion_tokens / max_tokens, llama-server's n_predict (−1: no limit).
        var maxTokens = defaultMaxTokens
        if let n = try f.int("n_predict", in: -1...Int.max) { maxTokens = n < 0 ? nil : n }
        if let n = try f.int("max_tokens", in: 0...Int.max) { maxTokens = n }
        if let n = try f.int("max_completion_tokens", in: 0...Int.max) { maxTokens = n }

        var sampling = SamplingOptions(temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1,
                                       seed: UInt64.random(in: 0...UInt64.max))
        if let t = try f.number("temperature", in: 0...2) { sampling.temperature = Float(t) }
        if let k = try f.int("top_k", in: 0...Int(Int32.max)) { sampling.topK = k }
        // top_p 0 (allowed by OpenAI) keeps only the most likely token.
        if let p = try f.number("top_p", in: 0...1) {
            if p == 0 { sampling.topK = 1 } else { sampling.topP = Float(p) }
        }
        if let p = try f.number("min_p", in: 0...1) { sampling.minP = Float(p) }
        if let r = try f.number("repetition_penalty", in: 1e-6...1e6) { sampling.repetitionPenalty = Float(r) }
        if let seed = try f.int("seed") { sampling.seed = UInt64(bitPattern: Int64(seed)) }
        let presence = try f.number("presence_penalty", in: -2...2) ?? 0
        let frequency = try f.number("frequency_penalty", in: -2...2) ?? 0

        var stops: [String] = []
        if let v = f.raw("stop") {
            switch v {
            case .string(let s): stops = [s]
            case .array(let items):
                guard items.count <= 16 else { throw APIError.invalid("at most 16 stop strings", param: "stop") }
                for item in items {
                    guard case .string(let s) = item else { throw APIError.invalid("'stop' must be a string or an array of strings", param: "stop") }
                    stops.append(s)
                }
            default: throw APIError.invalid("'stop' must be a string or an array of strings", param: "stop")
            }
        }
        let ignoreEOS = try f.bool("ignore_eos") ?? false
        let cachePrompt = try f.bool("cache_prompt") ?? true
        let stream = try f.bool("stream") ?? false
        var includeUsage = false
        if let options = f.raw("stream_options") {
            guard case .object = options else { throw APIError.invalid("'stream_options' must be an object", param: "stream_options") }
            includeUsage = try RequestFields(object: options).bool("include_usage") ?? false
        }
        let constraint = try responseFormat(f).map {
            TokenConstraint(grammar: $0, vocabulary: model.constraintVocabulary.vocabulary, cacheBytes: constraintMaskCacheBytes)
        }
        let request = GenerationRequest(
            promptTokens: prompt, maxTokens: maxTokens, sampling: sampling, presencePenalty: Float(presence),
            frequencyPenalty: Float(frequency), stopTokens: ignoreEOS ? [] : stopTokens, stopStrings: stops,
            logprobs: logprobs, cachePrompt: cachePrompt, constraint: constraint)
        return ParsedGeneration(request: request, stream: stream, includeUsage: includeUsage, echo: nil)
    }

    /// Memory for one request's cached token masks (32 KiB each on a 262,144-token vocabulary):
    /// a few hundred states, so that many concurrent constrained requests stay bounded.
    static let constraintMaskCacheBytes = 8 << 20

    /// The grammar asked for by OpenAI's `response_format` — `{"type": "text"}` (none),
    /// `{"type": "json_object"}` (any object; llama-server's optional `schema` member is honoured),
    /// `{"type": "json_schema", "json_schema": {"name": …, "schema": {…}, "strict": …}}` — or by
    /// llama-server's top-level `json_schema`. GBNF `grammar` is refused rather than ignored, and a
    /// schema outside the supported subset is a 400 naming the keyword.
    private static func responseFormat(_ f: RequestFields) throws(APIError) -> ByteGrammar? {
        func compile(_ schema: JSONValue, _ path: String) throws(APIError) -> ByteGrammar {
            do { return try ByteGrammar.jsonSchema(schema) } catch {
                throw APIError.invalid("\(path): \(error.message)", param: path == "json_schema" ? "json_schema" : "response_format")
            }
        }
        if f.raw("grammar") != nil {
            throw APIError.invalid("GBNF grammars are not supported; use response_format json_schema", param: "grammar")
        }
        var grammar: ByteGrammar?
        if let schema = f.raw("json_schema") {
            guard case .object = schema else { throw APIError.invalid("'json_schema' must be an object", param: "json_schema") }
            grammar = try compile(schema, "json_schema")
        }
        guard let format = f.raw("response_format") else { return grammar }
        guard case .object = format else { throw APIError.invalid("'response_format' must be an object", param: "response_format") }
        let r = RequestFields(object: format)
        guard let type = try r.string("type") else { throw APIError.invalid("response_format.type is required", param: "response_format") }
        guard grammar == nil || type == "text" else {
            throw APIError.invalid("give either response_format or json_schema, not both", param: "response_format")
        }
        switch type {
        case "text":
            return grammar
        case "json_object":
            guard let schema = r.raw("schema") else { return ByteGrammar.jsonObject() }
            guard case .object = schema else { throw APIError.invalid("response_format.schema must be an object", param: "response_format") }
            return try compile(schema, "response_format.schema")
        case "json_schema":
            guard let wrapper = r.raw("json_schema"), case .object = wrapper else {
                throw APIError.invalid("response_format.json_schema must be an object with the schema in 'schema'", param: "response_format")
            }
            let w = RequestFields(object: wrapper)
            _ = try w.string("name")
            _ = try w.bool("strict")
            // OpenAI makes `schema` optional: without one any JSON value is accepted.
            guard let schema = w.raw("schema") else { return ByteGrammar.jsonValue() }
            guard case .object = schema else {
                throw APIError.invalid("response_format.json_schema.schema must be an object", param: "response_format")
            }
            return try compile(schema, "response_format.json_schema.schema")
        default:
            throw APIError.invalid("response_format.type must be text, json_object or json_schema, got '\(type)'", param: "response_format")
        }
    }

    /// `POST /v1/completions`: `prompt` is a string, an array of token ids, or a one-element array of either.
    public static func completion(_ bytes: [UInt8], model: ServedModel) throws(APIError) -> ParsedGeneration {
        let f = try RequestFields(bytes)
        guard let promptValue = f.raw("prompt") else { throw APIError.invalid("'prompt' is required", param: "prompt") }
        var ids: [TokenID]
        var promptText: String?
        func tokenArray(_ items: [JSONValue]) throws(APIError) -> [TokenID] {
            var out: [TokenID] = []
            out.reserveCapacity(items.count)
            for item in items {
                guard case .number(let d) = item, d.rounded() == d, d >= 0, d < Double(model.vocabularySize) else {
                    throw APIError.invalid("prompt token ids must be integers in 0…\(model.vocabularySize - 1)", param: "prompt")
                }
                out.append(TokenID(d))
            }
            return out
        }
        switch promptValue {
        case .string(let s):
            promptText = s
            ids = model.tokenizer.encode(s)
        case .array(let items):
            if items.count == 1, case .string(let s) = items[0] {
                promptText = s
                ids = model.tokenizer.encode(s)
            } else if items.count == 1, case .array(let inner) = items[0] {
                ids = try tokenArray(inner)
            } else if items.contains(where: { if case .number = $0 { return false } else { return true } }) {
                throw APIError.invalid("several prompts in one request are not supported (n = 1 only)", param: "prompt")
            } else {
                ids = try tokenArray(items)
            }
        default:
            throw APIError.invalid("'prompt' must be a string or an array of token ids", param: "prompt")
        }
        if let suffix = try f.string("suffix"), !suffix.isEmpty { throw APIError.invalid("'suffix' is not supported", param: "suffix") }
        let logprobs = try f.int("logprobs", in: 0...20)
        var parsed = try common(f, prompt: ids, stopTokens: model.stopTokens, defaultMaxTokens: 16, logprobs: logprobs, model: model)
        if try f.bool("echo") == true {
            parsed.echo = promptText ?? ((try? model.tokenizer.text(of: ids)) ?? "")
        }
        return parsed
    }

    /// `POST /v1/chat/completions`: the messages through Gemma's chat template (that of
    /// google/gemma-3's `chat_template`: a system message opens the first user turn; user and
    /// assistant turns alternate; content is trimmed; the prompt ends with `<start_of_turn>model\n`).
    public static func chat(_ bytes: [UInt8], model: ServedModel) throws(APIError) -> ParsedGeneration {
        let f = try RequestFields(bytes)
        guard let gemma = model.tokenizer as? GemmaTokenizer, let endOfTurn = model.endOfTurn else {
            throw APIError.invalid("this model has no chat template (it is not a Gemma chat vocabulary); use /v1/completions", param: "messages",
                                   code: "chat_template_missing")
        }
        guard let messagesValue = f.raw("messages") else { throw APIError.invalid("'messages' is required", param: "messages") }
        guard case .array(let messages) = messagesValue, !messages.isEmpty else {
            throw APIError.invalid("'messages' must be a non-empty array", param: "messages")
        }
        var turns: [GemmaChatTemplate.Message] = []
        for (i, message) in messages.enumerated() {
            guard case .object = message else { throw APIError.invalid("messages[\(i)] must be an object", param: "messages") }
            let m = RequestFields(object: message)
            guard let role = try m.string("role") else { throw APIError.invalid("messages[\(i)].role is required", param: "messages") }
            guard ["system", "developer", "user", "assistant"].contains(role) else {
                throw APIError.invalid("messages[\(i)].role must be system, developer, user or assistant, got '\(role)'", param: "messages")
            }
            var content = ""
            switch m.raw("content") {
            case nil: if role != "assistant" { throw APIError.invalid("messages[\(i)].content is required", param: "messages") }
            case .string(let s)?: content = s
            case .array(let parts)?:
                for part in parts {
                    let p = RequestFields(object: part)
                    guard case .object = part, try p.string("type") == "text", let text = try p.string("text") else {
                        throw APIError.invalid("messages[\(i)].content: only text parts are supported", param: "messages")
                    }
                    content += text
                }
            default: throw APIError.invalid("messages[\(i)].content must be a string or an array of text parts", param: "messages")
            }
            turns.append(GemmaChatTemplate.Message(role: role, content: content))
        }
        let text: String
        do {
            text = try GemmaChatTemplate.segments(turns, addGenerationPrompt: true).map(\.text).joined()
        } catch {
            throw APIError.invalid(error.description, param: "messages")
        }
        let ids = gemma.encode(text, addBOS: true, parseSpecial: true)

        var logprobs: Int?
        let wantsLogprobs = try f.bool("logprobs") ?? false
        let top = try f.int("top_logprobs", in: 0...20)
        if wantsLogprobs { logprobs = top ?? 0 } else if let top, top > 0 {
            throw APIError.invalid("'top_logprobs' needs 'logprobs': true", param: "top_logprobs")
        }
        var stops = model.stopTokens
        stops.insert(endOfTurn)
        stops.insert(gemma.eosTokenID)
        return try common(f, prompt: ids, stopTokens: stops, defaultMaxTokens: nil, logprobs: logprobs, model: model)
    }
}

