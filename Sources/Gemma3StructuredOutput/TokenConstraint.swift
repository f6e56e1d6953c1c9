import Foundation
import Gemma3Tokenizers

/// The tokens allowed at one step, as a bitset over the vocabulary (bit `id` of word `id / 64`).
public final class TokenMask: Sendable {
    public let words: [UInt64]
    /// Number of allowed tokens.
    public let allowedCount: Int
    /// The most bytes still needed to finish the value after any one allowed token (what decides
    /// whether a token budget restricts the mask).
    public let maxBytesToCompleteAfter: Int

    init(words: [UInt64], allowedCount: Int, maxBytesToCompleteAfter: Int) {
        self.words = words
        self.allowedCount = allowedCount
        self.maxBytesToCompleteAfter = maxBytesToCompleteAfter
    }

    public func contains(_ token: TokenID) -> Bool {
        let i = Int(token)
        return i >= 0 && i < words.count * 64 && words[i >> 6] & (1 << UInt64(i & 63)) != 0
    }
}

/// Runs a `ByteGrammar` over generated tokens and tells which tokens may come next.
///
/// The recognizer state is a set of configurations (automaton state, stack), the stack a node of
/// a shared, hash-consed tree of return states, so a state is a few integers and equal states are
/// equal arrays. Usually the set has one configuration; alternatives of `anyOf` that start alike
/// keep several alive until the bytes tell them apart.
///
/// `allowedTokens` walks the vocabulary trie once from the current state, skipping each subtree
/// whose prefix is rejected, and caches the mask per state (strings, the bulk of a JSON value,
/// come back to the same state after every token). With a token budget (the tokens generation
/// may still produce) it only allows tokens after which the value can still be finished within the
/// budget, one byte per token at worst, so a constrained generation always ends with a complete
/// value when `maxNewTokens` allows one at all.
///
/// Not thread-safe: one generation at a time. The cache survives `reset()`, so reusing one
/// constraint over many generations with the same grammar gets faster.
public final class TokenConstraint: @unchecked Sendable {
    public let grammar: ByteGrammar
    public let vocabulary: TokenVocabulary

    // The stack tree; node 0 is the empty stack.
    private var stackParent: [Int32] = [-1]
    private var stackReturn: [Int32] = [-1]
    /// Fewest bytes to empty the stack from this node (return states' costs, summed).
    private var stackCost: [Int32] = [0]
    private var stackIndex: [Int64: Int32] = [:]

    /// The current configurations, pairs (state, stack), sorted.
    private var configurations: [Int32] = []
    /// Whether the bytes so far form a complete value.
    public private(set) var isComplete = false
    /// Whether more bytes can follow (false: the value is complete and nothing can extend it).
    public var canContinue: Bool { !configurations.isEmpty }

    /// Counters of the mask computation.
    public struct Statistics: Sendable {
        /// Masks computed by walking the trie.
        public var walks = 0
        /// Masks taken from the cache.
        public var cacheHits = 0
        /// Masks restricted by the token budget.
        public var budgetMasks = 0
        /// Time in `allowedTokens` (walks and lookups).
        public var maskSeconds = 0.0
        public init() {}
    }
    public private(set) var statistics = Statistics()

    private struct CacheKey: Hashable {
        let configurations: [Int32]
        let complete: Bool
        let budget: Int32
    }
    private var cache: [CacheKey: TokenMask] = [:]
    private let cacheLimit: Int

    // Walk scratch: `levelCapacity` pairs per trie depth.
    private var levelCapacity = 64
    private var levels: UnsafeMutablePointer<Int32>
    private var work: UnsafeMutablePointer<Int32>
    private var seen: UnsafeMutablePointer<Int32>

    /// A constraint of `grammar` on `vocabulary`; `cacheBytes` bounds the memory of cached masks.
    public init(grammar: ByteGrammar, vocabulary: TokenVocabulary, cacheBytes: Int = 64 << 20) {
        self.grammar = grammar
        self.vocabulary = vocabulary
        cacheLimit = max(16, cacheBytes / max(8, (vocabulary.size + 63) / 64 * 8))
        let depth = vocabulary.maxTokenBytes + 2
        levels = .allocate(capacity: depth * levelCapacity * 2)
        work = .allocate(capacity: levelCapacity * 2 * 4)
        seen = .allocate(capacity: levelCapacity * 2 * 4)
        reset()
    }

    deinit {
        levels.deallocate()
        work.deallocate()
        seen.deallocate()
    }

    /// Back to the start of a value (the mask cache is kept).
    public func reset() {
        if stackParent.count > 4_000_000 {
            // Cached keys name stack nodes; both go together.
            stackParent = [-1]; stackReturn = [-1]; stackCost = [0]; stackIndex = [:]
            cache = [:]
        }
        var out = [Int32]()
        isComplete = closeGeneral(seeds: [grammar.ruleStart[0], 0], into: &out)
        configurations = Self.sortedPairs(out)
    }

    /// Fewest bytes that finish the value from the current state (0 when it is complete).
    public var bytesToComplete: Int { Int(cost(of: configurations, complete: isComplete)) }

    // MARK: Stepping

    private func push(_ parent: Int32, _ returnState: Int32) -> Int32 {
        let key = Int64(parent) << 32 | Int64(UInt32(bitPattern: returnState))
        if let n = stackIndex[key] { return n }
        let n = Int32(stackParent.count)
        stackParent.append(parent)
        stackReturn.append(returnState)
        stackCost.append(grammar.bytesToAccept[Int(returnState)] + stackCost[Int(parent)])
        stackIndex[key] = n
        return n
    }

    /// Closes `seeds` (pairs) under calls and returns into `out` (pairs with byte transitions);
    /// returns whether the value can end here. The reference implementation (arrays, no limits).
    private func closeGeneral(seeds: [Int32], into out: inout [Int32]) -> Bool {
        var stack = seeds
        var visited = Set<Int64>()
        var complete = false
        while stack.count >= 2 {
            let s = stack.removeLast(), q = stack.removeLast()
            guard visited.insert(Int64(q) << 32 | Int64(s)).inserted else { continue }
            let qi = Int(q)
            if grammar.hasByteTransition[qi] { out.append(q); out.append(s) }
            for k in Int(grammar.callStart[qi])..<Int(grammar.callStart[qi + 1]) {
                stack.append(grammar.ruleStart[Int(grammar.callRule[k])])
                stack.append(push(s, grammar.callReturn[k]))
            }
            if grammar.accepting[qi] {
                if s == 0 { complete = true } else { stack.append(stackReturn[Int(s)]); stack.append(stackParent[Int(s)]) }
            }
        }
        return complete
    }

    /// The configurations after `byte` (reference implementation).
    private func stepGeneral(_ pairs: [Int32], _ byte: UInt8) -> (pairs: [Int32], complete: Bool) {
        let c = Int(grammar.byteClass[Int(byte)])
        var seeds: [Int32] = []
        var k = 0
        while k < pairs.count {
            let t = grammar.transitions[Int(pairs[k]) * grammar.classCount + c]
            if t >= 0 { seeds.append(t); seeds.append(pairs[k + 1]) }
            k += 2
        }
        var out: [Int32] = []
        let complete = closeGeneral(seeds: seeds, into: &out)
        return (out, complete)
    }

    private static func sortedPairs(_ pairs: [Int32]) -> [Int32] {
        var p: [(Int32, Int32)] = []
        var k = 0
        while k < pairs.count { p.append((pairs[k], pairs[k + 1])); k += 2 }
        p.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        return p.flatMap { [$0.0, $0.1] }
    }

    private func cost(of pairs: [Int32], complete: Bool) -> Int32 {
        if complete { return 0 }
        var best = ByteGrammar.unreachable
        var k = 0
        while k < pairs.count {
            best = min(best, grammar.bytesToAccept[Int(pairs[k])] + stackCost[Int(pairs[k + 1])])
            k += 2
        }
        return best
    }

    /// What `bytes` would lead to from the current state, without changing it: whether they are a
    /// valid continuation, and the fewest bytes that would then finish the value. Byte by byte on
    /// the reference implementation (what the mask is tested against).
    public func trial(_ bytes: [UInt8]) -> (valid: Bool, bytesToComplete: Int) {
        guard !bytes.isEmpty else { return (canContinue || isComplete, Int(cost(of: configurations, complete: isComplete))) }
        var pairs = configurations
        var complete = false
        for b in bytes {
            guard !pairs.isEmpty else { return (false, 0) }
            (pairs, complete) = stepGeneral(pairs, b)
        }
        guard !pairs.isEmpty || complete else { return (false, 0) }
        return (true, Int(cost(of: pairs, complete: complete)))
    }

    /// Appends a generated token's bytes; throws if they are not a valid continuation.
    public func advance(_ token: TokenID) throws(GrammarError) {
        let i = Int(token)
        guard i >= 0 && i < vocabulary.size, !vocabulary.tokenBytes[i].isEmpty else {
            throw GrammarError("token \(token) has no bytes and cannot continue the constrained value")
        }
        try advance(bytes: vocabulary.tokenBytes[i])
    }

    /// Appends bytes; throws if they are not a valid continuation.
    public func advance(bytes: [UInt8]) throws(GrammarError) {
        var pairs = configurations
        var complete = isComplete
        for b in bytes {
            guard !pairs.isEmpty else { throw GrammarError("the output would continue past the end of the constrained value") }
            (pairs, complete) = stepGeneral(pairs, b)
            if pairs.isEmpty && !complete { throw GrammarError("byte 0x\(String(b, radix: 16)) does not continue the constrained value") }
        }
        configurations = Self.sortedPairs(pairs)
        isComplete = complete
    }

    // MARK: Masks

    /// The tokens that may come next, end tokens aside (the caller adds its stop tokens when
    /// `isComplete`). With `remainingTokens` (this token included) only tokens after which the
    /// value can still be finished in the tokens left; when the budget is already too small for
    /// any, the unrestricted mask.
    public func allowedTokens(remainingTokens: Int? = nil) -> TokenMask {
        let start = DispatchTime.now().uptimeNanoseconds
        defer { statistics.maskSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9 }
        let full = cachedMask(budget: Int32.max)
        guard let remainingTokens, remainingTokens - 1 < full.maxBytesToCompleteAfter else { return full }
        statistics.budgetMasks += 1
        let restricted = cachedMask(budget: Int32(clamping: max(0, remainingTokens - 1)))
        return restricted.allowedCount > 0 ? restricted : full
    }

    private func cachedMask(budget: Int32) -> TokenMask {
        let key = CacheKey(configurations: configurations, complete: isComplete, budget: budget)
        if let m = cache[key] {
            statistics.cacheHits += 1
            return m
        }
        statistics.walks += 1
        let m = walk(budget: budget)
        if cache.count >= cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[key] = m
        return m
    }

    /// One pass over the trie from the current state.
    private func walk(budget: Int32) -> TokenMask {
        while true {
            if let m = walkOnce(budget: budget) { return m }
            // A level held more configurations than the scratch: grow it and start again.
            levelCapacity *= 4
            levels.deallocate(); work.deallocate(); seen.deallocate()
            levels = .allocate(capacity: (vocabulary.maxTokenBytes + 2) * levelCapacity * 2)
            work = .allocate(capacity: levelCapacity * 2 * 4)
            seen = .allocate(capacity: levelCapacity * 2 * 4)
        }
    }

    private func walkOnce(budget: Int32) -> TokenMask? {
        let v = vocabulary
        var words = [UInt64](repeating: 0, count: (v.size + 63) / 64)
        let depthCount = v.maxTokenBytes + 2
        let stride = levelCapacity * 2
        guard configurations.count <= stride else { return nil }
        let levelCount = UnsafeMutablePointer<Int>.allocate(capacity: depthCount)
        defer { levelCount.deallocate() }
        // Locals, not stored properties, in the loop: class properties are accessed through the
        // runtime's exclusivity checks.
        let levels = self.levels
        for k in 0..<configurations.count { levels[k] = configurations[k] }
        levelCount[0] = configurations.count / 2
        var allowed = 0
        var maxAfter: Int32 = 0
        let nodeCount = v.nodeCount
        let g = grammar
        let classCount = g.classCount
        let overflow = v.nodeByte.withUnsafeBufferPointer { nodeByte in
            v.nodeDepth.withUnsafeBufferPointer { nodeDepth in
            v.nodeSkip.withUnsafeBufferPointer { nodeSkip in
            v.nodeTokenStart.withUnsafeBufferPointer { tokenStart in
            v.nodeTokens.withUnsafeBufferPointer { tokens in
            g.transitions.withUnsafeBufferPointer { transitions in
            g.byteClass.withUnsafeBufferPointer { byteClass in
            g.isPlain.withUnsafeBufferPointer { isPlain in
            g.isFinalWithoutCalls.withUnsafeBufferPointer { isFinalWithoutCalls in
            g.hasByteTransition.withUnsafeBufferPointer { hasByteTransition in
            g.bytesToAccept.withUnsafeBufferPointer { bytesToAccept in
            words.withUnsafeMutableBufferPointer { words -> Bool in
                var i = 0
                // The stack's cost, looked up once per run of tokens on the same stack.
                var lastStack: Int32 = 0
                var lastStackCost: Int32 = 0
                while i < nodeCount {
                    let d = Int(nodeDepth[i])
                    let parent = levels + (d - 1) * stride
                    let out = levels + d * stride
                    let n = levelCount[d - 1]
                    let byte = nodeByte[i]
                    var count = 0
                    var complete = false
                    if n == 1 {
                        let t = transitions[Int(parent[0]) * classCount + Int(byteClass[Int(byte)])]
                        if t < 0 {
                            count = 0
                        } else if isPlain[Int(t)] {
                            out[0] = t
                            out[1] = parent[1]
                            count = 1
                        } else if parent[1] == 0 && isFinalWithoutCalls[Int(t)] {
                            // The closure of an accepting state on the empty stack: itself (if it
                            // can go on) and "complete".
                            out[0] = t
                            out[1] = 0
                            count = hasByteTransition[Int(t)] ? 1 : 0
                            complete = true
                        } else {
                            (count, complete) = stepInto(parent, n, byte, out)
                        }
                    } else if n > 0 {
                        (count, complete) = stepInto(parent, n, byte, out)
                    }
                    if count < 0 { return true }
                    levelCount[d] = count
                    if count == 0 && !complete {
                        i = Int(nodeSkip[i])
                        continue
                    }
                    let t0 = Int(tokenStart[i]), t1 = Int(tokenStart[i + 1])
                    if t1 > t0 {
                        var after: Int32 = 0
                        if !complete {
                            after = ByteGrammar.unreachable
                            var k = 0
                            while k < count {
                                let stack = out[2 * k + 1]
                                if stack != lastStack {
                                    lastStack = stack
                                    lastStackCost = stackCost[Int(stack)]
                                }
                                let c = bytesToAccept[Int(out[2 * k])] + lastStackCost
                                if c < after { after = c }
                                k += 1
                            }
                        }
                        if after <= budget {
                            if after > maxAfter { maxAfter = after }
                            for k in t0..<t1 {
                                let id = Int(tokens[k])
                                words[id >> 6] |= 1 << UInt64(id & 63)
                            }
                            allowed += t1 - t0
                        }
                    }
                    i = count == 0 ? Int(nodeSkip[i]) : i + 1
                }
                return false
            }}}}}}}}}}}}
        if overflow { return nil }
        return TokenMask(words: words, allowedCount: allowed, maxBytesToCompleteAfter: Int(maxAfter))
    }

    /// The general step of the walk: `n` pairs at `input`, byte `byte`, closed configurations
    /// written to `output` (at most `levelCapacity`). Returns (count, complete); count −1 when the
    /// scratch is too small.
    private func stepInto(_ input: UnsafeMutablePointer<Int32>, _ n: Int, _ byte: UInt8,
                          _ output: UnsafeMutablePointer<Int32>) -> (Int, Bool) {
        let g = grammar
        let c = Int(g.byteClass[Int(byte)])
        let levelCapacity = self.levelCapacity
        let workLimit = levelCapacity * 4
        let work = self.work, seen = self.seen
        var w = 0
        for k in 0..<n {
            let t = g.transitions[Int(input[2 * k]) * g.classCount + c]
            if t >= 0 {
                if w >= workLimit { return (-1, false) }
                work[2 * w] = t
                work[2 * w + 1] = input[2 * k + 1]
                w += 1
            }
        }
        var seenCount = 0
        var count = 0
        var complete = false
        while w > 0 {
            w -= 1
            let q = work[2 * w], s = work[2 * w + 1]
            var duplicate = false
            for k in 0..<seenCount where seen[2 * k] == q && seen[2 * k + 1] == s { duplicate = true; break }
            if duplicate { continue }
            if seenCount >= workLimit { return (-1, false) }
            seen[2 * seenCount] = q
            seen[2 * seenCount + 1] = s
            seenCount += 1
            let qi = Int(q)
            if g.hasByteTransition[qi] {
                if count >= levelCapacity { return (-1, false) }
                output[2 * count] = q
                output[2 * count + 1] = s
                count += 1
            }
            for k in Int(g.callStart[qi])..<Int(g.callStart[qi + 1]) {
                if w >= workLimit { return (-1, false) }
                work[2 * w] = g.ruleStart[Int(g.callRule[k])]
                work[2 * w + 1] = push(s, g.callReturn[k])
                w += 1
            }
            if g.accepting[qi] {
                if s == 0 {
                    complete = true
                } else {
                    if w >= workLimit { return (-1, false) }
                    work[2 * w] = stackReturn[Int(s)]
                    work[2 * w + 1] = stackParent[Int(s)]
                    w += 1
                }
            }
        }
        return (count, complete)
    }
}
