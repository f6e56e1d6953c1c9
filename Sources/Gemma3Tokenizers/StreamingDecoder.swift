/// Turns a stream of token bytes into text without ever emitting a broken character: bytes of a
/// UTF-8 sequence that is not complete yet are held back until the next `push` (or `finish`).
///
/// The concatenation of everything returned equals `String(decoding: allBytes, as: UTF8.self)`:
/// invalid bytes become U+FFFD exactly as the standard library's lossy decoding does.
public struct StreamingUTF8Decoder {
    private var pending: [UInt8] = []

    public init() {}

    /// Adds bytes (for example one token's) and returns the text that is now complete.
    public mutating func push(_ bytes: [UInt8]) -> String {
        pending.append(contentsOf: bytes)
        let keep = incompleteTailLength(pending)
        if keep == pending.count { return "" }
        let text = String(decoding: pending[0 ..< pending.count - keep], as: UTF8.self)
        pending.removeFirst(pending.count - keep)
        return text
    }

    /// Returns whatever is still held back (an unfinished sequence decodes to U+FFFD).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Bytes currently held back, waiting for the rest of their character.
    public var pendingByteCount: Int { pending.count }
}

/// Length of the suffix of `bytes` that is a proper prefix of a well-formed UTF-8 sequence (which
/// more bytes could still complete), or 0.
func incompleteTailLength(_ bytes: [UInt8]) -> Int {
    let n = bytes.count
    var start = n - 1
    // Walk back over at most 3 continuation bytes to the candidate lead byte.
    while start >= 0 && n - start <= 3 && bytes[start] & 0xC0 == 0x80 { start -= 1 }
    guard start >= 0 else { return 0 }
    let lead = bytes[start]
    let have = n - start
    var need: Int
    var low: UInt8 = 0x80
    var high: UInt8 = 0xBF
    switch lead {
    case 0xC2 ... 0xDF: need = 2
    case 0xE0: need = 3; low = 0xA0
    case 0xE1 ... 0xEC, 0xEE ... 0xEF: need = 3
    case 0xED: need = 3; high = 0x9F
    case 0xF0: need = 4; low = 0x90
    case 0xF1 ... 0xF3: need = 4
    case 0xF4: need = 4; high = 0x8F
    default: return 0
    }
    if have >= need { return 0 }
    if have >= 2 && (bytes[start + 1] < low || bytes[start + 1] > high) { return 0 }
    return have
}
