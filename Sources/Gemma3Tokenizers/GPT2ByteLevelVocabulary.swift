import Foundation

/// A GPT-2 vocabulary as GGUF's `gpt2` tokenizer model stores it (`tokenizer.ggml.tokens`,
/// `tokenizer.ggml.merges`): every id's spelling in GPT-2's byte-to-unicode alphabet, ids in order,
/// and the merge rules in priority order as "left right".
public struct GPT2ByteLevelVocabulary: Sendable, Equatable {
    /// Spelling of each id (special tokens as their plain text, e.g. `<|endoftext|>`).
    public var tokens: [String]
    /// Merge rules, highest priority first, each "left right".
    public var merges: [String]
    /// Ids that BPE never produces (special tokens such as `<|endoftext|>`).
    public var specialIDs: Set<Int>

    public init(tokens: [String], merges: [String], specialIDs: Set<Int>) {
        self.tokens = tokens
        self.merges = merges
        self.specialIDs = specialIDs
    }

    /// Reads the tokenizer files of `directory` (`vocab.json` + `merges.txt`, `encoder.json` +
    /// `vocab.bpe`, or a byte-level `tokenizer.json`, as `GPT2Tokenizer(directory:)` looks for them).
    /// Throws when the ids do not run 0..<count without gaps (GGUF stores tokens by position).
    public init(directory: URL) throws {
        var byID: [Int: String] = [:]
        var merges: [String] = []
        var addedIDs = Set<Int>()
        let path: String
        switch try GPT2Tokenizer.tokenizerFiles(in: directory) {
        case .vocabularyAndMerges(let vocabularyURL, let mergesURL):
            path = vocabularyURL.path
            guard let object = try JSONSerialization.jsonObject(with: Data(contentsOf: vocabularyURL)) as? [String: Any] else {
                throw TokenizerError.malformedFile(path: path, reason: "not a JSON object of token → id")
            }
            for (token, id) in object {
                guard let id = id as? Int else { throw TokenizerError.malformedFile(path: path, reason: "id of \(token) is not an integer") }
                byID[id] = token
            }
            let text = String(decoding: try Data(contentsOf: mergesURL), as: UTF8.self)
            for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
                if line.hasPrefix("#version") { continue }
                guard line.split(separator: " ").count == 2 else {
                    throw TokenizerError.malformedFile(path: mergesURL.path, reason: "merge rule \"\(line)\" is not two tokens")
                }
                merges.append(String(line))
            }
        case .tokenizerJSON(let url):
            path = url.path
            guard let root = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any],
                  let model = root["model"] as? [String: Any], let vocab = model["vocab"] as? [String: Any] else {
                throw TokenizerError.malformedFile(path: path, reason: "no model.vocab object")
            }
            for (token, id) in vocab {
                guard let id = id as? Int else { throw TokenizerError.malformedFile(path: path, reason: "id of \(token) is not an integer") }
                byID[id] = token
            }
            for added in root["added_tokens"] as? [[String: Any]] ?? [] {
                if let id = added["id"] as? Int, let content = added["content"] as? String {
                    byID[id] = content
                    addedIDs.insert(id)
                }
            }
            for rule in model["merges"] as? [Any] ?? [] {
                if let s = rule as? String { merges.append(s) }
                else if let pair = rule as? [String], pair.count == 2 { merges.append(pair[0] + " " + pair[1]) }
                else { throw TokenizerError.malformedFile(path: path, reason: "a merge rule is neither \"a b\" nor [a, b]") }
            }
        }
        guard !byID.isEmpty, let largest = byID.keys.max(), largest == byID.count - 1, byID.keys.min() == 0 else {
            throw TokenizerError.malformedFile(path: path, reason: "token ids do not run 0..<\(byID.count) without gaps")
        }
        let tokens = (0 ..< byID.count).map { byID[$0]! }
        // GPT2Tokenizer's rule: an entry that is neither one byte of the alphabet nor made by a merge
        // rule is special, and so is every added token.
        let made = Set(merges.map { $0.replacingOccurrences(of: " ", with: "") })
        var special = addedIDs
        for (id, token) in tokens.enumerated() where !made.contains(token) {
            var bytes: [UInt8] = []
            let oneByte = token.unicodeScalars.count == 1
                && Array(token.utf8).withUnsafeBufferPointer { ByteLevelAlphabet.decode(utf8: $0, appendingTo: &bytes) }
            if !oneByte { special.insert(id) }
        }
        self.init(tokens: tokens, merges: merges, specialIDs: special)
    }
}

extension GPT2Tokenizer {
    /// Whether `directory` holds GPT-2 tokenizer files `GPT2Tokenizer(directory:)` would read.
    public static func hasTokenizerFiles(in directory: URL) -> Bool {
        (try? tokenizerFiles(in: directory)) != nil
    }

    /// A tokenizer from a vocabulary as GGUF stores it (`GPT2ByteLevelVocabulary`).
    public convenience init(_ vocabulary: GPT2ByteLevelVocabulary, source: String) throws {
        var merges: [(String, String)] = []
        merges.reserveCapacity(vocabulary.merges.count)
        for rule in vocabulary.merges {
            let parts = rule.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { throw TokenizerError.malformedFile(path: source, reason: "merge rule \"\(rule)\" is not two tokens") }
            merges.append((String(parts[0]), String(parts[1])))
        }
        try self.init(vocabulary: vocabulary.tokens.enumerated().map { ($0.element, $0.offset) }, merges: merges, source: source)
    }
}
