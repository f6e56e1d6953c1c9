/// A set of Unicode scalar values as sorted, disjoint, non-adjacent ranges.
struct ScalarSet: Sendable {
    var ranges: [ClosedRange<UInt32>]

    init(_ ranges: [ClosedRange<UInt32>]) {
        let sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
        var merged: [ClosedRange<UInt32>] = []
        for r in sorted {
            if let last = merged.last, r.lowerBound <= last.upperBound &+ 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        self.ranges = merged
    }

    static func scalar(_ v: UInt32) -> ScalarSet { ScalarSet([v...v]) }

    /// Every scalar value (surrogates are not scalars).
    static let all = ScalarSet([0...0xD7FF, 0xE000...0x10FFFF])
    static let ascii = ScalarSet([0...0x7F])
    /// What a JSON string holds without escaping.
    static let jsonUnescaped = ScalarSet([0x20...0x21, 0x23...0x5B, 0x5D...0xD7FF, 0xE000...0x10FFFF])

    func union(_ o: ScalarSet) -> ScalarSet { ScalarSet(ranges + o.ranges) }

    func intersection(_ o: ScalarSet) -> ScalarSet {
        var out: [ClosedRange<UInt32>] = []
        for a in ranges {
            for b in o.ranges {
                let lo = max(a.lowerBound, b.lowerBound), hi = min(a.upperBound, b.upperBound)
                if lo <= hi { out.append(lo...hi) }
            }
        }
        return ScalarSet(out)
    }

    /// `universe` minus this set.
    func complement(in universe: ScalarSet) -> ScalarSet {
        var out: [ClosedRange<UInt32>] = []
        for u in universe.ranges {
            var lo = u.lowerBound
            var done = false
            for r in ranges where r.upperBound >= lo && r.lowerBound <= u.upperBound {
                if r.lowerBound > lo { out.append(lo...(r.lowerBound - 1)) }
                if r.upperBound >= u.upperBound { done = true; break }
                lo = r.upperBound + 1
            }
            if !done && lo <= u.upperBound { out.append(lo...u.upperBound) }
        }
        return ScalarSet(out)
    }

    var isEmpty: Bool { ranges.isEmpty }

    /// The UTF-8 encodings of the set as an expression over bytes.
    var utf8Expression: GrammarExpression {
        var alternatives: [GrammarExpression] = []
        for r in ranges {
            // Split at the encoded-length boundaries, then into ranges that encode byte-wise.
            let bounds: [ClosedRange<UInt32>] = [0...0x7F, 0x80...0x7FF, 0x800...0xFFFF, 0x10000...0x10FFFF]
            for b in bounds {
                let lo = max(r.lowerBound, b.lowerBound), hi = min(r.upperBound, b.upperBound)
                if lo <= hi { Self.appendSequences(lo, hi, into: &alternatives) }
            }
        }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    private static func encode(_ v: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        switch v {
        case 0..<0x80: out = [UInt8(v)]
        case 0x80..<0x800: out = [UInt8(0xC0 | (v >> 6)), UInt8(0x80 | (v & 0x3F))]
        case 0x800..<0x10000: out = [UInt8(0xE0 | (v >> 12)), UInt8(0x80 | ((v >> 6) & 0x3F)), UInt8(0x80 | (v & 0x3F))]
        default: out = [UInt8(0xF0 | (v >> 18)), UInt8(0x80 | ((v >> 12) & 0x3F)), UInt8(0x80 | ((v >> 6) & 0x3F)), UInt8(0x80 | (v & 0x3F))]
        }
        return out
    }

    /// [lo, hi] within one encoded length, as sequences of byte ranges (the classic split: the
    /// range is cut until the encodings of lo and hi differ only in a way each byte can span).
    private static func appendSequences(_ lo: UInt32, _ hi: UInt32, into out: inout [GrammarExpression]) {
        let n = encode(lo).count
        if n > 1 {
            for i in 1..<n {
                let m: UInt32 = (1 << (6 * UInt32(i))) - 1
                if lo & ~m != hi & ~m {
                    if lo & m != 0 {
                        appendSequences(lo, lo | m, into: &out)
                        appendSequences((lo | m) + 1, hi, into: &out)
                        return
                    }
                    if hi & m != m {
                        appendSequences(lo, (hi & ~m) - 1, into: &out)
                        appendSequences(hi & ~m, hi, into: &out)
                        return
                    }
                }
            }
        }
        let a = encode(lo), b = encode(hi)
        let parts = (0..<n).map { GrammarExpression.bytes(ByteSet(a[$0]...b[$0])) }
        out.append(parts.count == 1 ? parts[0] : .sequence(parts))
    }
}

/// A regular expression (Python `re` syntax, the subset that describes a regular language),
/// compiled to a grammar expression over UTF-8 bytes whose strings `re.fullmatch` accepts.
///
/// Supported: literals, `.`, classes `[a-z]`/`[^…]`, `\d \w \s \D \W \S`, `\t \n \r \f \v \xHH
/// \uHHHH`, escaped metacharacters, groups `(…)`, `(?:…)`, `(?P<name>…)`, alternation, `* + ?
/// {n} {n,} {n,m}` (lazy forms too: same language), `^`/`\A` at the start and `$`/`\Z` at the end.
/// Errors for back-references, look-arounds, word boundaries, inline flags.
///
/// `\d \w \s` are ASCII here (Python's are Unicode), so every generated string matches Python's
/// pattern; negated classes that involve them are complemented within ASCII for the same reason.
struct RegexCompiler {
    private let s: [Unicode.Scalar]
    private var i = 0
    /// The characters a match may contain at all (JSON strings: those needing no escape).
    private let universe: ScalarSet
    private let source: String
    /// Open groups around `i`: each nests the parser (and the expression) one level deeper.
    private var depth = 0
    /// More nested groups than any real pattern has; the recursion must stop long before the stack does.
    static let maximumGroupDepth = 200

    init(_ pattern: String, universe: ScalarSet) {
        s = Array(pattern.unicodeScalars)
        self.universe = universe
        source = pattern
    }

    static func expression(_ pattern: String, universe: ScalarSet = .all) throws(GrammarError) -> GrammarExpression {
        var c = RegexCompiler(pattern, universe: universe)
        if c.peek == "^" { c.i += 1 } else if c.peek == "\\" && c.i + 1 < c.s.count && c.s[c.i + 1] == "A" { c.i += 2 }
        let e = try c.alternation()
        guard c.i == c.s.count else { throw c.error(c.peek == ")" ? "unbalanced ')'" : "unexpected '\(c.s[c.i])'") }
        return e
    }

    private var peek: Unicode.Scalar? { i < s.count ? s[i] : nil }

    private func error(_ why: String) -> GrammarError {
        GrammarError("regex \(source.debugDescription): \(why) at character \(i)")
    }

    private mutating func alternation() throws(GrammarError) -> GrammarExpression {
        var alternatives = [try sequence()]
        while peek == "|" {
            i += 1
            alternatives.append(try sequence())
        }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    private func atEndAnchor() -> Bool {
        // `$` or `\Z` that ends the pattern (or the top-level alternative).
        if peek == "$" { return i + 1 == s.count }
        if peek == "\\" && i + 1 < s.count && s[i + 1] == "Z" { return i + 2 == s.count }
        return false
    }

    private mutating func sequence() throws(GrammarError) -> GrammarExpression {
        var parts: [GrammarExpression] = []
        while let c = peek, c != "|", c != ")" {
            if atEndAnchor() {
                i = s.count
                break
            }
            var atom = try self.atom()
            while let q = peek {
                var minCount = 0, maxCount: Int? = nil
                if q == "*" { i += 1 } else if q == "+" { minCount = 1; i += 1 } else if q == "?" { maxCount = 1; i += 1 } else if q == "{" {
                    guard let (lo, hi, length) = quantifierBraces() else { break }
                    minCount = lo; maxCount = hi; i += length
                } else { break }
                if peek == "?" { i += 1 }  // lazy: the same language
                if peek == "+" { throw error("possessive quantifiers are not supported") }
                if let maxCount, maxCount < minCount { throw error("{\(minCount),\(maxCount)}: the maximum is below the minimum") }
                if (maxCount ?? minCount) > 1000 { throw error("repetition counts above 1000 are not supported") }
                atom = .repetition(atom, min: minCount, max: maxCount)
            }
            parts.append(atom)
        }
        return parts.count == 1 ? parts[0] : .sequence(parts)
    }

    /// `{n}`, `{n,}`, `{n,m}` at `i`: (min, max, length); nil when the brace is a literal (as in Python).
    private func quantifierBraces() -> (Int, Int?, Int)? {
        var k = i + 1
        func number() -> Int? {
            var v = 0, digits = 0
            while k < s.count, s[k].value >= 0x30, s[k].value <= 0x39 {
                v = v * 10 + Int(s[k].value - 0x30); digits += 1; k += 1
                if v > 1_000_000 { return nil }
            }
            return digits > 0 ? v : nil
        }
        let lo = number()
        if k < s.count && s[k] == "}" {
            guard let lo else { return nil }
            return (lo, lo, k + 1 - i)
        }
        guard k < s.count, s[k] == "," else { return nil }
        k += 1
        let hi = number()
        guard k < s.count, s[k] == "}" else { return nil }
        return (lo ?? 0, hi, k + 1 - i)
    }

    private mutating func atom() throws(GrammarError) -> GrammarExpression {
        let c = s[i]
        switch c {
        case "(":
            guard depth < Self.maximumGroupDepth else { throw error("groups nested more than \(Self.maximumGroupDepth) deep") }
            depth += 1
            defer { depth -= 1 }
            i += 1
            if peek == "?" {
                if i + 1 < s.count && s[i + 1] == ":" {
                    i += 2
                } else if i + 2 < s.count && s[i + 1] == "P" && s[i + 2] == "<" || i + 1 < s.count && s[i + 1] == "<" && i + 2 < s.count && s[i + 2] != "=" && s[i + 2] != "!" {
                    while let x = peek, x != ">" { i += 1 }
                    guard peek == ">" else { throw error("unterminated group name") }
                    i += 1
                } else {
                    throw error("look-arounds, inline flags and other (?…) groups are not supported")
                }
            }
            let inner = try alternation()
            guard peek == ")" else { throw error("missing ')'") }
            i += 1
            return inner
        case "[":
            return try chars(try characterClass())
        case ".":
            i += 1
            return try chars(ScalarSet.scalar(0x0A).complement(in: .all))
        case "\\":
            return try chars(try escape(inClass: false))
        case "*", "+", "?":
            throw error("nothing to repeat")
        case "^", "$":
            throw error("anchors are only supported at the start and the end of the pattern")
        default:
            i += 1
            return try chars(.scalar(c.value))
        }
    }

    private func chars(_ set: ScalarSet) throws(GrammarError) -> GrammarExpression {
        let allowed = set.intersection(universe)
        // An empty set only makes its branch impossible; a pattern with no string left is reported
        // when the grammar is built.
        return allowed.isEmpty ? .choice([]) : allowed.utf8Expression
    }

    /// After a backslash at `i`: the set it stands for (`i` moves past it).
    private mutating func escape(inClass: Bool) throws(GrammarError) -> ScalarSet {
        i += 1
        guard let c = peek else { throw error("trailing backslash") }
        i += 1
        let digit = ScalarSet([0x30...0x39])
        let word = ScalarSet([0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A])
        let space = ScalarSet([0x09...0x0D, 0x20...0x20])
        // Python's \s also holds U+001C–U+001F: the ASCII complement of \s leaves them out.
        let pythonSpace = ScalarSet([0x09...0x0D, 0x1C...0x20])
        switch c {
        case "d": return digit
        case "w": return word
        case "s": return space
        case "D": return digit.complement(in: .ascii)
        case "W": return word.complement(in: .ascii)
        case "S": return pythonSpace.complement(in: .ascii)
        case "t": return .scalar(0x09)
        case "n": return .scalar(0x0A)
        case "r": return .scalar(0x0D)
        case "f": return .scalar(0x0C)
        case "v": return .scalar(0x0B)
        case "a": return .scalar(0x07)
        case "0": return .scalar(0)
        case "x", "u", "U":
            let n = c == "x" ? 2 : c == "u" ? 4 : 8
            guard i + n <= s.count, let v = UInt32(String(String.UnicodeScalarView(s[i..<(i + n)])), radix: 16) else {
                throw error("\\\(c) needs \(n) hexadecimal digits")
            }
            i += n
            return .scalar(v)
        case "b" where inClass: return .scalar(0x08)
        default:
            if c.properties.isAlphabetic || ("1"..."9").contains(c) {
                throw error("\\\(c) (back-references, word boundaries, …) is not supported")
            }
            return .scalar(c.value)
        }
    }

    /// `[…]` at `i`.
    private mutating func characterClass() throws(GrammarError) -> ScalarSet {
        i += 1
        var negated = false
        if peek == "^" { negated = true; i += 1 }
        var ranges: [ClosedRange<UInt32>] = []
        var usesClassEscape = false
        var first = true
        while true {
            guard let c = peek else { throw error("missing ']'") }
            if c == "]" && !first { i += 1; break }
            first = false
            var lo: UInt32
            if c == "\\" {
                let save = i
                let set = try escape(inClass: true)
                if set.ranges.count != 1 || set.ranges[0].count != 1 || ["d", "w", "s", "D", "W", "S"].contains(s[save + 1]) {
                    usesClassEscape = true
                    ranges += set.ranges
                    continue
                }
                lo = set.ranges[0].lowerBound
            } else {
                lo = c.value
                i += 1
            }
            if peek == "-", i + 1 < s.count, s[i + 1] != "]" {
                i += 1
                var hi: UInt32
                if peek == "\\" {
                    let set = try escape(inClass: true)
                    guard set.ranges.count == 1, set.ranges[0].count == 1 else { throw error("a class escape cannot end a range") }
                    hi = set.ranges[0].lowerBound
                } else {
                    hi = s[i].value
                    i += 1
                }
                guard lo <= hi else { throw error("bad character range") }
                ranges.append(lo...hi)
            } else {
                ranges.append(lo...lo)
            }
        }
        let set = ScalarSet(ranges)
        guard negated else { return set }
        return set.complement(in: usesClassEscape ? .ascii : .all)
    }
}
