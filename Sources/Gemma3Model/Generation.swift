import Foundation
import Gemma3Tokenizers

/// Limits and stop conditions of one generation.
public struct GenerationOptions: Sendable {
    /// At most this many new tokens (fewer when a stop condition or the context end comes first).
    public var maxNewTokens: Int
    public var sampling: SamplingOptions
    /// Generation ends after producing one of these (e.g. 50256 `<|endoftext|>`); the id is kept
    /// in `generatedIds` but not in the text.
    public var stopTokenIds: Set<TokenID>
    /// Generation ends when the text contains one of these; the text is cut before it.
    public var stopStrings: [String]
    /// Structured output: only tokens that keep the text a valid prefix of the grammar's language
    /// are sampled, stop tokens only once the value is complete, and generation ends when nothing
    /// can extend it (`StopReason.valueComplete`). Within `maxNewTokens` (and the context) the
    /// value is always finished when the limit allows it at all. Reset at the start of each
    /// generation; not shared between concurrent generations.
    public var constraint: TokenConstraint?

    public init(maxNewTokens: Int = 128, sampling: SamplingOptions = .greedy, stopTokenIds: Set<TokenID> = [], stopStrings: [String] = [],
                constraint: TokenConstraint? = nil) {
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.stopTokenIds = stopTokenIds
        self.stopStrings = stopStrings.filter { !$0.isEmpty }
        self.constraint = constraint
    }
}

/// Why generation ended.
public enum StopReason: String, Sendable, Codable {
    case maxNewTokens = "max_new_tokens"
    case stopToken = "stop_token"
    case stopString = "stop_string"
    case contextFull = "context_full"
    /// The constrained value is complete and nothing can extend it.
    case valueComplete = "value_complete"
}

/// The outcome of one generation, with its timings.
public struct GenerationResult: Sendable {
    public var promptIds: [TokenID]
    public var generatedIds: [TokenID]
    /// Text of the generated tokens (without a stop token, cut before a stop string).
    public var text: String
    public var stopReason: StopReason
    /// Prompt processing until the first token's logits (time to first token, without sampling).
    public var prefillSeconds: Double
    /// Wall time after the prefill: every decode step plus sampling and detokenization.
    public var decodeSeconds: Double
    /// Number of single-token decode steps (generated tokens after the first that needed a forward pass).
    public var decodeSteps: Int

    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptIds.count) / prefillSeconds : 0 }
    public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(decodeSteps) / decodeSeconds : 0 }
}

/// Prompt → streamed text: prefill, then sample and decode one token at a time. The one decode
/// loop of the package: single prompts start from an empty cache, conversations (`GemmaChatSession`)
/// continue from the cache.
public final class Generator: @unchecked Sendable {
    public let engine: InferenceEngine
    /// Turns ids into text; nil generates ids only (`GenerationResult.text` stays empty).
    public let tokenizer: (any TextTokenizer)?
    /// Every token in the engine's cache, in order: prompts and generated tokens that were fed back.
    public private(set) var cachedTokens: [TokenID] = []

    public init(engine: InferenceEngine, tokenizer: (any TextTokenizer)?) {
        self.engine = engine
        self.tokenizer = tokenizer
        engine.reset()
    }

    /// Encodes `prompt` with the tokenizer and generates from an empty cache.
    public func generate(prompt: String, options: GenerationOptions, onText: ((String) -> Void)? = nil) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw GenerationError("the prompt is empty") }
        guard let tokenizer else { throw GenerationError("this generator has no tokenizer: pass prompt ids") }
        return try generate(promptIds: tokenizer.encode(prompt), options: options, onText: onText)
    }

    /// Generates after `promptIds`. `onText` receives the text as it is produced, in pieces that
    /// never split a UTF-8 character and never show part of a stop string.
    ///
    /// `continuing: false` starts from an empty cache, and the last generated token is not fed
    /// back (nothing would read its logits). `continuing: true` appends `promptIds` to what the
    /// cache holds, and on return every generated token except a stop token is in the cache, so
    /// the next call continues the same sequence (`cachedTokens`).
    public func generate(promptIds: [TokenID], options: GenerationOptions, continuing: Bool = false,
                         onText: ((String) -> Void)? = nil) throws -> GenerationResult {
        guard !promptIds.isEmpty else { throw GenerationError("the prompt is empty (no tokens)") }
        if !continuing {
            engine.reset()
            cachedTokens.removeAll(keepingCapacity: true)
        }
        guard engine.position + promptIds.count <= engine.maxContext else {
            throw GenerationError(engine.position == 0
                ? "the prompt has \(promptIds.count) tokens, longer than the context length \(engine.maxContext)"
                : "the sequence (\(engine.position + promptIds.count) tokens) no longer fits the context of \(engine.maxContext)")
        }
        guard options.maxNewTokens >= 0 else { throw GenerationError("--max-new-tokens must be ≥ 0, got \(options.maxNewTokens)") }
        try options.sampling.validate()

        let penalised = options.sampling.repetitionPenalty != 1
        let constraint = options.constraint
        // Under a constraint `ConstrainedSampling` applies the penalty to the full logits before it
        // gathers the allowed ones.
        let samplerOptions = options.sampling
        var sampler = Sampler(options: samplerOptions)
        let constrained = constraint.map { ConstrainedSampling(constraint: $0, vocabularySize: engine.weights.config.vocabSize) }
        var seen = penalised ? cachedTokens + promptIds : []
        var generated: [TokenID] = []
        var utf8 = StreamingUTF8Decoder()
        var stops = StopStringFilter(options.stopStrings)
        var text = ""
        var reason = StopReason.maxNewTokens
        func emit(_ piece: String) {
            guard !piece.isEmpty else { return }
            text += piece
            onText?(piece)
        }

        let clock = ContinuousClock()
        let t0 = clock.now
        var logits = try engine.prefill(promptIds)
        // Non-finite weights make every logit NaN (or some rows of the head): say so instead of
        // sampling garbage. All of them once; afterwards a NaN reaching the hidden state shows in
        // every logit, so the first one is checked per step.
        guard logits.allSatisfy({ $0.isFinite }) else { throw GenerationError.nonFiniteLogits }
        cachedTokens += promptIds
        let prefillSeconds = Self.seconds(clock.now - t0)
        let decodeStart = clock.now
        var steps = 0

        while generated.count < options.maxNewTokens {
            let token: TokenID
            if let constrained {
                // Tokens this generation may still produce, this one included.
                let remaining = min(options.maxNewTokens - generated.count, engine.maxContext - engine.position + 1)
                guard let next = try constrained.sample(logits, sampler: &sampler, seen: seen, stopTokens: options.stopTokenIds,
                                                        remainingTokens: remaining) else {
                    // Complete, and nothing may follow: the value is done.
                    reason = .valueComplete
                    break
                }
                token = next
            } else {
                token = sampler.sample(logits, seen: seen)
            }
            generated.append(token)
            if penalised { seen.append(token) }
            if options.stopTokenIds.contains(token) {
                reason = .stopToken
                break
            }
            var stopped = false
            if let tokenizer {
                guard let bytes = tokenizer.bytes(of: token) else {
                    throw GenerationError("the model produced token \(token), which the tokenizer does not know (vocabulary mismatch?)")
                }
                let (safe, completed) = stops.push(utf8.push(bytes))
                emit(safe)
                stopped = completed
            }
            let valueDone = !stopped && constrained?.isFinished == true
            if valueDone {
                // Nothing can follow: end now (a conversation still feeds the token back below).
                reason = .valueComplete
                if !continuing { break }
            }
            // A one-shot generation stops here when nothing will read the next logits.
            if !continuing && (stopped || generated.count == options.maxNewTokens) {
                if stopped { reason = .stopString }
                break
            }
            guard engine.position < engine.maxContext else {
                reason = .contextFull
                break
            }
            logits = try engine.decode(token)
            guard logits[0].isFinite else { throw GenerationError.nonFiniteLogits }
            cachedTokens.append(token)
            steps += 1
            if stopped {
                reason = .stopString
                break
            }
            if valueDone { break }
        }
        let decodeSeconds = steps > 0 ? Self.seconds(clock.now - decodeStart) : 0
        if reason != .stopString {
            let (safe, stopped) = stops.push(utf8.finish())
            emit(safe)
            if stopped { reason = .stopString } else { emit(stops.flush()) }
        }
        return GenerationResult(promptIds: promptIds, generatedIds: generated, text: text, stopReason: reason,
                                prefillSeconds: prefillSeconds, decodeSeconds: decodeSeconds, decodeSteps: steps)
    }

    /// Clears the cache (the next `generate(…, continuing: true)` starts a new sequence).
    public func reset() {
        engine.reset()
        cachedTokens.removeAll(keepingCapacity: true)
    }

    static func seconds(_ d: Duration) -> Double {
        let c = d.components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}

/// Sampling under a structured-output constraint: the logits of the tokens the constraint allows
/// (and the stop tokens once the value is complete) are gathered into one short buffer in id order,
/// so the sampler's filters and its draw run over the allowed tokens only. The one constrained
/// sampling step of the package (`Generator` and the server's scheduler); one per generation.
public final class ConstrainedSampling: @unchecked Sendable {
    /// The constraint, advanced past every token `sample` returns (stop tokens excepted).
    public let constraint: TokenConstraint
    private let ids: UnsafeMutablePointer<TokenID>
    private let logits: UnsafeMutablePointer<Float>
    private let capacity: Int

    /// - Parameters:
    ///   - constraint: reset here, so a constraint may be reused by consecutive generations.
    ///   - vocabularySize: the length of the logits vectors (`Gemma3Config.vocabSize`).
    public init(constraint: TokenConstraint, vocabularySize: Int) {
        self.constraint = constraint
        capacity = max(1, vocabularySize)
        ids = .allocate(capacity: capacity)
        logits = .allocate(capacity: capacity)
        constraint.reset()
    }

    deinit {
        ids.deallocate()
        logits.deallocate()
    }

    /// Whether the value is complete and nothing can extend it: generation ends here.
    public var isFinished: Bool { constraint.isComplete && !constraint.canContinue }

    /// Picks the next token among those the constraint allows, or returns nil when the value is
    /// done (complete, and neither a continuation nor a stop token is allowed).
    ///
    /// The repetition penalty (`sampler.options.repetitionPenalty` over `seen`) is applied to the
    /// full `logits` first, as an unconstrained step would; `logits` is modified. `stopTokens` may be
    /// sampled only once the value is complete. `remainingTokens` (this one included) lets the
    /// constraint keep only tokens after which the value can still be closed in time.
    public func sample(_ all: UnsafeMutableBufferPointer<Float>, sampler: inout Sampler, seen: [TokenID],
                       stopTokens: Set<TokenID>, remainingTokens: Int) throws(GrammarError) -> TokenID? {
        if isFinished { return nil }
        Sampler.applyRepetitionPenalty(all, seen: seen, penalty: sampler.options.repetitionPenalty)
        let mask = constraint.allowedTokens(remainingTokens: remainingTokens)
        let n = gather(all, mask: mask, extra: constraint.isComplete ? stopTokens : [])
        guard n > 0 else { return nil }
        let token = ids[Int(sampler.sample(UnsafeMutableBufferPointer(start: logits, count: n), seen: []))]
        if !stopTokens.contains(token) { try constraint.advance(token) }
        return token
    }

    /// Gathers the allowed tokens' logits (mask bits, plus `extra` ids); returns how many.
    private func gather(_ all: UnsafeMutableBufferPointer<Float>, mask: TokenMask, extra: Set<TokenID>) -> Int {
        var n = 0
        let limit = min(all.count, capacity)
        var extraSorted = extra.filter { $0 >= 0 && Int($0) < limit && !mask.contains($0) }.sorted()[...]
        mask.words.withUnsafeBufferPointer { words in
            for w in 0..<min(words.count, (limit + 63) / 64) {
                var bits = words[w]
                // Inside a string nearly every word is full: copy its 64 logits in one go.
                if bits == ~0, w * 64 + 64 <= limit, extraSorted.first.map({ Int($0) >= w * 64 }) ?? true {
                    let base = w * 64
                    (logits + n).update(from: all.baseAddress! + base, count: 64)
                    for k in 0..<64 { ids[n + k] = TokenID(base + k) }
                    n += 64
                    continue
                }
                while bits != 0 {
                    let id = w * 64 + bits.trailingZeroBitCount
                    bits &= bits - 1
                    guard id < limit else { break }
                    while let e = extraSorted.first, Int(e) < id {
                        ids[n] = e; logits[n] = all[Int(e)]; n += 1
                        extraSorted.removeFirst()
                    }
                    ids[n] = TokenID(id)
                    logits[n] = all[id]
                    n += 1
                }
            }
        }
        for e in extraSorted { ids[n] = e; logits[n] = all[Int(e)]; n += 1 }
        return n
    }
}

/// Holds back the end of the streamed text while it could still be the beginning of a stop string,
/// and cuts the text where a stop string appears.
public struct StopStringFilter: Sendable {
    private let stops: [[Unicode.Scalar]]
    private var pending: [Unicode.Scalar] = []

    public init(_ stopStrings: [String]) {
        stops = stopStrings.filter { !$0.isEmpty }.map { Array($0.unicodeScalars) }
    }

    /// Adds text; returns the part that is safe to show and whether a stop string was completed
    /// (then the returned text ends just before it).
    public mutating func push(_ text: String) -> (String, Bool) {
        guard !stops.isEmpty else { return (text, false) }
        pending.append(contentsOf: text.unicodeScalars)
        // Earliest occurrence of any stop string.
        var cut: Int? = nil
        for s in stops where s.count <= pending.count {
            var i = 0
            while i + s.count <= pending.count && i < (cut ?? Int.max) {
                if pending[i] == s[0] && pending[i..<(i + s.count)].elementsEqual(s) {
                    cut = i
                    break
                }
                i += 1
            }
        }
        if let cut {
            let out = Self.string(pending[..<cut])
            pending.removeAll()
            return (out, true)
        }
        // Keep the longest suffix that is a proper prefix of a stop string.
        var hold = 0
        for s in stops {
            var k = min(s.count - 1, pending.count)
            while k > hold {
                if pending[(pending.count - k)...].elementsEqual(s[..<k]) { hold = k; break }
                k -= 1
            }
        }
        let out = Self.string(pending[..<(pending.count - hold)])
        pending.removeFirst(pending.count - hold)
        return (out, false)
    }

    /// Whatever is still held back (at the end of generation).
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return Self.string(pending[...])
    }

    private static func string(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: scalars)
        return String(s)
    }
}
