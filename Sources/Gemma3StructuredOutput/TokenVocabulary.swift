import Gemma3Tokenizers

/// The byte strings of a vocabulary as a trie laid out in depth-first order, which is what the
/// mask computation walks: one pass over flat arrays, skipping a whole subtree as soon as its
/// prefix is rejected. Built once per tokenizer (≈ 0.1–0.3 s for Gemma's 262,144 tokens) and
/// shared by every constraint on that tokenizer.
///
/// Tokens without bytes (control tokens such as `<eos>` or `<end_of_turn>`) are not in the trie:
/// they never continue a constrained value. Gemma's byte-fallback tokens `<0xNN>` stand for their
/// byte and `▁` for a space, as `TextTokenizer.bytes(of:)` gives them.
public final class TokenVocabulary: Sendable {
    /// Number of token ids (mask length).
    public let size: Int
    /// The bytes of each token (empty for control tokens and unknown ids).
    public let tokenBytes: [[UInt8]]
    /// Node i's byte (the last byte of its prefix).
    let nodeByte: [UInt8]
    /// Node i's prefix length (1 for children of the root).
    let nodeDepth: [UInt16]
    /// The index after node i's subtree.
    let nodeSkip: [Int32]
    /// Tokens spelled exactly by node i's prefix: `nodeTokens[nodeTokenStart[i]..<nodeTokenStart[i+1]]`.
    let nodeTokenStart: [Int32]
    let nodeTokens: [Int32]
    /// The longest token in bytes.
    public let maxTokenBytes: Int
    /// Whether every byte value is a token by itself (then any byte string can be produced, one
    /// byte per token: what the token budget of `TokenConstraint` relies on).
    public let hasEverySingleByte: Bool

    /// Number of trie nodes.
    public var nodeCount: Int { nodeByte.count }

    /// The vocabulary of a tokenizer.
    public convenience init(tokenizer: any TextTokenizer) {
        self.init(tokenBytes: (0..<tokenizer.vocabularySize).map { tokenizer.bytes(of: TokenID($0)) ?? [] })
    }

    /// A vocabulary from each token's bytes (index = id; empty = never allowed).
    public init(tokenBytes: [[UInt8]]) {
        size = tokenBytes.count
        self.tokenBytes = tokenBytes
        let order = (0..<tokenBytes.count).filter { !tokenBytes[$0].isEmpty }.sorted { a, b in
            let x = tokenBytes[a], y = tokenBytes[b]
            return x.lexicographicallyPrecedes(y) || (x == y && a < b)
        }
        var bytes: [UInt8] = [], depth: [UInt16] = [], skip: [Int32] = [], tokenStart: [Int32] = [], tokens: [Int32] = []
        var tokenNode: [Int32] = []
        var path: [Int32] = []  // node indices of the current prefix
        var previous: [UInt8] = []
        var single = ByteSet()
        var longest = 0
        for id in order {
            let t = tokenBytes[id]
            longest = max(longest, t.count)
            if t.count == 1 { single.insert(t[0]) }
            var common = 0
            while common < min(t.count, previous.count, path.count) && t[common] == previous[common] { common += 1 }
            while path.count > common { skip[Int(path.removeLast())] = Int32(bytes.count) }
            for k in common..<t.count {
                path.append(Int32(bytes.count))
                bytes.append(t[k])
                depth.append(UInt16(min(k + 1, Int(UInt16.max))))
                skip.append(0)
            }
            tokenNode.append(path.last!)
            tokens.append(Int32(id))
            previous = t
        }
        while let n = path.popLast() { skip[Int(n)] = Int32(bytes.count) }
        // Tokens are in node order (sorted bytes), so each node's tokens are contiguous.
        tokenStart = [Int32](repeating: 0, count: bytes.count + 1)
        var k = 0
        for node in 0..<bytes.count {
            tokenStart[node] = Int32(k)
            while k < tokenNode.count && Int(tokenNode[k]) == node { k += 1 }
        }
        tokenStart[bytes.count] = Int32(k)
        nodeByte = bytes
        nodeDepth = depth
        nodeSkip = skip
        nodeTokenStart = tokenStart
        nodeTokens = tokens
        maxTokenBytes = longest
        hasEverySingleByte = (0..<256).allSatisfy { single.contains(UInt8($0)) }
    }
}
