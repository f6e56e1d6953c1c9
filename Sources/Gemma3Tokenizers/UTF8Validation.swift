/// Validates UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
/// Throws `TokenizerError.invalidUTF8(offset:)` giving the byte offset of the first invalid sequence
/// (a truncated sequence at the end of the buffer counts as invalid at its first byte).
public func validateUTF8(_ bytes: UnsafeBufferPointer<UInt8>) throws {
    if let offset = firstInvalidUTF8Offset(bytes) { throw TokenizerError.invalidUTF8(offset: offset) }
}

/// Byte offset of the first invalid UTF-8 sequence in `bytes`, or nil when all of it is valid.
public func firstInvalidUTF8Offset(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
    guard let p = bytes.baseAddress else { return nil }
    let n = bytes.count
    var i = 0
    while i < n {
        // ASCII fast path, 8 bytes at a time.
        while i + 8 <= n {
            let word = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
            if word & 0x8080_8080_8080_8080 != 0 { break }
            i += 8
        }
        if i >= n { break }
        let b0 = p[i]
        if b0 < 0x80 {
            i += 1
            continue
        }
        // Allowed ranges per the Unicode standard's table of well-formed byte sequences.
        var length: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch b0 {
        case 0xC2 ... 0xDF: length = 2
        case 0xE0: length = 3; low = 0xA0
        case 0xE1 ... 0xEC, 0xEE ... 0xEF: length = 3
        case 0xED: length = 3; high = 0x9F
        case 0xF0: length = 4; low = 0x90
        case 0xF1 ... 0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F
        default: return i
        }
        if i + length > n { return i }
        let b1 = p[i + 1]
        if b1 < low || b1 > high { return i }
        var k = 2
        while k < length {
            if p[i + k] & 0xC0 != 0x80 { return i }
            k += 1
        }
        i += length
    }
    return nil
}
