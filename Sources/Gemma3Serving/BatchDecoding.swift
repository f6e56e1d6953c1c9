import Gemma3Model
import Gemma3Tokenizers

/// The engine seam of the server: a pool of `slotCount` sequences (each with its own KV cache of
/// `contextLength` positions) that are prefilled one at a time and decoded together.
///
/// The scheduler (`Scheduler`) is written against this protocol only. `SequentialBatchDecoder`
/// implements it over one `InferenceEngine` per slot; a batched engine, whose `decode` reads the
/// weights once for all slots, plugs in with the same members.
///
/// Not thread-safe: one thread (the scheduler's) calls every member.
public protocol BatchDecoding: AnyObject, SendableMetatype {
    /// Number of sequences the pool holds.
    var slotCount: Int { get }
    /// Positions of each slot's KV cache (prompt + generated tokens).
    var contextLength: Int { get }
    /// Most tokens one `prefill` call accepts.
    var prefillChunk: Int { get }
    /// Logits per row (the model's vocabulary, which may exceed the tokenizer's).
    var vocabularySize: Int { get }
    /// Positions currently in `slot`'s cache.
    func cachedLength(slot: Int) -> Int
    /// Keeps the first `length` positions of `slot`'s cache and forgets the rest. Returns false
    /// when that prefix cannot be kept (the scheduler then reads `cachedLength` again); `rewind(slot, to: 0)` always works.
    func rewind(slot: Int, to length: Int) -> Bool
    /// Appends 1…`prefillChunk` tokens to `slot`'s cache; with `wantsLogits`, returns the logits
    /// after the last of them (a view of an engine buffer, valid until the next call), else nil.
    func prefill(slot: Int, tokens: [TokenID], wantsLogits: Bool) throws -> UnsafeMutableBufferPointer<Float>?
    /// Appends `tokens[i]` to `slots[i]`'s cache for every i (distinct slots) and returns their
    /// logits, row i for `slots[i]`: `[slots.count × vocabularySize]`, valid until the next call.
    func decode(slots: [Int], tokens: [TokenID]) throws -> UnsafeMutableBufferPointer<Float>
}

/// `BatchDecoding` over one `InferenceEngine` per slot: `decode` runs the slots one after the
/// other (the weights are read once per slot), so every sequence's arithmetic is exactly that of
/// `gemma3 generate`. A cache can be rewound only to 0 or to its current length (the engine's
/// sliding layers are ring buffers that have overwritten older positions).
public final class SequentialBatchDecoder: BatchDecoding {
    public let slotCount: Int
    public let contextLength: Int
    public let prefillChunk: Int
    public let vocabularySize: Int
    private let engines: [InferenceEngine]
    private let logits: UnsafeMutablePointer<Float>

    /// - Parameters:
    ///   - weights: the model (shared by every slot).
    ///   - slots: sequences decoded together (≥ 1).
    ///   - context: positions per slot (at most the model's `max_position_embeddings`).
    ///   - prefillChunk: tokens per prefill call (bounded by `context`).
    public init(weights: InferenceWeights, slots: Int, context: Int, prefillChunk: Int = 512) throws {
        guard slots >= 1 else { throw GenerationError("the number of slots must be ≥ 1, got \(slots)") }
        engines = try (0..<slots).map { _ in try InferenceEngine(weights: weights, maxContext: context, prefillChunk: prefillChunk) }
        slotCount = slots
        contextLength = engines[0].maxContext
        self.prefillChunk = engines[0].prefillChunk
        vocabularySize = weights.config.vocabSize
        logits = .allocate(capacity: slots * vocabularySize)
        logits.initialize(repeating: 0, count: slots * vocabularySize)
    }

    deinit { logits.deallocate() }

    public func cachedLength(slot: Int) -> Int { engines[slot].position }

    public func rewind(slot: Int, to length: Int) -> Bool {
        let engine = engines[slot]
        if length == engine.position { return true }
        if length == 0 {
            engine.reset()
            return true
        }
        return false
    }

    public func prefill(slot: Int, tokens: [TokenID], wantsLogits: Bool) throws -> UnsafeMutableBufferPointer<Float>? {
        guard !tokens.isEmpty, tokens.count <= prefillChunk else {
            throw GenerationError("prefill takes 1…\(prefillChunk) tokens, got \(tokens.count)")
        }
        let engine = engines[slot]
        guard engine.position + tokens.count <= contextLength else {
            throw GenerationError("slot \(slot): \(engine.position + tokens.count) positions exceed the context of \(contextLength)")
        }
        let out = try engine.prefill(tokens)
        return wantsLogits ? out : nil
    }

    public func decode(slots: [Int], tokens: [TokenID]) throws -> UnsafeMutableBufferPointer<Float> {
        guard slots.count == tokens.count, slots.count <= slotCount else {
            throw GenerationError("decode: \(slots.count) slots for \(tokens.count) tokens (pool of \(slotCount))")
        }
        for (i, slot) in slots.enumerated() {
            let engine = engines[slot]
            guard engine.position < contextLength else {
                throw GenerationError("slot \(slot) is full (\(contextLength) positions)")
            }
            let row = try engine.decode(tokens[i])
            (logits + i * vocabularySize).update(from: row.baseAddress!, count: vocabularySize)
        }
        return UnsafeMutableBufferPointer(start: logits, count: slots.count * vocabularySize)
    }
}
