import Foundation

/// Gemma's tokenizer: SentencePiece-style BPE over a scored vocabulary with byte fallback, as
/// llama.cpp runs it for GGUF files whose `tokenizer.ggml.model` is "llama" (its "SPM" vocabulary).
///
/// Encoding, step by step (each matches llama.cpp's `llama_vocab::tokenize`):
/// 1. **Special-token partition.** Tokens of type user-defined (whitespace runs, `<table>`-style
///    tags, …) and, only when `parseSpecial`, control and unknown tokens (`<bos>`, `<start_of_turn>`,
///    …) are cut out of the raw text as literal matches: longest tokens first, each splitting every
///    remaining text fragment at all its non-overlapping occurrences from the left.
/// 2. **Whitespace.** In every remaining fragment spaces become "▁" (U+2581). Gemma adds no
///    leading space (`add_space_prefix` false).
/// 3. **BPE by score.** A fragment starts as one symbol per UTF-8 character; repeatedly the adjacent
///    pair whose concatenation is a vocabulary piece with the highest score is merged (ties: the
///    leftmost pair). Symbols that are pieces become their ids; any other symbol becomes one
///    `<0xXX>` byte token per byte.
/// 4. `<bos>` is prepended when `addBOS` (the GGUF's `tokenizer.ggml.add_bos_token`; Gemma: true).
///
/// Same-length special tokens that overlap in a text are tried in id order here; llama.cpp's order
/// for such ties is unspecified (`std::sort`). No Gemma 3 special tokens overlap that way.
public final class GemmaTokenizer: @unchecked Sendable {
    /// Token kinds, with the values of GGUF's `tokenizer.ggml.token_type`.
    public enum TokenType: Int32, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// Token texts as raw bytes ("▁" for spaces; `<0x0A>` for byte tokens).
    public let pieces: [[UInt8]]
    public let scores: [Float]
    public let types: [TokenType]
    public let bosTokenID: Int32
    public let eosTokenID: Int32
    /// Whether `encode` prepends `<bos>` by default.
    public let addBOS: Bool
    /// Whether a space is prepended to text after a special token (false for Gemma).
    public let addSpacePrefix: Bool

    /// Vocabulary size.
    public var vocabularySize: Int { pieces.count }

    private let table: VocabularyTable
    /// Ids of `<0x00>` … `<0xFF>` (or of the single-byte piece when there is no byte token).
    private let byteTokens: [Int32]
    /// User-defined tokens, then control/unknown ones, each list sorted by byte length (longest first).
    private let literalTokens: [Int32]
    private let literalIsSpecial: [Bool]

    /// Builds a tokenizer from parallel arrays (GGUF `tokenizer.ggml.tokens`, `.scores`, `.token_type`).
    /// Throws `TokenizerError.malformedFile` (with `source` as the path) on inconsistent input.
    public init(pieces: [String], scores: [Float], types: [Int32], bosTokenID: Int32, eosTokenID: Int32,
                addBOS: Bool = true, addSpacePrefix: Bool = false, source: String = "vocabulary") throws {
        guard !pieces.isEmpty, pieces.count == scores.count, pieces.count == types.count, pieces.count < Int(Int32.max) else {
            throw TokenizerError.malformedFile(path: source, reason: "\(pieces.count) tokens, \(scores.count) scores and \(types.count) token types")
        }
        guard bosTokenID >= 0, Int(bosTokenID) < pieces.count, eosTokenID >= 0, Int(eosTokenID) < pieces.count else {
            throw TokenizerError.malformedFile(path: source, reason: "BOS id \(bosTokenID) or EOS id \(eosTokenID) is outside the vocabulary of \(pieces.count)")
        }
        var bytes: [[UInt8]] = []
        bytes.reserveCapacity(pieces.count)
        var arena: [UInt8] = []
        var entries: [(offset: Int32, length: Int32, id: Int32)] = []
        entries.reserveCapacity(pieces.count)
        var tokenTypes: [TokenType] = []
        tokenTypes.reserveCapacity(pieces.count)
        for (i, piece) in pieces.enumerated() {
            // llama.cpp renames empty pieces so every piece stays a distinct, non-empty key.
            let b = piece.isEmpty ? Array("[EMPTY_\(i)]".utf8) : Array(piece.utf8)
            entries.append((Int32(arena.count), Int32(b.count), Int32(i)))
            arena.append(contentsOf: b)
            bytes.append(b)
            // Unknown type values count as normal text for matching purposes (llama.cpp: "undefined").
            tokenTypes.append(TokenType(rawValue: types[i]) ?? .normal)
        }
        guard arena.count < Int(Int32.max) else { throw TokenizerError.malformedFile(path: source, reason: "vocabulary too large") }
        table = VocabularyTable(keyBytes: arena, entries: entries)
        self.pieces = bytes
        self.scores = scores
        self.types = tokenTypes
        self.bosTokenID = bosTokenID
        self.eosTokenID = eosTokenID
        self.addBOS = addBOS
        self.addSpacePrefix = addSpacePrefix

        var byteIDs = [Int32](repeating: -1, count: 256)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in 0..<256 {
            let name: [UInt8] = Array("<0x".utf8) + [hex[b >> 4], hex[b & 15], UInt8(ascii: ">")]
            if let id = VocabularyTable.lookup(table, name) {
                byteIDs[b] = id
            } else if let id = VocabularyTable.lookup(table, [UInt8(b)]) {
                byteIDs[b] = id
            }
        }
        // A byte without a piece of its own is encoded as the unknown token (SentencePiece's rule);
        // a vocabulary with neither could not encode every text, so it is refused here rather than
        // handing out an invalid id later.
        if let missing = byteIDs.firstIndex(of: -1) {
            guard let unknown = tokenTypes.firstIndex(of: .unknown) else {
                throw TokenizerError.malformedFile(path: source, reason: String(format: "no piece for byte 0x%02X (<0x%02X>) and no unknown token", missing, missing))
            }
            for b in 0..<256 where byteIDs[b] == -1 { byteIDs[b] = Int32(unknown) }
        }
        byteTokens = byteIDs

        var literal: [(id: Int32, special: Bool)] = []
        for (i, t) in tokenTypes.enumerated() {
            switch t {
            case .userDefined: literal.append((Int32(i), false))
            case .control, .unknown: literal.append((Int32(i), true))
            default: break
            }
        }
        // Longest first; ties in id order (stable).
        literal.sort { a, b in
            let la = bytes[Int(a.id)].count, lb = bytes[Int(b.id)].count
            return la != lb ? la > lb : a.id < b.id
        }
        literalTokens = literal.map(\.id)
        literalIsSpecial = literal.map(\.special)
    }

    // MARK: Lookup

    /// The id of the piece with exactly these bytes (any token type), or nil.
    public func id(of piece: String) -> Int32? { VocabularyTable.lookup(table, Array(piece.utf8)) }

    /// The type of token `id` (nil when out of range).
    public func type(of id: Int32) -> TokenType? {
        id >= 0 && Int(id) < types.count ? types[Int(id)] : nil
    }

    // MARK: Encoding

    /// Token ids of `text`. `addBOS` defaults to the model's setting; with `parseSpecial` the text of
    /// control tokens (`<start_of_turn>`, `<eos>`, …) becomes those tokens, otherwise it is plain text.
    public func encode(_ text: String, addBOS: Bool? = nil, parseSpecial: Bool = false) -> [Int32] {
        let utf8 = Array(text.utf8)
        return utf8.withUnsafeBufferPointer { encode(utf8: $0, addBOS: addBOS, parseSpecial: parseSpecial) }
    }

    /// Token ids of UTF-8 bytes (invalid sequences are encoded through byte tokens).
    public func encode(utf8 text: UnsafeBufferPointer<UInt8>, addBOS: Bool? = nil, parseSpecial: Bool = false) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(text.count / 3 + 2)
        if addBOS ?? self.addBOS { out.append(bosTokenID) }
        var isPreviousSpecial = true
        for fragment in partition(text, parseSpecial: parseSpecial) {
            switch fragment {
            case .token(let id):
                out.append(id)
                isPreviousSpecial = true
            case .text(let range):
                var bytes: [UInt8] = []
                bytes.reserveCapacity(range.count * 2 + 3)
                if addSpacePrefix && isPreviousSpecial { bytes.append(contentsOf: [0xE2, 0x96, 0x81]) }
                for b in text[range] {
                    if b == 0x20 { bytes.append(contentsOf: [0xE2, 0x96, 0x81]) } else { bytes.append(b) }
                }
                bytes.withUnsafeBufferPointer { encodeFragment($0, into: &out) }
                isPreviousSpecial = false
            }
        }
        return out
    }

    private enum Fragment {
        case text(Range<Int>)
        case token(Int32)
    }

    /// Step 1: literal matches of user-defined (and, with `parseSpecial`, control) tokens.
    private func partition(_ text: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [Fragment] {
        guard !text.isEmpty else { return [] }
        var fragments: [Fragment] = [.text(0..<text.count)]
        // Which bytes and adjacent byte pairs occur in the text: a token whose first byte, first pair
        // or last pair never occurs cannot match (this skips almost all of Gemma's ~6000 control tokens).
        var bytePresent = [Bool](repeating: false, count: 256)
        var pairPresent = [Bool](repeating: false, count: 65536)
        for i in 0..<text.count {
            bytePresent[Int(text[i])] = true
            if i + 1 < text.count { pairPresent[Int(text[i]) << 8 | Int(text[i + 1])] = true }
        }
        for (k, id) in literalTokens.enumerated() {
            if literalIsSpecial[k] && !parseSpecial { continue }
            let piece = pieces[Int(id)]
            let n = piece.count
            guard n <= text.count, bytePresent[Int(piece[0])] else { continue }
            if n >= 2 && !(pairPresent[Int(piece[0]) << 8 | Int(piece[1])] && pairPresent[Int(piece[n - 2]) << 8 | Int(piece[n - 1])]) {
                continue
            }
            var next: [Fragment] = []
            var changed = false
            for fragment in fragments {
                guard case .text(let range) = fragment, range.count >= piece.count else {
                    next.append(fragment)
                    continue
                }
                var start = range.lowerBound
                var searchFrom = range.lowerBound
                while let match = find(piece, in: text, from: searchFrom, to: range.upperBound) {
                    if match > start { next.append(.text(start..<match)) }
                    next.append(.token(id))
                    start = match + piece.count
                    searchFrom = start
                    changed = true
                }
                if start < range.upperBound { next.append(.text(start..<range.upperBound)) }
            }
            if changed { fragments = next }
        }
        return fragments
    }

    /// The first occurrence of `needle` in `text[from..<to]`.
    private func find(_ needle: [UInt8], in text: UnsafeBufferPointer<UInt8>, from: Int, to: Int) -> Int? {
        let n = needle.count
        guard to - from >= n else { return nil }
        let first = needle[0]
        var i = from
        let last = to - n
        while i <= last {
            if text[i] == first {
                var k = 1
                while k < n && text[i + k] == needle[k] { k += 1 }
                if k == n { return i }
            }
            i += 1
        }
        return nil
    }

    /// Symbol of the merge loop: a byte range of the fragment and its neighbours in the linked list.
    private struct Symbol {
        var start: Int
        var length: Int
        var prev: Int
        var next: Int
    }

    /// A candidate merge of `left` and its right neighbour into a piece of `score`.
    private struct Bigram {
        var score: Float
        var left: Int
        var right: Int
        var size: Int
        /// Heap order: higher score first, then the leftmost pair.
        @inline(__always) func precedes(_ o: Bigram) -> Bool { score > o.score || (score == o.score && left < o.left) }
    }

    /// Steps 3: SentencePiece BPE on one fragment (already whitespace-escaped).
    private func encodeFragment(_ text: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        guard let base = text.baseAddress, !text.isEmpty else { return }
        let end = base + text.count
        var symbols: [Symbol] = []
        symbols.reserveCapacity(text.count)
        var offset = 0
        while offset < text.count {
            let lead = text[offset]
            // UTF-8 length from the lead byte; stray continuation bytes count as one character.
            let length = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
            let n = min(length, text.count - offset)
            symbols.append(Symbol(start: offset, length: n, prev: symbols.count - 1,
                                  next: offset + n == text.count ? -1 : symbols.count + 1))
            offset += n
        }
        var heap: [Bigram] = []
        heap.reserveCapacity(symbols.count)

        func push(_ b: Bigram) {
            heap.append(b)
            var i = heap.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                guard heap[i].precedes(heap[parent]) else { break }
                heap.swapAt(i, parent)
                i = parent
            }
        }
        func pop() -> Bigram {
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var best = i
                    if l < heap.count && heap[l].precedes(heap[best]) { best = l }
                    if r < heap.count && heap[r].precedes(heap[best]) { best = r }
                    if best == i { break }
                    heap.swapAt(i, best)
                    i = best
                }
            }
            return top
        }
        func tryAdd(_ left: Int, _ right: Int) {
            guard left >= 0, right >= 0 else { return }
            let start = symbols[left].start
            let size = symbols[left].length + symbols[right].length
            guard let slot = table.find(base + start, size, end: end) else { return }
            push(Bigram(score: scores[Int(slot.pointee.id)], left: left, right: right, size: size))
        }

        for i in 1..<max(1, symbols.count) { tryAdd(i - 1, i) }
        while !heap.isEmpty {
            let bigram = pop()
            let left = symbols[bigram.left], right = symbols[bigram.right]
            // Skip pairs whose symbols changed since the pair was queued.
            if left.length == 0 || right.length == 0 || left.length + right.length != bigram.size { continue }
            symbols[bigram.left].length += right.length
            symbols[bigram.right].length = 0
            symbols[bigram.left].next = right.next
            if right.next >= 0 { symbols[right.next].prev = bigram.left }
            tryAdd(symbols[bigram.left].prev, bigram.left)
            tryAdd(bigram.left, symbols[bigram.left].next)
        }
        var i = 0
        while i != -1 {
            let s = symbols[i]
            if let slot = table.find(base + s.start, s.length, end: end) {
                out.append(slot.pointee.id)
            } else {
                for k in s.start..<(s.start + s.length) { out.append(byteTokens[Int(text[k])]) }
            }
            i = s.next
        }
    }

    // MARK: Decoding

    /// The bytes token `id` stands for: "▁" → space, `<0xXX>` → that byte; control tokens give
    /// nothing unless `special` (then their text). Nil for ids outside the vocabulary.
    public func tokenBytes(_ id: Int32, special: Bool = false) -> [UInt8]? {
        guard id >= 0, Int(id) < pieces.count else { return nil }
        let piece = pieces[Int(id)]
        switch types[Int(id)] {
        case .control, .unknown, .unused:
            return special ? piece : []
        case .byte:
            if piece.count == 6, let v = UInt8(String(decoding: piece[3..<5], as: UTF8.self), radix: 16) { return [v] }
            return piece
        case .normal, .userDefined:
            var out: [UInt8] = []
            out.reserveCapacity(piece.count)
            var k = 0
            while k < piece.count {
                if k + 2 < piece.count && piece[k] == 0xE2 && piece[k + 1] == 0x96 && piece[k + 2] == 0x81 {
                    out.append(0x20)
                    k += 3
                } else {
                    out.append(piece[k])
                    k += 1
                }
            }
            return out
        }
    }

    /// The bytes of a token sequence (see `tokenBytes`); throws for ids outside the vocabulary.
    public func decode(_ ids: [Int32], special: Bool = false) throws -> [UInt8] {
        var out: [UInt8] = []
        for id in ids {
            guard let b = tokenBytes(id, special: special) else {
                throw TokenizerError.tokenOutOfRange(id: id, vocabularySize: pieces.count)
            }
            out.append(contentsOf: b)
        }
        return out
    }

    /// The text of a token sequence; invalid UTF-8 is replaced by U+FFFD.
    public func decodeToString(_ ids: [Int32], special: Bool = false) throws -> String {
        String(decoding: try decode(ids, special: special), as: UTF8.self)
    }

    // MARK: tokenizer.json

    /// Loads a Hugging Face `tokenizer.json` of the Gemma layout: a BPE model with byte fallback,
    /// `vocab` {piece: id} and `added_tokens` (special ones become control tokens, the others
    /// user-defined). Pieces `<0xXX>` are byte tokens. Scores follow the vocabulary order
    /// (score = −id), which is how SentencePiece ranks Gemma's merged pieces.
    public convenience init(tokenizerJSON url: URL, addBOS: Bool = true) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TokenizerError.malformedFile(path: url.path, reason: error.localizedDescription)
        }
        try self.init(tokenizerJSON: data, source: url.path, addBOS: addBOS)
    }

    /// Reads `tokenizer.json` text already in memory (see `init(tokenizerJSON: URL)`); `source`
    /// names it in error messages.
    public convenience init(tokenizerJSON data: Data, source: String = "tokenizer.json", addBOS: Bool = true) throws {
        let root: JSONValue
        do {
            root = try data.withUnsafeBytes { raw in try JSONReader.parse(raw.bindMemory(to: UInt8.self)) }
        } catch let e as JSONSyntaxError {
            throw TokenizerError.malformedFile(path: source, reason: "JSON syntax error at byte \(e.offset): \(e.reason)")
        }
        guard let model = root["model"], case .object(let vocabMembers)? = model["vocab"] else {
            throw TokenizerError.malformedFile(path: source, reason: "no model.vocab object")
        }
        if case .string(let type)? = model["type"], type != "BPE" {
            throw TokenizerError.malformedFile(path: source, reason: "model type \(type) is not BPE")
        }
        var byID: [Int: String] = [:]
        for m in vocabMembers {
            guard case .number(let v) = m.value, let id = Int(exactly: v), id >= 0 else {
                throw TokenizerError.malformedFile(path: source, reason: "vocab entry \(m.key) has no integer id")
            }
            byID[id] = m.key
        }
        var types: [Int: Int32] = [:]
        if case .array(let added)? = root["added_tokens"] {
            for entry in added {
                guard case .number(let v)? = entry["id"], let id = Int(exactly: v), case .string(let content)? = entry["content"] else {
                    throw TokenizerError.malformedFile(path: source, reason: "added_tokens entry without id/content")
                }
                // A negative id would count towards the contiguity check below in place of a missing one.
                guard id >= 0 else { throw TokenizerError.malformedFile(path: source, reason: "added token \(content) has the negative id \(id)") }
                byID[id] = content
                var special = false
                if case .bool(let s)? = entry["special"] { special = s }
                types[id] = special ? TokenType.control.rawValue : TokenType.userDefined.rawValue
            }
        }
        let count = (byID.keys.max() ?? -1) + 1
        guard count > 0, byID.count == count else {
            throw TokenizerError.malformedFile(path: source, reason: "token ids are not contiguous (\(byID.count) tokens, largest id \(count - 1))")
        }
        var pieces: [String] = [], scores: [Float] = [], tokenTypes: [Int32] = []
        pieces.reserveCapacity(count)
        for id in 0..<count {
            guard let piece = byID[id] else { throw TokenizerError.malformedFile(path: source, reason: "token ids are not contiguous (no id \(id))") }
            pieces.append(piece)
            scores.append(-Float(id))
            if let t = types[id] {
                tokenTypes.append(t)
            } else if piece.utf8.count == 6 && piece.hasPrefix("<0x") && piece.hasSuffix(">") {
                tokenTypes.append(TokenType.byte.rawValue)
            } else {
                tokenTypes.append(TokenType.normal.rawValue)
            }
        }
        guard let bos = pieces.firstIndex(of: "<bos>"), let eos = pieces.firstIndex(of: "<eos>") else {
            throw TokenizerError.malformedFile(path: source, reason: "no <bos> or <eos> token")
        }
        try self.init(pieces: pieces, scores: scores, types: tokenTypes, bosTokenID: Int32(bos), eosTokenID: Int32(eos),
                      addBOS: addBOS, addSpacePrefix: false, source: source)
    }
}

extension VocabularyTable {
    /// The id stored for exactly `bytes`, or nil.
    static func lookup(_ table: VocabularyTable, _ bytes: [UInt8]) -> Int32? {
        bytes.withUnsafeBufferPointer { b in
            guard let p = b.baseAddress, !b.isEmpty else { return nil }
            return table.find(p, b.count, end: p + b.count)?.pointee.id
        }
    }
}
