import Dispatch
import Foundation

/// GPT-2's byte-level BPE tokenizer, producing exactly the ids of tiktoken's `gpt2` encoding.
///
/// Text is split into pieces by GPT-2's pre-tokenizer pattern (see `GPT2PreTokenizer`); a piece that
/// is itself a token becomes that token, any other piece is merged byte pair by byte pair by rank
/// (`BytePairMerger`) and the result is cached for the rest of the call.
///
/// Input text must be valid UTF-8. `String` inputs always are; the byte-buffer entry points expect
/// callers to check with `validateUTF8` first (the command-line verbs do and report the offset).
public final class GPT2Tokenizer: Sendable {
    /// The id of `<|endoftext|>` in GPT-2's vocabulary.
    public static let endOfTextID: Int32 = 50256
    public static let endOfTextString = "<|endoftext|>"

    /// Number of token ids (largest id + 1): 50257 for GPT-2.
    public let vocabularySize: Int
    /// Id of `<|endoftext|>` in the loaded vocabulary (50256 for GPT-2's files).
    public let endOfTextTokenID: Int32
    /// Special tokens (not produced by BPE), recognised by `encode(_:allowSpecial: true)`.
    public let specialTokens: [String: Int32]

    /// Byte-level tokens: bytes -> (id, rank); rank Int32.max for tokens BPE never makes.
    let vocabulary: VocabularyTable
    /// Token id of each byte value.
    let byteIDs: ByteIDTable
    /// Bytes of every token id, for decoding: `tokenBytes[tokenOffsets[id] ..< tokenOffsets[id + 1]]`;
    /// ids that the files leave unassigned have `tokenAssigned[id] == false`.
    let tokenBytesArena: [UInt8]
    let tokenOffsets: [Int32]
    let tokenAssigned: [Bool]

    // MARK: - Loading

    /// Builds a tokenizer from a byte-level vocabulary (token strings in GPT-2's byte-to-unicode
    /// alphabet -> id) and merge rules in priority order. Vocabulary entries that are neither a
    /// single byte nor the result of a merge (such as `<|endoftext|>`) become special tokens, as do
    /// the `addedTokens` (written as plain text).
    public convenience init(vocabulary: [(token: String, id: Int)], merges: [(String, String)],
                            addedTokens: [(content: String, id: Int)] = [], source: String = "vocabulary") throws {
        var files = GPT2VocabularySource(path: source)
        for (token, id) in vocabulary { files.appendToken(utf8: Array(token.utf8), id: id) }
        for (left, right) in merges { files.appendMerge(utf8: Array(left.utf8) + Array(right.utf8)) }
        files.addedTokens = addedTokens
        try self.init(files)
    }

    /// Loads `vocab.json` + `merges.txt` (Hugging Face), `encoder.json` + `vocab.bpe` (OpenAI), or a
    /// GPT-2 style `tokenizer.json` (Hugging Face tokenizers), looked for in that order.
    public convenience init(directory: URL) throws {
        switch try Self.tokenizerFiles(in: directory) {
        case .vocabularyAndMerges(let vocabularyURL, let mergesURL):
            try self.init(try Self.readVocabularyAndMerges(vocabularyURL, mergesURL))
        case .tokenizerJSON(let url):
            try self.init(try Self.readTokenizerJSON(url))
        }
    }

    /// Builds the tokenizer from the contents of `vocab.json` and `merges.txt` (or `encoder.json`
    /// and `vocab.bpe`) already in memory, read exactly as `init(directory:)` reads the files; the
    /// names stand for their paths in error messages.
    public convenience init(vocabularyJSON: [UInt8], merges: [UInt8], vocabularyName: String = "vocab.json",
                            mergesName: String = "merges.txt") throws {
        try self.init(try Self.parseVocabularyAndMerges(vocabulary: vocabularyJSON, vocabularyPath: vocabularyName,
                                                        merges: merges, mergesPath: mergesName))
    }

    /// Builds the tokenizer from a GPT-2 style `tokenizer.json` already in memory, read exactly as
    /// `init(directory:)` reads the file; `name` stands for its path in error messages.
    public convenience init(tokenizerJSON: [UInt8], name: String = "tokenizer.json") throws {
        try self.init(try Self.parseTokenizerJSON(tokenizerJSON, path: name))
    }

    /// Builds the tables. Ranks follow tiktoken: a single byte ranks as its id, the token made by the
    /// i-th merge rule ranks 256 + i, and byte-level tokens that no rule makes are not mergeable.
    init(_ files: GPT2VocabularySource) throws {
        func malformed(_ reason: String) -> TokenizerError { .malformedFile(path: files.path, reason: reason) }
        let count = files.tokenIDs.count
        guard count > 0 else { throw malformed("empty vocabulary") }
        let largestID = max(files.tokenIDs.max()!, files.addedTokens.map(\.id).max() ?? 0, Int(Self.endOfTextID))
        guard files.tokenIDs.min()! >= 0, files.addedTokens.allSatisfy({ $0.id >= 0 }), largestID < 1 << 24 else {
            throw malformed("token ids must lie in 0..<16777216")
        }

        // Every entry's bytes in one arena: byte-level spellings decoded, special tokens as UTF-8.
        var arena: [UInt8] = []
        arena.reserveCapacity(files.tokenSpellings.count + 64)
        var entryOffset: [Int32] = []
        var entryLength: [Int32] = []
        var entryID: [Int32] = []
        var entryIsSpecial: [Bool] = []
        var entryOfID = [Int32](repeating: -1, count: largestID + 1)
        func addEntry(id: Int, special: Bool, start: Int) throws {
            if entryOfID[id] >= 0 { throw malformed("token id \(id) appears twice") }
            entryOfID[id] = Int32(entryID.count)
            entryOffset.append(Int32(start))
            entryLength.append(Int32(arena.count - start))
            entryID.append(Int32(id))
            entryIsSpecial.append(special)
        }
        func entryText(_ k: Int) -> String {
            String(decoding: arena[Int(entryOffset[k]) ..< Int(entryOffset[k] + entryLength[k])], as: UTF8.self)
        }
        try files.tokenSpellings.withUnsafeBufferPointer { spellings in
            var start = 0
            for k in 0 ..< count {
                let spelling = UnsafeBufferPointer(rebasing: spellings[start ..< files.tokenEnds[k]])
                start = files.tokenEnds[k]
                let before = arena.count
                var special = false
                if !ByteLevelAlphabet.decode(utf8: spelling, appendingTo: &arena) {
                    arena.removeSubrange(before...)
                    arena.append(contentsOf: spelling)  // not byte-level text: a special token
                    special = true
                }
                try addEntry(id: files.tokenIDs[k], special: special, start: before)
            }
        }
        for (content, id) in files.addedTokens {
            let utf8 = Array(content.utf8)
            let existing = Int(entryOfID[id])
            if existing >= 0 {
                guard entryText(existing) == content else { throw malformed("added token \(content) reuses id \(id)") }
                entryIsSpecial[existing] = true
            } else {
                let start = arena.count
                arena += utf8
                try addEntry(id: id, special: true, start: start)
            }
        }
        if entryOfID[Int(Self.endOfTextID)] < 0 && !entryID.indices.contains(where: { entryText($0) == Self.endOfTextString }) {
            // encoder.json-style files without <|endoftext|>: tiktoken adds it as id 50256.
            let start = arena.count
            arena += Array(Self.endOfTextString.utf8)
            try addEntry(id: Int(Self.endOfTextID), special: true, start: start)
        }

        // The byte-level tokens, keyed by their bytes.
        var tableEntries: [(offset: Int32, length: Int32, id: Int32)] = []
        tableEntries.reserveCapacity(entryID.count)
        for k in entryID.indices where !entryIsSpecial[k] && entryLength[k] > 0 {
            tableEntries.append((entryOffset[k], entryLength[k], entryID[k]))
        }
        let table = VocabularyTable(keyBytes: arena, entries: tableEntries)
        func slot(_ bytes: UnsafeBufferPointer<UInt8>) -> UnsafeMutablePointer<VocabularySlot>? {
            table.find(bytes.baseAddress!, bytes.count, end: bytes.baseAddress! + bytes.count)
        }
        var byteIDs = [Int32](repeating: -1, count: 256)
        for b in 0 ..< 256 {
            guard let s = [UInt8(b)].withUnsafeBufferPointer(slot) else { throw malformed("no token for byte \(b)") }
            s.pointee.rank = s.pointee.id
            byteIDs[b] = s.pointee.id
        }
        var merged: [UInt8] = []
        try files.mergeSpellings.withUnsafeBufferPointer { spellings in
            var start = 0
            for (index, end) in files.mergeEnds.enumerated() {
                let spelling = UnsafeBufferPointer(rebasing: spellings[start ..< end])
                start = end
                merged.removeAll(keepingCapacity: true)
                guard ByteLevelAlphabet.decode(utf8: spelling, appendingTo: &merged), merged.count >= 2 else {
                    throw malformed("merge \(index + 1) (\(String(decoding: spelling, as: UTF8.self))) is not byte-level text")
                }
                guard let s = merged.withUnsafeBufferPointer(slot) else {
                    throw malformed("merge \(index + 1) (\(String(decoding: spelling, as: UTF8.self))) makes a token missing from the vocabulary")
                }
                s.pointee.rank = Int32(256 + index)  // a repeated rule re-ranks, as in tiktoken's dict
            }
        }

        // Special tokens: the non-byte-level entries, and byte-level ones that BPE never makes.
        var specials: [String: Int32] = [:]
        arena.withUnsafeBufferPointer { arenaBytes in
            for k in entryID.indices {
                var special = entryIsSpecial[k]
                if !special {
                    let bytes = UnsafeBufferPointer(rebasing: arenaBytes[Int(entryOffset[k]) ..< Int(entryOffset[k] + entryLength[k])])
                    special = bytes.isEmpty || slot(bytes).map { $0.pointee.rank == Int32.max } ?? true
                }
                if special { specials[entryText(k)] = entryID[k] }
            }
        }

        // Bytes of each id, for decoding.
        vocabularySize = Int(entryID.max()!) + 1
        var decodeArena: [UInt8] = []
        decodeArena.reserveCapacity(arena.count)
        var offsets = [Int32](repeating: 0, count: vocabularySize + 1)
        var assigned = [Bool](repeating: false, count: vocabularySize)
        for id in 0 ..< vocabularySize {
            offsets[id] = Int32(decodeArena.count)
            let k = Int(entryOfID[id])
            if k >= 0 {
                decodeArena += arena[Int(entryOffset[k]) ..< Int(entryOffset[k] + entryLength[k])]
                assigned[id] = true
            }
        }
        offsets[vocabularySize] = Int32(decodeArena.count)
        tokenBytesArena = decodeArena
        tokenOffsets = offsets
        tokenAssigned = assigned
        specialTokens = specials
        endOfTextTokenID = specials[Self.endOfTextString] ?? Self.endOfTextID
        self.vocabulary = table
        self.byteIDs = ByteIDTable(byteIDs)
    }

    // MARK: - Encoding

    /// Encodes text as tiktoken's `gpt2` `encode_ordinary` does: special-token text such as
    /// `<|endoftext|>` is ordinary text.
    public func encodeOrdinary(_ text: String) -> [Int32] {
        var text = text
        var out: [Int32] = []
        text.withUTF8 { encodeOrdinary(utf8: $0, into: &out) }
        return out
    }

    /// Appends the ordinary encoding of `utf8` to `out`, on the calling thread. `utf8` must be valid
    /// UTF-8 (check with `validateUTF8`); invalid bytes are never read out of bounds, but the ids
    /// are then unspecified.
    public func encodeOrdinary(utf8: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        guard let base = utf8.baseAddress, utf8.count > 0 else { return }
        var cache = PieceCache()
        out.reserveCapacity(out.count + utf8.count / 4 + 16)
        encodeChunk(base, utf8.count, into: &out, cache: &cache)
    }

    /// Encodes `utf8` on `threads` threads and returns the same ids as the single-threaded call.
    /// The text is cut only where the pre-tokenizer's pieces cannot change (a space or newline right
    /// after a non-space ASCII character), into pieces that the threads take in turn.
    public func encodeOrdinary(utf8: UnsafeBufferPointer<UInt8>, threads: Int) -> [Int32] {
        let minimumChunk = 1 << 16
        let workers = max(1, min(threads, utf8.count / minimumChunk))
        if workers == 1 {
            var out: [Int32] = []
            encodeOrdinary(utf8: utf8, into: &out)
            return out
        }
        // About 8 chunks per worker, so a worker slowed by other load does not hold the rest up.
        return encodeOrdinary(utf8: utf8, threads: workers, chunkBytes: max(minimumChunk, utf8.count / (workers * 8)))
    }

    /// Parallel encoding with chunks of about `chunkBytes` (each ends at the first safe split at or
    /// after that size). Internal so tests can force tiny chunks and so many split points.
    func encodeOrdinary(utf8: UnsafeBufferPointer<UInt8>, threads workers: Int, chunkBytes target: Int) -> [Int32] {
        guard let base = utf8.baseAddress, utf8.count > 0 else { return [] }
        let n = utf8.count
        var bounds = [0]
        var position = 0
        while position < n {
            var cut = position + max(1, target)
            if cut >= n {
                cut = n
            } else {
                while cut < n && !GPT2PreTokenizer.isSafeSplit(base, at: cut) { cut += 1 }
            }
            bounds.append(cut)
            position = cut
        }
        let chunkCount = bounds.count - 1
        var results = [[Int32]](repeating: [], count: chunkCount)
        let nextChunk = ChunkCounter()
        results.withUnsafeMutableBufferPointer { results in
            let shared = UnsafeSendable((results.baseAddress!, base, bounds))
            DispatchQueue.concurrentPerform(iterations: workers) { _ in
                let (results, base, bounds) = shared.value
                var cache = PieceCache()
                while let c = nextChunk.take(below: chunkCount) {
                    var out: [Int32] = []
                    let start = bounds[c]
                    out.reserveCapacity((bounds[c + 1] - start) / 4 + 16)
                    self.encodeChunk(base + start, bounds[c + 1] - start, into: &out, cache: &cache)
                    results[c] = out
                }
            }
        }
        var out: [Int32] = []
        out.reserveCapacity(results.reduce(0) { $0 + $1.count })
        for part in results { out += part }
        return out
    }

    /// Encodes text, turning special-token text (`<|endoftext|>`) into its id only when
    /// `allowSpecial` is true; otherwise the same as `encodeOrdinary`.
    public func encode(_ text: String, allowSpecial: Bool) -> [Int32] {
        var text = text
        var out: [Int32] = []
        text.withUTF8 { encode(utf8: $0, allowSpecial: allowSpecial, into: &out) }
        return out
    }

    /// Byte-buffer form of `encode(_:allowSpecial:)`; `utf8` must be valid UTF-8.
    public func encode(utf8: UnsafeBufferPointer<UInt8>, allowSpecial: Bool, into out: inout [Int32]) {
        guard allowSpecial, let base = utf8.baseAddress, !specialTokens.isEmpty else {
            encodeOrdinary(utf8: utf8, into: &out)
            return
        }
        // Longest special token first, so one that is a prefix of another never wins.
        let specials = specialTokens.map { (Array($0.key.utf8), $0.value) }.filter { !$0.0.isEmpty }
            .sorted { $0.0.count > $1.0.count }
        var isFirstByte = [Bool](repeating: false, count: 256)
        for (bytes, _) in specials { isFirstByte[Int(bytes[0])] = true }
        let n = utf8.count
        var segmentStart = 0
        var i = 0
        var cache = PieceCache()
        while i < n {
            if isFirstByte[Int(base[i])] {
                var matched: (Int, Int32)? = nil
                for (bytes, id) in specials where bytes.count <= n - i {
                    if bytes.withUnsafeBufferPointer({ memoryEqual(base + i, $0.baseAddress!, $0.count) }) {
                        matched = (bytes.count, id)
                        break
                    }
                }
                if let (length, id) = matched {
                    encodeChunk(base + segmentStart, i - segmentStart, into: &out, cache: &cache)
                    out.append(id)
                    i += length
                    segmentStart = i
                    continue
                }
            }
            i += 1
        }
        encodeChunk(base + segmentStart, n - segmentStart, into: &out, cache: &cache)
    }

    /// The hot loop: pre-tokenize `p[0..<n]` and append each piece's ids.
    @inline(__always)
    func encodeChunk(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32], cache: inout PieceCache) {
        let preTokenizer = GPT2PreTokenizer()
        let vocabulary = self.vocabulary
        let byteIDs = UnsafePointer(self.byteIDs.ids)
        let merger = BytePairMerger(vocabulary: vocabulary, byteIDs: byteIDs)
        let end = p + n
        var i = 0
        while i < n {
            let e = preTokenizer.pieceEnd(p, n, i)
            let length = e - i
            if length == 1 {
                out.append(byteIDs[Int(p[i])])
            } else if let slot = vocabulary.find(p + i, length, end: end), slot.pointee.rank != Int32.max {
                out.append(slot.pointee.id)  // the whole piece is a token (not one BPE never makes)
            } else if !cache.lookup(p + i, length, end: end, into: &out) {
                let before = out.count
                merger.encode(p + i, length, bufferEnd: end, into: &out)
                out.withUnsafeBufferPointer { ids in
                    cache.insert(p + i, length, ids: UnsafeBufferPointer(rebasing: ids[before...]))
                }
            }
            i = e
        }
    }

    // MARK: - Decoding

    /// The exact bytes of the tokens; throws for an id outside the vocabulary.
    public func decode(_ ids: [Int32]) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(ids.count * 4)
        try tokenOffsets.withUnsafeBufferPointer { offsets in
            try tokenBytesArena.withUnsafeBufferPointer { arena in
                for id in ids {
                    guard id >= 0 && Int(id) < vocabularySize && tokenAssigned[Int(id)] else {
                        throw TokenizerError.tokenOutOfRange(id: id, vocabularySize: vocabularySize)
                    }
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: arena[Int(offsets[Int(id)]) ..< Int(offsets[Int(id) + 1])]))
                }
            }
        }
        return out
    }

    /// The text of the tokens; byte sequences that are not valid UTF-8 become U+FFFD.
    public func decodeToString(_ ids: [Int32]) throws -> String {
        String(decoding: try decode(ids), as: UTF8.self)
    }

    /// The bytes of one token, or nil for an id outside the vocabulary.
    public func tokenBytes(_ id: Int32) -> [UInt8]? {
        guard id >= 0 && Int(id) < vocabularySize && tokenAssigned[Int(id)] else { return nil }
        return Array(tokenBytesArena[Int(tokenOffsets[Int(id)]) ..< Int(tokenOffsets[Int(id) + 1])])
    }
}

/// The 256 byte -> token id entries, in memory the hot loop can read through a raw pointer.
final class ByteIDTable: @unchecked Sendable {
    let ids: UnsafeMutablePointer<Int32>
    init(_ values: [Int32]) {
        ids = .allocate(capacity: 256)
        for b in 0 ..< 256 { ids[b] = values[b] }
    }
    deinit { ids.deallocate() }
}

/// Hands out chunk indices to the worker threads of one parallel encode.
final class ChunkCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var next = 0
    func take(below limit: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard next < limit else { return nil }
        next += 1
        return next - 1
    }
}

/// Pointers shared by the workers of one parallel call; each worker writes disjoint elements.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
