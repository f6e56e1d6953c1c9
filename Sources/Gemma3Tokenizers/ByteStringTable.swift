// Hash tables keyed by short byte strings: the immutable vocabulary (bytes -> token id and merge
// rank) shared by all threads, and the mutable per-call cache of BPE results.
//
// Keys are hashed from their first 8 bytes (loaded as one little-endian word, kept in the slot so
// most probes never touch the key arena), their length, and their remaining bytes.

@usableFromInline let hashMultiplier: UInt64 = 0x9E37_79B9_7F4A_7C15

/// Loads `length` (0...8) bytes at `p` as a little-endian word, zero-padded. Reads 8 bytes at once
/// when `p + 8 <= end`, so callers pass the end of the readable buffer.
@inline(__always) @usableFromInline
func loadWord(_ p: UnsafePointer<UInt8>, _ length: Int, end: UnsafePointer<UInt8>) -> UInt64 {
    if length >= 8 {
        return UInt64(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: UInt64.self))
    }
    if p + 8 <= end {
        let word = UInt64(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: UInt64.self))
        return word & ((1 << UInt64(8 * length)) &- 1)
    }
    var word: UInt64 = 0
    var k = 0
    while k < length {
        word |= UInt64(p[k]) << UInt64(8 * k)
        k += 1
    }
    return word
}

/// Hash of a byte string whose first word (`prefix`, see `loadWord`) is already loaded.
@inline(__always) @usableFromInline
func hashBytes(_ p: UnsafePointer<UInt8>, _ length: Int, prefix: UInt64, end: UnsafePointer<UInt8>) -> UInt64 {
    var h = (prefix ^ (UInt64(truncatingIfNeeded: length) &* 0xFF51_AFD7_ED55_8CCD)) &* hashMultiplier
    if length > 8 {
        var k = 8
        while k < length {
            let word = loadWord(p + k, min(8, length - k), end: end)
            h = (h ^ (h >> 29) ^ word) &* 0xBF58_476D_1CE4_E5B9
            k += 8
        }
    }
    return h ^ (h >> 32)
}

/// One slot of `VocabularyTable`: the first 8 key bytes, the key length (0 = empty slot), the token
/// id, its merge rank, and where the full key lies in the arena.
@usableFromInline struct VocabularySlot {
    @usableFromInline var prefix: UInt64 = 0
    @usableFromInline var length: Int32 = 0
    @usableFromInline var id: Int32 = -1
    @usableFromInline var rank: Int32 = Int32.max
    @usableFromInline var keyOffset: Int32 = 0
}

/// Open-addressing table from the bytes of every byte-level token to its id and merge rank
/// (`Int32.max` for tokens that BPE never produces). Owns its memory; filled while the tokenizer
/// is built and never mutated afterwards, so all encoding threads share it without locks.
@usableFromInline final class VocabularyTable: @unchecked Sendable {
    @usableFromInline let slots: UnsafeMutablePointer<VocabularySlot>
    @usableFromInline let mask: Int
    /// Concatenated key bytes, followed by 8 bytes of padding so word loads never leave it.
    @usableFromInline let keys: UnsafeMutablePointer<UInt8>
    let keyCapacity: Int

    /// A table of the keys `keyBytes[entry.offset ..< entry.offset + entry.length]` (non-empty),
    /// all with rank `Int32.max` until `setRank`. A key that repeats keeps its first id.
    init(keyBytes: [UInt8], entries: [(offset: Int32, length: Int32, id: Int32)]) {
        var capacity = 16
        while capacity < entries.count * 5 / 2 { capacity <<= 1 }
        mask = capacity - 1
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: VocabularySlot(), count: capacity)
        keyCapacity = keyBytes.count + 8
        keys = .allocate(capacity: keyCapacity)
        keys.initialize(repeating: 0, count: keyCapacity)
        keyBytes.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { keys.update(from: base, count: src.count) }
        }
        let end = UnsafePointer(keys + keyCapacity)
        for entry in entries {
            let p = UnsafePointer(keys + Int(entry.offset))
            let n = Int(entry.length)
            if find(p, n, end: end) != nil { continue }
            let prefix = loadWord(p, min(n, 8), end: end)
            var index = Int(truncatingIfNeeded: hashBytes(p, n, prefix: prefix, end: end)) & mask
            while slots[index].length != 0 { index = (index + 1) & mask }
            slots[index] = VocabularySlot(prefix: prefix, length: Int32(n), id: entry.id, rank: Int32.max,
                                          keyOffset: entry.offset)
        }
    }

    deinit {
        slots.deallocate()
        keys.deallocate()
    }

    /// The slot holding `p[0..<length]`, or nil. `end` bounds the readable memory after `p`.
    @inline(__always) @usableFromInline
    func find(_ p: UnsafePointer<UInt8>, _ length: Int, end: UnsafePointer<UInt8>) -> UnsafeMutablePointer<VocabularySlot>? {
        let prefix = loadWord(p, min(length, 8), end: end)
        var index = Int(truncatingIfNeeded: hashBytes(p, length, prefix: prefix, end: end)) & mask
        while true {
            let slot = slots + index
            let slotLength = Int(slot.pointee.length)
            if slotLength == 0 { return nil }
            if slotLength == length && slot.pointee.prefix == prefix {
                if length <= 8 || memoryEqual(p + 8, keys + Int(slot.pointee.keyOffset) + 8, length - 8) {
                    return slot
                }
            }
            index = (index + 1) & mask
        }
    }
}

@inline(__always) @usableFromInline
func memoryEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    var k = 0
    while k + 8 <= count {
        if UnsafeRawPointer(a + k).loadUnaligned(as: UInt64.self) != UnsafeRawPointer(b + k).loadUnaligned(as: UInt64.self) {
            return false
        }
        k += 8
    }
    while k < count {
        if a[k] != b[k] { return false }
        k += 1
    }
    return true
}

/// A growable cache from pre-token bytes to the token ids BPE produced for them. One per encoding
/// call (per thread), so the hot path takes no locks. Bounded: cleared when it grows too large.
@usableFromInline struct PieceCache {
    @usableFromInline struct Slot {
        @usableFromInline var prefix: UInt64 = 0
        @usableFromInline var length: Int32 = 0
        @usableFromInline var keyOffset: Int32 = 0
        @usableFromInline var idsOffset: Int32 = 0
        @usableFromInline var idsCount: Int32 = 0
    }

    @usableFromInline var slots: [Slot] = []
    @usableFromInline var keys: [UInt8] = []
    @usableFromInline var ids: [Int32] = []
    @usableFromInline var count = 0
    /// Above this many bytes of keys the cache starts over (adversarial input of unique pieces).
    static let maximumKeyBytes = 64 << 20

    @usableFromInline init() {}

    /// Appends the cached ids of `p[0..<length]` to `out` and returns true, or returns false.
    @inline(__always) @usableFromInline
    func lookup(_ p: UnsafePointer<UInt8>, _ length: Int, end: UnsafePointer<UInt8>, into out: inout [Int32]) -> Bool {
        if count == 0 { return false }
        let prefix = loadWord(p, min(length, 8), end: end)
        let hash = hashBytes(p, length, prefix: prefix, end: end)
        return slots.withUnsafeBufferPointer { slots in
            let mask = slots.count - 1
            var index = Int(truncatingIfNeeded: hash) & mask
            while true {
                let slot = slots[index]
                if slot.length == 0 { return false }
                if Int(slot.length) == length && slot.prefix == prefix {
                    let same = length <= 8 || keys.withUnsafeBufferPointer {
                        memoryEqual(p + 8, $0.baseAddress! + Int(slot.keyOffset) + 8, length - 8)
                    }
                    if same {
                        let start = Int(slot.idsOffset)
                        out.append(contentsOf: ids[start ..< start + Int(slot.idsCount)])
                        return true
                    }
                }
                index = (index + 1) & mask
            }
        }
    }

    /// Remembers that `p[0..<length]` encodes to `pieceIDs`.
    @usableFromInline
    mutating func insert(_ p: UnsafePointer<UInt8>, _ length: Int, ids pieceIDs: UnsafeBufferPointer<Int32>) {
        if keys.count + length > Self.maximumKeyBytes || ids.count + pieceIDs.count > Self.maximumKeyBytes {
            self = PieceCache()
        }
        if (count + 1) * 2 > slots.count { grow() }
        let keyOffset = keys.count
        keys.append(contentsOf: UnsafeBufferPointer(start: p, count: length))
        let idsOffset = ids.count
        ids.append(contentsOf: pieceIDs)
        let prefix = loadWord(p, min(length, 8), end: p + length)
        let hash = hashBytes(p, length, prefix: prefix, end: p + length)
        let slot = Slot(prefix: prefix, length: Int32(length), keyOffset: Int32(keyOffset),
                        idsOffset: Int32(idsOffset), idsCount: Int32(pieceIDs.count))
        place(slot, hash: hash)
        count += 1
    }

    private mutating func place(_ slot: Slot, hash: UInt64) {
        let mask = slots.count - 1
        var index = Int(truncatingIfNeeded: hash) & mask
        while slots[index].length != 0 { index = (index + 1) & mask }
        slots[index] = slot
    }

    private mutating func grow() {
        let old = slots
        slots = Array(repeating: Slot(), count: max(1024, old.count * 2))
        keys.reserveCapacity(keys.count + 8)
        for slot in old where slot.length != 0 {
            let length = Int(slot.length)
            let hash = keys.withUnsafeBufferPointer { k -> UInt64 in
                let p = k.baseAddress! + Int(slot.keyOffset)
                return hashBytes(p, length, prefix: slot.prefix, end: p + length)
            }
            place(slot, hash: hash)
        }
    }
}
