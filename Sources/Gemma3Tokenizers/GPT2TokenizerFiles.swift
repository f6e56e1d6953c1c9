import Foundation
import Gemma3Infrastructure

/// GPT-2's byte-to-unicode alphabet: vocabulary files spell each byte as one printable character —
/// the byte itself for `!`...`~`, `¡`...`¬`, `®`...`ÿ`, and U+0100 + n for the n-th other byte
/// (so a space is `Ġ`, U+0120, and a newline `Ċ`, U+010A).
enum ByteLevelAlphabet {
    /// Scalar value -> byte, for the 256 scalars of the alphabet (-1 elsewhere); 324 entries.
    static let decoder: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        var extra = 0
        for b in 0 ..< 256 {
            let printable = (0x21 ... 0x7E).contains(b) || (0xA1 ... 0xAC).contains(b) || (0xAE ... 0xFF).contains(b)
            if printable {
                table[b] = Int16(b)
            } else {
                table[256 + extra] = Int16(b)
                extra += 1
            }
        }
        return table
    }()

    /// Appends the bytes that a UTF-8 vocabulary spelling stands for; false when the spelling is
    /// empty or has a character outside the alphabet (then `out` holds a partial result).
    static func decode(utf8: UnsafeBufferPointer<UInt8>, appendingTo out: inout [UInt8]) -> Bool {
        if utf8.isEmpty { return false }
        return decoder.withUnsafeBufferPointer { table in
            var k = 0
            while k < utf8.count {
                let b0 = utf8[k]
                var scalar: Int
                if b0 < 0x80 {
                    scalar = Int(b0)
                    k += 1
                } else if b0 >= 0xC2 && b0 <= 0xDF && k + 1 < utf8.count && utf8[k + 1] & 0xC0 == 0x80 {
                    scalar = Int(b0 & 0x1F) << 6 | Int(utf8[k + 1] & 0x3F)
                    k += 2
                } else {
                    return false  // the alphabet stops at U+0143: never 3- or 4-byte sequences
                }
                guard scalar < table.count, table[scalar] >= 0 else { return false }
                out.append(UInt8(table[scalar]))
            }
            return true
        }
    }
}

/// Token spellings and merge rules as read from tokenizer files (UTF-8, in GPT-2's byte-to-unicode
/// alphabet), before `GPT2Tokenizer` builds its tables from them.
struct GPT2VocabularySource {
    /// File named in error messages.
    var path: String
    /// The vocabulary: spelling k is `tokenSpellings[tokenEnds[k - 1] ..< tokenEnds[k]]`, id `tokenIDs[k]`.
    var tokenSpellings: [UInt8] = []
    var tokenEnds: [Int] = []
    var tokenIDs: [Int] = []
    /// The merge rules in priority order, each as its two spellings concatenated (only the bytes of
    /// the token a rule makes matter for ranking).
    var mergeSpellings: [UInt8] = []
    var mergeEnds: [Int] = []
    /// Special tokens of tokenizer.json's `added_tokens` (plain text).
    var addedTokens: [(content: String, id: Int)] = []

    init(path: String) { self.path = path }

    mutating func appendToken<C: Collection>(utf8: C, id: Int) where C.Element == UInt8 {
        tokenSpellings.append(contentsOf: utf8)
        tokenEnds.append(tokenSpellings.count)
        tokenIDs.append(id)
    }

    mutating func appendMerge<C: Collection>(utf8: C) where C.Element == UInt8 {
        mergeSpellings.append(contentsOf: utf8)
        mergeEnds.append(mergeSpellings.count)
    }
}

extension GPT2Tokenizer {
    enum FileLayout {
        case vocabularyAndMerges(URL, URL)
        case tokenizerJSON(URL)
    }

    /// Which files of `directory` to load; throws `missingFiles` when there are none.
    static func tokenizerFiles(in directory: URL) throws -> FileLayout {
        let fm = FileManager.default
        func exists(_ name: String) -> URL? {
            let url = directory.appendingPathComponent(name)
            return fm.fileExists(atPath: url.path) ? url : nil
        }
        if let v = exists("vocab.json"), let m = exists("merges.txt") { return .vocabularyAndMerges(v, m) }
        if let v = exists("encoder.json"), let m = exists("vocab.bpe") { return .vocabularyAndMerges(v, m) }
        if let t = exists("tokenizer.json") { return .tokenizerJSON(t) }
        throw TokenizerError.missingFiles(directory: directory.path)
    }

    static func readFile(_ url: URL) throws -> [UInt8] {
        do {
            return Array(try Data(contentsOf: url))
        } catch {
            throw TokenizerError.malformedFile(path: url.path, reason: "cannot read: \(error.localizedDescription)")
        }
    }

    static func parseJSON(_ bytes: [UInt8], path: String) throws -> JSONValue {
        do {
            return try bytes.withUnsafeBufferPointer { try JSONReader.parse($0) }
        } catch let error as JSONSyntaxError {
            throw TokenizerError.malformedFile(path: path, reason: "JSON error at byte \(error.offset): \(error.reason)")
        }
    }

    /// `vocab.json` + `merges.txt`, or `encoder.json` + `vocab.bpe` (same formats).
    static func readVocabularyAndMerges(_ vocabularyURL: URL, _ mergesURL: URL) throws -> GPT2VocabularySource {
        try parseVocabularyAndMerges(vocabulary: try readFile(vocabularyURL), vocabularyPath: vocabularyURL.path,
                                     merges: try readFile(mergesURL), mergesPath: mergesURL.path)
    }

    /// The contents of `vocab.json` and `merges.txt`; the paths name them in error messages.
    static func parseVocabularyAndMerges(vocabulary: [UInt8], vocabularyPath: String, merges: [UInt8],
                                         mergesPath: String) throws -> GPT2VocabularySource {
        var source = GPT2VocabularySource(path: vocabularyPath)
        source.tokenSpellings.reserveCapacity(vocabulary.count / 2)
        do {
            try vocabulary.withUnsafeBufferPointer { bytes throws(JSONSyntaxError) in
                try JSONReader.forEachIntegerMember(bytes) { key, id throws(JSONSyntaxError) in
                    source.appendToken(utf8: key, id: id)
                }
            }
        } catch {
            throw TokenizerError.malformedFile(path: vocabularyPath, reason: "JSON error at byte \(error.offset): \(error.reason)")
        }
        if source.tokenIDs.isEmpty { throw TokenizerError.malformedFile(path: vocabularyPath, reason: "empty vocabulary") }
        try parseMerges(merges, path: mergesPath, into: &source)
        return source
    }

    /// `merges.txt` / `vocab.bpe`: an optional `#version` line, then one "left right" pair per line.
    static func parseMerges(_ bytes: [UInt8], path: String, into source: inout GPT2VocabularySource) throws {
        source.mergeSpellings.reserveCapacity(bytes.count)
        var lineNumber = 0
        var lineStart = 0
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count && bytes[lineEnd] != 0x0A { lineEnd += 1 }
            lineNumber += 1
            var end = lineEnd
            if end > lineStart && bytes[end - 1] == 0x0D { end -= 1 }
            defer { lineStart = lineEnd + 1 }
            if end == lineStart || (lineNumber == 1 && bytes[lineStart] == UInt8(ascii: "#")) { continue }
            var space = -1
            for k in lineStart ..< end where bytes[k] == 0x20 {
                if space >= 0 { space = -2; break }
                space = k
            }
            guard space > lineStart && space < end - 1 else {
                throw TokenizerError.malformedFile(path: path, reason: "line \(lineNumber) is not a merge \"left right\"")
            }
            source.mergeSpellings.append(contentsOf: bytes[lineStart ..< space])
            source.mergeSpellings.append(contentsOf: bytes[space + 1 ..< end])
            source.mergeEnds.append(source.mergeSpellings.count)
        }
        if source.mergeEnds.isEmpty { throw TokenizerError.malformedFile(path: path, reason: "no merges") }
    }

    /// A Hugging Face `tokenizer.json` with a byte-level BPE model (merges as "a b" strings or
    /// ["a", "b"] pairs).
    static func readTokenizerJSON(_ url: URL) throws -> GPT2VocabularySource {
        try parseTokenizerJSON(try readFile(url), path: url.path)
    }

    /// The contents of a `tokenizer.json`; `path` names it in error messages.
    static func parseTokenizerJSON(_ bytes: [UInt8], path: String) throws -> GPT2VocabularySource {
        func malformed(_ reason: String) -> TokenizerError { .malformedFile(path: path, reason: reason) }
        let root = try parseJSON(bytes, path: path)
        guard let model = root["model"] else { throw malformed("no \"model\" object") }
        if case .string(let type)? = model["type"], type != "BPE" { throw malformed("model type is \(type), not BPE") }
        var source = GPT2VocabularySource(path: path)
        guard case .object(let members)? = model["vocab"] else { throw malformed("no \"vocab\" object") }
        for member in members {
            guard case .number(let number) = member.value, let id = Int(exactly: number) else {
                throw malformed("the id of \(member.key) is not an integer")
            }
            source.appendToken(utf8: member.key.utf8, id: id)
        }
        guard case .array(let items)? = model["merges"] else { throw malformed("no \"merges\" array") }
        for (index, item) in items.enumerated() {
            switch item {
            case .string(let s):
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { throw malformed("merge \(index) is not \"left right\"") }
                source.appendMerge(utf8: Array(parts[0].utf8) + Array(parts[1].utf8))
            case .array(let pair):
                guard pair.count == 2, case .string(let a) = pair[0], case .string(let b) = pair[1] else {
                    throw malformed("merge \(index) is not a pair of strings")
                }
                source.appendMerge(utf8: Array(a.utf8) + Array(b.utf8))
            default:
                throw malformed("merge \(index) is neither a string nor a pair")
            }
        }
        if case .array(let tokens)? = root["added_tokens"] {
            for token in tokens {
                guard case .string(let content)? = token["content"], case .number(let number)? = token["id"],
                      let id = Int(exactly: number) else {
                    throw malformed("an added token lacks content or id")
                }
                source.addedTokens.append((content, id))
            }
        }
        return source
    }

    // MARK: - Checksums

    /// SHA-256 of the official GPT-2 files (OpenAI's `encoder.json`/`vocab.bpe`, byte-identical to
    /// Hugging Face's `vocab.json`/`merges.txt` for `openai-community/gpt2`).
    public static let knownSHA256: [String: String] = [
        "vocab.json": vocabularySHA256, "encoder.json": vocabularySHA256,
        "merges.txt": mergesSHA256, "vocab.bpe": mergesSHA256,
    ]
    static let vocabularySHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    static let mergesSHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

    /// Checks the SHA-256 of the GPT-2 files present in `directory` (`vocab.json`, `merges.txt`,
    /// `encoder.json`, `vocab.bpe`) against the official ones and returns the names checked.
    /// Throws `checksumMismatch` for a file that differs and `missingFiles` when neither a
    /// vocab.json + merges.txt nor an encoder.json + vocab.bpe pair is there.
    @discardableResult
    public static func verifyChecksums(directory: URL) throws -> [String] {
        let fm = FileManager.default
        let present = ["vocab.json", "merges.txt", "encoder.json", "vocab.bpe"].filter {
            fm.fileExists(atPath: directory.appendingPathComponent($0).path)
        }
        let hasPair = (present.contains("vocab.json") && present.contains("merges.txt"))
            || (present.contains("encoder.json") && present.contains("vocab.bpe"))
        guard hasPair else { throw TokenizerError.missingFiles(directory: directory.path) }
        for name in present {
            let url = directory.appendingPathComponent(name)
            try verifyChecksum(file: url, expected: knownSHA256[name]!)
        }
        return present
    }

    /// Throws `checksumMismatch` unless the SHA-256 of `file` is `expected` (lower-case hex).
    public static func verifyChecksum(file: URL, expected: String) throws {
        let actual: String
        do {
            actual = try SHA256Hasher.hex(ofFile: file)
        } catch {
            throw TokenizerError.malformedFile(path: file.path, reason: "cannot read: \(error.localizedDescription)")
        }
        if actual != expected.lowercased() {
            throw TokenizerError.checksumMismatch(path: file.path, expected: expected, actual: actual)
        }
    }
}
