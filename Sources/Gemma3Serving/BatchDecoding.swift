import Gemma3Model
import Gemma3Tokenizers

/// The engine seam of the server: a pool of `slotCount` sequences (each with its own KV cache of
/// `contextLength` positions) that are prefilled one at a time and decoded together.
///
/// The scheduler (`Scheduler`) is written against this protocol only. `BatchedEngine` (Gemma3Model)
/// implements it: its `decode` reads the weights once for all slots, and every slot's logits are
/// bit for bit those of a lone `InferenceEngine`.
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
