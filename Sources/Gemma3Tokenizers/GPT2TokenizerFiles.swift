import Foundation

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

    /// The bytes a vocabulary string spells, or nil when it has a character outside the alphabet.
    static func decode(_ token: String, _ table: [Int16]) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(token.utf8.count)
        for scalar in token.unicodeScalars {
            let v = Int(scalar.value)
            guard v < table.count, table[v] >= 0 else { return nil }
            bytes.append(UInt8(table[v]))
        }
        return bytes.isEmpty ? nil : bytes
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

    static func parseJSON(_ url: URL) throws -> JSONValue {
        let bytes = try readFile(url)
        do {
            return try bytes.withUnsafeBufferPointer { try JSONReader.parse($0) }
        } catch let error as JSONSyntaxError {
            throw TokenizerError.malformedFile(path: url.path, reason: "JSON error at byte \(error.offset): \(error.reason)")
        }
    }

    /// Reads `token -> id` pairs from a JSON object.
    static func vocabularyEntries(_ value: JSONValue?, path: String) throws -> [(token: String, id: Int)] {
        guard case .object(let members)? = value else {
            throw TokenizerError.malformedFile(path: path, reason: "the vocabulary is not a JSON object")
        }
        var entries: [(token: String, id: Int)] = []
        entries.reserveCapacity(members.count)
        for member in members {
            let key = member.key, value = member.value
            guard case .number(let number) = value, let id = Int(exactly: number) else {
                throw TokenizerError.malformedFile(path: path, reason: "the id of \(key) is not an integer")
            }
            entries.append((key, id))
        }
        if entries.isEmpty { throw TokenizerError.malformedFile(path: path, reason: "empty vocabulary") }
        return entries
    }

    /// `vocab.json` / `encoder.json`.
    static func readVocabulary(_ url: URL) throws -> [(token: String, id: Int)] {
        try vocabularyEntries(try parseJSON(url), path: url.path)
    }

    /// `merges.txt` / `vocab.bpe`: an optional `#version` line, then one "left right" pair per line.
    static func readMerges(_ url: URL) throws -> [(String, String)] {
        let bytes = try readFile(url)
        if let offset = bytes.withUnsafeBufferPointer(firstInvalidUTF8Offset) {
            throw TokenizerError.malformedFile(path: url.path, reason: "invalid UTF-8 at byte \(offset)")
        }
        var merges: [(String, String)] = []
        merges.reserveCapacity(50_000)
        var lineNumber = 0
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(line)
            if line.hasSuffix("\r") { line = line.dropLast() }
            if line.isEmpty || (lineNumber == 1 && line.hasPrefix("#")) { continue }
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw TokenizerError.malformedFile(path: url.path, reason: "line \(lineNumber) is not a merge \"left right\"")
            }
            merges.append((String(parts[0]), String(parts[1])))
        }
        if merges.isEmpty { throw TokenizerError.malformedFile(path: url.path, reason: "no merges") }
        return merges
    }

    /// A Hugging Face `tokenizer.json` with a byte-level BPE model (merges as "a b" strings or
    /// ["a", "b"] pairs).
    static func readTokenizerJSON(_ url: URL) throws
        -> (vocabulary: [(token: String, id: Int)], merges: [(String, String)], added: [(content: String, id: Int)]) {
        let root = try parseJSON(url)
        guard let model = root["model"] else {
            throw TokenizerError.malformedFile(path: url.path, reason: "no \"model\" object")
        }
        if case .string(let type)? = model["type"], type != "BPE" {
            throw TokenizerError.malformedFile(path: url.path, reason: "model type is \(type), not BPE")
        }
        let vocabulary = try vocabularyEntries(model["vocab"], path: url.path)
        guard case .array(let items)? = model["merges"] else {
            throw TokenizerError.malformedFile(path: url.path, reason: "no \"merges\" array")
        }
        var merges: [(String, String)] = []
        merges.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            switch item {
            case .string(let s):
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw TokenizerError.malformedFile(path: url.path, reason: "merge \(index) is not \"left right\"")
                }
                merges.append((String(parts[0]), String(parts[1])))
            case .array(let pair):
                guard pair.count == 2, case .string(let a) = pair[0], case .string(let b) = pair[1] else {
                    throw TokenizerError.malformedFile(path: url.path, reason: "merge \(index) is not a pair of strings")
                }
                merges.append((a, b))
            default:
                throw TokenizerError.malformedFile(path: url.path, reason: "merge \(index) is neither a string nor a pair")
            }
        }
        var added: [(content: String, id: Int)] = []
        if case .array(let tokens)? = root["added_tokens"] {
            for token in tokens {
                guard case .string(let content)? = token["content"], case .number(let number)? = token["id"],
                      let id = Int(exactly: number) else {
                    throw TokenizerError.malformedFile(path: url.path, reason: "an added token lacks content or id")
                }
                added.append((content, id))
            }
        }
        return (vocabulary, merges, added)
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
            actual = try SHA256.hexDigest(ofFile: file)
        } catch {
            throw TokenizerError.malformedFile(path: file.path, reason: "cannot read: \(error.localizedDescription)")
        }
        if actual != expected.lowercased() {
            throw TokenizerError.checksumMismatch(path: file.path, expected: expected, actual: actual)
        }
    }
}
