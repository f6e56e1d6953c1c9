// The GPT-2 pre-tokenizer, written by hand on UTF-8 bytes.
//
// tiktoken's `gpt2` (r50k) split pattern is
//
//     '(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s
//
// (OpenAI's original spelling `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
// splits identically). The regex engine (Rust `fancy-regex` over `regex`) takes the first alternative
// that matches at the current position, so a piece is decided by the character classes of a few
// characters from its start:
//   * an ASCII apostrophe followed by `s t m d` or `ll ve re` (case-sensitive) is a contraction;
//   * an optional ASCII space, then a maximal run of letters, or of numbers, or of "other"
//     (neither whitespace, letter nor number) characters;
//   * a whitespace run: all of it at the end of the text; otherwise all but its last character
//     (which then prefixes the next piece when it is a space), or the single character when the
//     run has length one.
// `\p{L}` is General_Category L (Lu Ll Lt Lm Lo), `\p{N}` is N (Nd Nl No) and `\s` is the Unicode
// White_Space property, exactly the Rust regex crate's definitions in Unicode mode.
// Nothing looks behind the current position, which is what makes parallel splitting possible.

/// Character class of the pre-tokenizer: letter, number, whitespace or anything else.
@usableFromInline enum PieceClass {
    @usableFromInline static let letter: UInt8 = 0
    @usableFromInline static let number: UInt8 = 1
    @usableFromInline static let whitespace: UInt8 = 2
    @usableFromInline static let other: UInt8 = 3
    /// Marker in the byte table: a non-ASCII lead byte, decode the scalar to classify it.
    @usableFromInline static let nonASCII: UInt8 = 4
}

/// The Unicode version of the tables in tiktoken's regex engine (tiktoken 0.14: Rust `regex-syntax`
/// with Unicode 16.0). Characters assigned later are unassigned (`Cn`, so "other") for tiktoken,
/// while the Swift 6.3 standard library already knows Unicode 17.0; the test
/// `unicodeClassesMatchTiktoken` checks every scalar of planes 0-3 and 14 against tiktoken.
let tiktokenUnicodeVersion = (major: 16, minor: 0)

/// Classifies one Unicode scalar value with the standard library's Unicode properties.
func pieceClass(ofScalar value: UInt32) -> UInt8 {
    guard let scalar = Unicode.Scalar(value) else { return PieceClass.other }
    let properties = scalar.properties
    if let age = properties.age,
       age.major > tiktokenUnicodeVersion.major
        || (age.major == tiktokenUnicodeVersion.major && age.minor > tiktokenUnicodeVersion.minor) {
        return PieceClass.other
    }
    if properties.isWhitespace { return PieceClass.whitespace }  // the White_Space property
    switch properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
        return PieceClass.letter
    case .decimalNumber, .letterNumber, .otherNumber:
        return PieceClass.number
    default:
        return PieceClass.other
    }
}

/// Lookup tables for the pre-tokenizer: one byte per ASCII byte and one per Basic Multilingual
/// Plane scalar (built once per process, ~64 KiB); scalars above U+FFFF are classified on demand.
final class PieceClassTables: @unchecked Sendable {
    /// 256 entries: the class of an ASCII byte, or `PieceClass.nonASCII` for bytes >= 0x80.
    let bytes: UnsafeMutablePointer<UInt8>
    /// 65536 entries: the class of every BMP scalar (surrogates are `other`).
    let bmp: UnsafeMutablePointer<UInt8>

    static let shared = PieceClassTables()

    private init() {
        bytes = .allocate(capacity: 256)
        for b in 0..<256 {
            bytes[b] = b < 0x80 ? pieceClass(ofScalar: UInt32(b)) : PieceClass.nonASCII
        }
        bmp = .allocate(capacity: 65536)
        for v in 0..<65536 { bmp[v] = pieceClass(ofScalar: UInt32(v)) }
    }

    deinit {
        bytes.deallocate()
        bmp.deallocate()
    }
}

/// Finds the pieces of GPT-2's split pattern in a buffer of UTF-8 bytes.
///
/// The buffer must hold valid UTF-8 for the result to match tiktoken; invalid bytes never cause an
/// out-of-bounds read (sequence lengths are clamped to the buffer), they only give unspecified pieces.
@usableFromInline struct GPT2PreTokenizer {
    @usableFromInline let byteClass: UnsafePointer<UInt8>
    @usableFromInline let bmpClass: UnsafePointer<UInt8>

    init(tables: PieceClassTables = .shared) {
        byteClass = UnsafePointer(tables.bytes)
        bmpClass = UnsafePointer(tables.bmp)
    }

    /// Class and byte length of the character starting at `p[j]` (`j < n`).
    @inline(__always) @usableFromInline
    func classAt(_ p: UnsafePointer<UInt8>, _ n: Int, _ j: Int) -> (UInt8, Int) {
        let b0 = p[j]
        let c = byteClass[Int(b0)]
        if c != PieceClass.nonASCII { return (c, 1) }
        return nonASCIIClassAt(p, n, j, b0)
    }

    @inline(never) @usableFromInline
    func nonASCIIClassAt(_ p: UnsafePointer<UInt8>, _ n: Int, _ j: Int, _ b0: UInt8) -> (UInt8, Int) {
        let remaining = n - j
        var value: UInt32
        var length: Int
        if b0 < 0xE0 {
            length = 2
            value = UInt32(b0 & 0x1F)
        } else if b0 < 0xF0 {
            length = 3
            value = UInt32(b0 & 0x0F)
        } else {
            length = 4
            value = UInt32(b0 & 0x07)
        }
        if length > remaining { length = remaining }  // only reachable with invalid UTF-8
        var k = 1
        while k < length {
            value = (value << 6) | UInt32(p[j + k] & 0x3F)
            k += 1
        }
        if value < 0x10000 { return (bmpClass[Int(value)], length) }
        return (pieceClass(ofScalar: value), length)
    }

    /// End of the maximal run of characters of class `cls` that starts at or before `j`.
    @inline(__always) @usableFromInline
    func runEnd(_ p: UnsafePointer<UInt8>, _ n: Int, from start: Int, _ cls: UInt8) -> Int {
        var j = start
        while j < n {
            let c = byteClass[Int(p[j])]
            if c == cls {
                j += 1
            } else if c == PieceClass.nonASCII {
                let (c2, len) = nonASCIIClassAt(p, n, j, p[j])
                if c2 != cls { return j }
                j += len
            } else {
                return j
            }
        }
        return j
    }

    /// The end (exclusive) of the piece that starts at `i` (`i < n`).
    @inline(__always) @usableFromInline
    func pieceEnd(_ p: UnsafePointer<UInt8>, _ n: Int, _ i: Int) -> Int {
        let b = p[i]
        if b == UInt8(ascii: "'") {
            if i + 1 < n {
                let c = p[i + 1]
                if c == UInt8(ascii: "s") || c == UInt8(ascii: "t") || c == UInt8(ascii: "m") || c == UInt8(ascii: "d") {
                    return i + 2
                }
                if i + 2 < n {
                    let d = p[i + 2]
                    if (c == UInt8(ascii: "l") && d == UInt8(ascii: "l"))
                        || (c == UInt8(ascii: "v") && d == UInt8(ascii: "e"))
                        || (c == UInt8(ascii: "r") && d == UInt8(ascii: "e")) {
                        return i + 3
                    }
                }
            }
            return runEnd(p, n, from: i + 1, PieceClass.other)
        }
        var firstLength = 1
        if b == UInt8(ascii: " ") {
            // " ?X+": a space glued to the run that follows it, unless whitespace follows.
            if i + 1 < n {
                let (c2, len2) = classAt(p, n, i + 1)
                if c2 != PieceClass.whitespace { return runEnd(p, n, from: i + 1 + len2, c2) }
            }
        } else {
            let (c, len) = classAt(p, n, i)
            if c != PieceClass.whitespace { return runEnd(p, n, from: i + len, c) }
            firstLength = len
        }
        // A whitespace run [i, j).
        var lastStart = i
        var j = i + firstLength
        while j < n {
            let (c, len) = classAt(p, n, j)
            if c != PieceClass.whitespace { break }
            lastStart = j
            j += len
        }
        if j == n { return n }                 // \s++$
        if lastStart > i { return lastStart }  // \s+(?!\S): leave the last one for the next piece
        return j                               // \s: a single whitespace character
    }

    /// Whether a chunk may start at `p`: the pieces of the text before and after it are exactly the
    /// pieces of the whole text there. True when `p[-1]` is a non-whitespace ASCII byte and `p[0]`
    /// is a space or a newline: every piece ending at a non-whitespace character is ended by a
    /// following whitespace character (or the end of the text) alike, and matching never looks back.
    @inline(__always) static func isSafeSplit(_ p: UnsafePointer<UInt8>, at k: Int) -> Bool {
        let before = p[k - 1]
        let here = p[k]
        return (here == 0x20 || here == 0x0A) && before > 0x20 && before < 0x7F
    }

    /// Calls `body(start, end)` for every piece of `p[0..<n]` in order (tests and tools; the
    /// encoder inlines the loop itself).
    func forEachPiece(_ p: UnsafePointer<UInt8>, _ n: Int, _ body: (Int, Int) -> Void) {
        var i = 0
        while i < n {
            let e = pieceEnd(p, n, i)
            body(i, e)
            i = e
        }
    }
}
