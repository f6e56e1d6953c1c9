import Foundation
import Gemma3Model
import Gemma3Tokenizers

/// How much of a slot's cached tokens a new request may reuse.
public enum PromptCacheMode: String, Sendable, CaseIterable {
    /// Only whole prefill chunks that the slot computed by prefill at chunk-aligned positions: a
    /// fresh run computes exactly those chunks the same way, so a reply is bit for bit the reply
    /// without the cache (`gemma3 generate`'s). Reuse starts once a prompt passes one chunk.
    case exact
    /// The longest shared prefix, as llama-server: fastest, but positions computed by decode or in
    /// other chunks are not recomputed, so a reply may differ from the uncached one in the last bits
    /// (and, rarely, in its tokens).
    case prefix
    /// Never reuse.
    case off
}

/// What the HTTP layer sees of a scheduler, whatever its engine type.
public protocol GenerationScheduling: AnyObject, Sendable {
    /// Queues a generation. Its events arrive on the returned stream; `cancel` (or dropping the
    /// stream) frees its slot within one step. Throws when the queue is full or the server stops.
    func submit(_ request: GenerationRequest) throws(SubmissionError) -> GenerationTicket
    /// Requests waiting for a slot.
    var queueLength: Int { get }
    /// Slots running a request (prefilling or decoding).
    var activeSlots: Int { get }
    /// Positions of each slot's cache.
    var contextLength: Int { get }
    /// Slots in the pool.
    var slotCount: Int { get }
    /// Fails every waiting and running request and ends the scheduler thread (idempotent).
    func stop()
}

/// A submitted generation: its events, and how to cancel it.
public struct GenerationTicket: Sendable {
    public let events: AsyncStream<GenerationEvent>
    public let cancel: @Sendable () -> Void
}

/// Receives the scheduler's figures (the server's Prometheus metrics implement it).
public protocol SchedulerObserver: AnyObject, Sendable {
    /// After every change of the queue or the slots.
    func schedulerLoad(waiting: Int, active: Int)
    /// When a request's first token has been sampled, with the time since it was submitted.
    func firstToken(after seconds: Double)
    /// When a request ends (finished, failed or cancelled): its prompt, reused and generated tokens.
    func requestEnded(promptTokens: Int, cachedTokens: Int, generatedTokens: Int)
}

/// Continuous batching over a `BatchDecoding` pool, on one dedicated thread.
///
/// Each iteration of the loop: drop cancelled requests, admit waiting requests into free slots
/// (the slot whose cached tokens share the longest prefix with the prompt, which is then rewound
/// to that prefix so only the rest is prefilled), run at most one prefill chunk (so a new prompt
/// never holds up the decoding slots for more than one chunk), then one `decode` over every
/// decoding slot, and sample each. A step blocks for milliseconds to tens of milliseconds, which
/// is why it runs on its own thread rather than on the event loops or the cooperative pool.
public final class Scheduler<Decoder: BatchDecoding>: GenerationScheduling, @unchecked Sendable {
    /// The engine (touched only by the scheduler thread once `start` is called).
    public let decoder: Decoder
    public let tokenizer: any TextTokenizer
    /// Most requests waiting for a slot; more are refused with `SubmissionError.queueFull`.
    public let maxQueue: Int
    public let contextLength: Int
    public let slotCount: Int
    private let observer: (any SchedulerObserver)?

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var waiting: [Job] = []
    private var stopping = false
    private var started = false
    private var running = 0
    private var nextID: UInt64 = 0

    // Scheduler thread only.
    private var slots: [Slot]
    private var useCounter: UInt64 = 0
    private var admissionCounter: UInt64 = 0
    private let clock = ContinuousClock()

    private struct Slot {
        /// The tokens in this slot's cache, in order.
        var tokens: [TokenID] = []
        /// Leading positions written by full prefill chunks at chunk-aligned positions (the part
        /// `PromptCacheMode.exact` may reuse).
        var exactLength = 0
        var job: Job?
        var lastUsed: UInt64 = 0
    }

    /// One request, from submission to its last event.
    private final class Job: @unchecked Sendable {
        let id: UInt64
        let request: GenerationRequest
        let continuation: AsyncStream<GenerationEvent>.Continuation
        let submitted: ContinuousClock.Instant
        /// Guarded by the scheduler's lock.
        var cancelled = false
        // Scheduler thread only.
        var slot = -1
        var admission: UInt64 = 0
        var fed = 0
        var cached = 0
        var decoding = false
        var pendingToken: TokenID = 0
        var generated = 0
        var sampler: Sampler
        /// Sampling under the request's constraint (nil without one).
        let constrained: ConstrainedSampling?
        var counts: [TokenID: Int] = [:]
        var seen: [TokenID]
        var utf8 = StreamingUTF8Decoder()
        var stops: StopStringFilter
        var sawFirstToken = false
        let penalisesRepetition: Bool
        let penalisesPresence: Bool

        init(id: UInt64, request: GenerationRequest, vocabularySize: Int, continuation: AsyncStream<GenerationEvent>.Continuation, submitted: ContinuousClock.Instant) {
            self.id = id
            self.request = request
            self.continuation = continuation
            self.submitted = submitted
            sampler = Sampler(options: request.sampling)
            constrained = request.constraint.map { ConstrainedSampling(constraint: $0, vocabularySize: vocabularySize) }
            penalisesRepetition = request.sampling.repetitionPenalty != 1
            penalisesPresence = request.presencePenalty != 0 || request.frequencyPenalty != 0
            seen = penalisesRepetition ? request.promptTokens : []
            stops = StopStringFilter(request.stopStrings)
        }
    }

    /// - Parameters:
    ///   - decoder: the slot pool.
    ///   - tokenizer: turns generated ids into text (the model's).
    ///   - maxQueue: most requests waiting for a slot (≥ 0).
    ///   - observer: receives load, time-to-first-token and token counts.
    /// What a new request may reuse of a slot's cache.
    public let promptCache: PromptCacheMode

    public init(decoder: Decoder, tokenizer: any TextTokenizer, maxQueue: Int, promptCache: PromptCacheMode = .exact,
                observer: (any SchedulerObserver)? = nil) {
        self.decoder = decoder
        self.promptCache = promptCache
        self.tokenizer = tokenizer
        self.maxQueue = max(0, maxQueue)
        self.contextLength = decoder.contextLength
        self.slotCount = decoder.slotCount
        self.observer = observer
        slots = Array(repeating: Slot(), count: decoder.slotCount)
    }

    /// Starts the scheduler thread (later calls do nothing).
    public func start() {
        condition.lock()
        defer { condition.unlock() }
        guard !started, !stopping else { return }
        started = true
        let thread = Thread { [self] in self.loop() }
        thread.name = "gemma3-scheduler"
        thread.stackSize = 8 << 20
        thread.start()
    }

    public var queueLength: Int {
        condition.lock(); defer { condition.unlock() }
        return waiting.count
    }

    public var activeSlots: Int {
        condition.lock(); defer { condition.unlock() }
        return running
    }

    public func submit(_ request: GenerationRequest) throws(SubmissionError) -> GenerationTicket {
        let (stream, continuation) = AsyncStream.makeStream(of: GenerationEvent.self, bufferingPolicy: .unbounded)
        condition.lock()
        guard !stopping else {
            condition.unlock()
            throw .stopping
        }
        // A request waits only when every slot is taken (or about to be, by those already waiting).
        guard waiting.count < maxQueue || running + waiting.count < slotCount else {
            condition.unlock()
            throw .queueFull
        }
        nextID += 1
        let job = Job(id: nextID, request: request, vocabularySize: decoder.vocabularySize, continuation: continuation, submitted: clock.now)
        waiting.append(job)
        let load = (waiting.count, running)
        condition.signal()
        condition.unlock()
        observer?.schedulerLoad(waiting: load.0, active: load.1)
        let cancel: @Sendable () -> Void = { [weak self] in self?.cancel(job) }
        continuation.onTermination = { _ in cancel() }
        return GenerationTicket(events: stream, cancel: cancel)
    }

    private func cancel(_ job: Job) {
        condition.lock()
        if !job.cancelled {
            job.cancelled = true
            condition.signal()
        }
        condition.unlock()
    }

    public func stop() {
        condition.lock()
        stopping = true
        let wasStarted = started
        let orphans = wasStarted ? [] : waiting
        if !wasStarted { waiting.removeAll() }
        condition.signal()
        condition.unlock()
        for job in orphans { job.continuation.yield(.failed("the server is shutting down")); job.continuation.finish() }
    }

    // MARK: The loop

    private func loop() {
        while true {
            let hasActive = slots.contains { $0.job != nil }
            condition.lock()
            while !stopping && waiting.isEmpty && !hasActive { condition.wait() }
            if stopping {
                let queued = waiting
                waiting.removeAll()
                running = 0
                condition.unlock()
                for job in queued + slots.compactMap(\.job) {
                    job.continuation.yield(.failed("the server is shutting down"))
                    job.continuation.finish()
                }
                for i in slots.indices { slots[i].job = nil }
                observer?.schedulerLoad(waiting: 0, active: 0)
                return
            }
            var dropped: [Job] = []
            waiting.removeAll { job in
                if job.cancelled { dropped.append(job) }
                return job.cancelled
            }
            let cancelledSlots = slots.indices.filter { slots[$0].job?.cancelled == true }
            var free = slots.indices.filter { slots[$0].job == nil }.count + cancelledSlots.count
            var admitted: [Job] = []
            while free > 0 && !waiting.isEmpty {
                admitted.append(waiting.removeFirst())
                free -= 1
            }
            condition.unlock()

            for job in dropped {
                job.continuation.finish()
                observer?.requestEnded(promptTokens: 0, cachedTokens: 0, generatedTokens: 0)
            }
            for slot in cancelledSlots { release(slot) }
            for job in admitted { admit(job) }
            publishLoad()

            prefillStep()
            decodeStep()
            publishLoad()
        }
    }

    private func publishLoad() {
        let active = slots.reduce(0) { $0 + ($1.job == nil ? 0 : 1) }
        condition.lock()
        running = active
        let queued = waiting.count
        condition.unlock()
        observer?.schedulerLoad(waiting: queued, active: active)
    }

    /// Ends a cancelled request: its slot keeps the tokens it fed, for a later prefix match.
    private func release(_ slot: Int) {
        guard let job = slots[slot].job else { return }
        slots[slot].job = nil
        useCounter += 1
        slots[slot].lastUsed = useCounter
        job.continuation.finish()
        observer?.requestEnded(promptTokens: job.request.promptTokens.count, cachedTokens: job.cached, generatedTokens: job.generated)
    }

    private static func commonPrefix(_ a: [TokenID], _ b: [TokenID]) -> Int {
        let n = min(a.count, b.count)
        var i = 0
        while i < n && a[i] == b[i] { i += 1 }
        return i
    }

    /// Puts `job` into the free slot whose cache shares the longest prefix with its prompt (the
    /// least recently used on ties) and rewinds that cache to the part it can reuse.
    private func admit(_ job: Job) {
        let prompt = job.request.promptTokens
        // Free slots, longest shared prefix first, least recently used first on ties.
        let chunk = decoder.prefillChunk
        func reusable(_ s: Int) -> Int {
            guard job.request.cachePrompt else { return 0 }
            switch promptCache {
            case .off: return 0
            case .prefix: return Self.commonPrefix(slots[s].tokens, prompt)
            case .exact:
                // Whole aligned chunks only, and never the chunk that holds the last prompt token
                // (it is fed again for its logits, so it must be computed as a fresh run would).
                let shared = min(Self.commonPrefix(slots[s].tokens, prompt), slots[s].exactLength, prompt.count - 1)
                return shared / chunk * chunk
            }
        }
        let candidates = slots.indices.filter { slots[$0].job == nil }
            .map { s in (slot: s, shared: reusable(s)) }
            .sorted { $0.shared != $1.shared ? $0.shared > $1.shared : slots[$0.slot].lastUsed < slots[$1.slot].lastUsed }
        precondition(!candidates.isEmpty, "admitted without a free slot")
        // The first slot that can keep its shared prefix (an engine may refuse some rewinds, and
        // then keeps its cache for a later request); else the least recently used one, emptied.
        // At least the last prompt token is fed again: its logits start the generation.
        var best = -1
        var reuse = 0
        for c in candidates where c.shared > 0 {
            let r = min(c.shared, prompt.count - 1)
            if r > 0 && decoder.rewind(slot: c.slot, to: r) {
                best = c.slot
                reuse = r
                break
            }
            // A refused rewind may still have shortened the cache.
            let kept = min(decoder.cachedLength(slot: c.slot), slots[c.slot].tokens.count)
            slots[c.slot].tokens.removeLast(slots[c.slot].tokens.count - kept)
            slots[c.slot].exactLength = min(slots[c.slot].exactLength, kept / chunk * chunk)
        }
        if best < 0 {
            best = candidates.min { slots[$0.slot].lastUsed < slots[$1.slot].lastUsed }!.slot
            _ = decoder.rewind(slot: best, to: 0)
            reuse = 0
        }
        slots[best].tokens.removeLast(slots[best].tokens.count - reuse)
        slots[best].exactLength = min(slots[best].exactLength, reuse / chunk * chunk)
        slots[best].job = job
        job.slot = best
        job.fed = reuse
        job.cached = reuse
        admissionCounter += 1
        job.admission = admissionCounter
        if job.request.maxTokens == 0 { finish(job, .length) }
    }

    /// One prefill chunk for the request admitted first among those still prefilling.
    private func prefillStep() {
        var next: Job?
        for slot in slots {
            guard let job = slot.job, !job.decoding else { continue }
            if next == nil || job.admission < next!.admission { next = job }
        }
        guard let job = next else { return }
        let prompt = job.request.promptTokens
        let end = min(prompt.count, job.fed + decoder.prefillChunk)
        let chunk = Array(prompt[job.fed..<end])
        let last = end == prompt.count
        do {
            let logits = try decoder.prefill(slot: job.slot, tokens: chunk, wantsLogits: last)
            // A full chunk at an aligned position after exact positions extends them.
            if job.fed == slots[job.slot].exactLength && job.fed % decoder.prefillChunk == 0 && chunk.count == decoder.prefillChunk {
                slots[job.slot].exactLength = end
            }
            slots[job.slot].tokens += chunk
            job.fed = end
            if last {
                guard let logits else { throw GenerationError("the engine returned no logits after the prompt") }
                sampleAndEmit(job, logits)
            }
        } catch {
            fail(job, error)
        }
    }

    /// One decode over every slot that has a sampled token to feed.
    private func decodeStep() {
        let jobs = slots.compactMap { $0.job }.filter { $0.decoding }.sorted { $0.slot < $1.slot }
        guard !jobs.isEmpty else { return }
        let slotIDs = jobs.map(\.slot)
        let tokens = jobs.map(\.pendingToken)
        let logits: UnsafeMutableBufferPointer<Float>
        do {
            logits = try decoder.decode(slots: slotIDs, tokens: tokens)
        } catch {
            for job in jobs { fail(job, error) }
            return
        }
        let V = decoder.vocabularySize
        for (i, job) in jobs.enumerated() {
            slots[job.slot].tokens.append(tokens[i])
            sampleAndEmit(job, UnsafeMutableBufferPointer(rebasing: logits[(i * V)..<((i + 1) * V)]))
        }
    }

    /// Samples the next token of `job` from `logits`, streams its text, and ends the request or
    /// queues the token for the next decode. The stop rules are `Generator.generate`'s.
    private func sampleAndEmit(_ job: Job, _ logits: UnsafeMutableBufferPointer<Float>) {
        let request = job.request
        // Non-finite weights: every logit after the prompt, then the first of each step (`Generator`'s check).
        guard job.sawFirstToken ? logits[0].isFinite : logits.allSatisfy({ $0.isFinite }) else {
            fail(job, GenerationError.nonFiniteLogits)
            return
        }
        if job.penalisesPresence {
            for (token, count) in job.counts {
                logits[Int(token)] -= Float(count) * request.frequencyPenalty + request.presencePenalty
            }
        }
        let token: TokenID
        if let constrained = job.constrained {
            // Tokens this request may still produce, this one included (`Generator.generate`'s rule).
            let remaining = min((request.maxTokens ?? Int.max) - job.generated,
                                decoder.contextLength - decoder.cachedLength(slot: job.slot) + 1)
            do {
                guard let next = try constrained.sample(logits, sampler: &job.sampler, seen: job.seen, stopTokens: request.stopTokens,
                                                        remainingTokens: remaining) else {
                    finish(job, .stop)
                    return
                }
                token = next
            } catch {
                fail(job, error)
                return
            }
        } else {
            token = job.sampler.sample(logits, seen: job.seen)
        }
        var entries: [GeneratedTokenLogprobs] = []
        job.generated += 1
        if job.penalisesPresence { job.counts[token, default: 0] += 1 }
        if job.penalisesRepetition { job.seen.append(token) }
        if !job.sawFirstToken {
            job.sawFirstToken = true
            observer?.firstToken(after: Self.seconds(clock.now - job.submitted))
        }
        if request.stopTokens.contains(token) {
            finish(job, .stop)
            return
        }
        guard let bytes = tokenizer.bytes(of: token) else {
            fail(job, GenerationError("the model produced token \(token), which the tokenizer does not know"))
            return
        }
        if let n = request.logprobs {
            entries.append(logprobs(logits, chosen: token, chosenBytes: bytes, top: n))
        }
        let (safe, completed) = job.stops.push(job.utf8.push(bytes))
        if !safe.isEmpty || !entries.isEmpty { job.continuation.yield(.text(safe, entries)) }
        if completed {
            finish(job, .stop, flush: false)
            return
        }
        if job.constrained?.isFinished == true {
            // The value is complete and nothing can extend it.
            finish(job, .stop)
            return
        }
        if let max = request.maxTokens, job.generated >= max {
            finish(job, .length)
            return
        }
        if decoder.cachedLength(slot: job.slot) >= decoder.contextLength {
            finish(job, .length)
            return
        }
        job.pendingToken = token
        job.decoding = true
    }

    /// Sends the text still held back (unless a stop string ended it), the usage, and frees the slot.
    private func finish(_ job: Job, _ reason: FinishReason, flush: Bool = true) {
        var reason = reason
        if flush {
            let (safe, stopped) = job.stops.push(job.utf8.finish())
            var tail = safe
            if stopped { reason = .stop } else { tail += job.stops.flush() }
            if !tail.isEmpty { job.continuation.yield(.text(tail, [])) }
        }
        let usage = GenerationUsage(promptTokens: job.request.promptTokens.count, completionTokens: job.generated, cachedTokens: job.cached)
        job.continuation.yield(.finished(reason, usage))
        release(job.slot)
    }

    private func fail(_ job: Job, _ error: any Error) {
        job.continuation.yield(.failed("generation failed: \(error)"))
        if job.slot >= 0 {
            // The cache may hold part of a chunk: start the slot afresh.
            _ = decoder.rewind(slot: job.slot, to: 0)
            slots[job.slot].tokens.removeAll()
            release(job.slot)
        } else {
            job.continuation.finish()
        }
    }

    /// Log-softmax of `logits` at `chosen` and the `top` most likely tokens.
    private func logprobs(_ logits: UnsafeMutableBufferPointer<Float>, chosen: TokenID, chosenBytes: [UInt8], top: Int) -> GeneratedTokenLogprobs {
        var maxLogit = -Float.infinity
        for v in logits where v > maxLogit { maxLogit = v }
        var sum = 0.0
        for v in logits { sum += exp(Double(v - maxLogit)) }
        let lse = Double(maxLogit) + log(sum)
        func lp(_ t: Int) -> Float { Float(Double(logits[t]) - lse) }
        var best: [Int] = []
        if top > 0 {
            let limit = min(top, tokenizer.vocabularySize, logits.count)
            for i in 0..<min(logits.count, tokenizer.vocabularySize) {
                let v = logits[i]
                if best.count == limit, let last = best.last, v <= logits[last] { continue }
                var k = best.count
                while k > 0 && logits[best[k - 1]] < v { k -= 1 }
                best.insert(i, at: k)
                if best.count > limit { best.removeLast() }
            }
        }
        let entries = best.map { TokenLogprob(token: TokenID($0), bytes: tokenizer.bytes(of: TokenID($0)) ?? [], logprob: lp($0)) }
        return GeneratedTokenLogprobs(chosen: TokenLogprob(token: chosen, bytes: chosenBytes, logprob: lp(Int(chosen))), top: entries)
    }

    private static func seconds(_ d: Duration) -> Double {
        let c = d.components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
