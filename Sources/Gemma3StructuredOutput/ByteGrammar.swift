// Gemma3StructuredOutput: constrained decoding. A JSON Schema, "any JSON object" or a regular
// expression is compiled into a `ByteGrammar` (deterministic automata over bytes that call each
// other: a pushdown automaton); `TokenConstraint` walks a trie of the vocabulary's byte strings
// through it to find, at each step, the tokens that keep the output a valid prefix.

/// A set of byte values.
public struct ByteSet: Hashable, Sendable {
    var w0: UInt64 = 0, w1: UInt64 = 0, w2: UInt64 = 0, w3: UInt64 = 0

    public init() {}
    public init(_ range: ClosedRange<UInt8>) { for b in range { insert(b) } }
    public init(_ bytes: [UInt8]) { for b in bytes { insert(b) } }

    public mutating func insert(_ b: UInt8) {
        let bit = UInt64(1) << UInt64(b & 63)
        switch b >> 6 {
        case 0: w0 |= bit
        case 1: w1 |= bit
        case 2: w2 |= bit
        default: w3 |= bit
        }
    }

    public func contains(_ b: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(b & 63)
        switch b >> 6 {
        case 0: return w0 & bit != 0
        case 1: return w1 & bit != 0
        case 2: return w2 & bit != 0
        default: return w3 & bit != 0
        }
    }

    public var isEmpty: Bool { w0 | w1 | w2 | w3 == 0 }
    public func union(_ o: ByteSet) -> ByteSet { var r = self; r.w0 |= o.w0; r.w1 |= o.w1; r.w2 |= o.w2; r.w3 |= o.w3; return r }
}

/// A regular expression over bytes whose atoms may also be calls of other rules of the grammar;
/// what the schema and regex compilers produce.
public indirect enum GrammarExpression: Sendable {
    /// One byte from the set.
    case bytes(ByteSet)
    /// The parts one after the other (empty: the empty string).
    case sequence([GrammarExpression])
    /// Any one of the alternatives (none: matches nothing).
    case choice([GrammarExpression])
    /// `min` to `max` (nil: unbounded) repetitions.
    case repetition(GrammarExpression, min: Int, max: Int?)
    /// The language of another rule (by index), matched through the stack, so rules can recurse.
    case rule(Int)

    /// The empty string.
    public static let empty = GrammarExpression.sequence([])

    /// Exactly these bytes.
    public static func literal(_ bytes: [UInt8]) -> GrammarExpression {
        bytes.count == 1 ? .bytes(ByteSet([bytes[0]])) : .sequence(bytes.map { .bytes(ByteSet([$0])) })
    }

    public static func literal(_ text: String) -> GrammarExpression { literal(Array(text.utf8)) }

    public static func optional(_ e: GrammarExpression) -> GrammarExpression { .repetition(e, min: 0, max: 1) }
}

/// Why a schema, regex or grammar could not be compiled (one line, with the JSON pointer of the
/// schema part it concerns).
public struct GrammarError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Builds a grammar rule by rule: rule 0 is the start. A rule is either an expression or a
/// hand-built automaton (`RuleBuilder`), for shapes an expression tree would duplicate (objects
/// with optional properties).
public struct GrammarBuilder: Sendable {
    var rules: [NFA?] = []

    public init() {}

    /// Reserves a rule index (so a rule can refer to itself before it is defined).
    public mutating func reserveRule() -> Int {
        rules.append(nil)
        return rules.count - 1
    }

    /// Defines rule `index` as `expression`.
    public mutating func define(_ index: Int, _ expression: GrammarExpression) {
        var nfa = NFA()
        let start = nfa.newState(), end = nfa.newState()
        nfa.add(expression, from: start, to: end)
        nfa.accepting = [end]
        rules[index] = nfa
    }

    /// Defines rule `index` from an automaton built state by state.
    public mutating func define(_ index: Int, _ automaton: RuleBuilder) {
        rules[index] = automaton.nfa
    }

    /// Determinizes every rule and links them (rule 0 is the language of the grammar).
    public func build() throws(GrammarError) -> ByteGrammar {
        var nfas: [NFA] = []
        for (i, r) in rules.enumerated() {
            guard let r else { throw GrammarError("internal: grammar rule \(i) was reserved but not defined") }
            guard !r.isTooLarge else {
                throw GrammarError("the grammar is too large (more than \(NFA.maximumStates) automaton states in one rule): reduce maxLength/maxItems or the pattern's repetition counts")
            }
            nfas.append(r)
        }
        guard !nfas.isEmpty else { throw GrammarError("internal: empty grammar") }
        return try ByteGrammar(rules: nfas)
    }
}

/// A rule's automaton built state by state; state 0 is the start.
public struct RuleBuilder: Sendable {
    var nfa = NFA()

    public init() { _ = nfa.newState() }

    public var start: Int { 0 }
    public mutating func newState() -> Int { Int(nfa.newState()) }
    /// Adds paths spelling `expression` from `from` to `to`.
    public mutating func add(_ expression: GrammarExpression, from: Int, to: Int) {
        nfa.add(expression, from: Int32(from), to: Int32(to))
    }
    public mutating func accept(_ state: Int) { nfa.accepting.append(Int32(state)) }
}

/// A nondeterministic automaton with epsilon, byte-set and call edges (Thompson construction).
struct NFA: Sendable {
    var epsilon: [[Int32]] = []
    var byteEdges: [[(ByteSet, Int32)]] = []
    var callEdges: [[(Int32, Int32)]] = []
    var accepting: [Int32] = []
    /// Set when expanding the repetitions would pass `maximumStates`: the rule is then incomplete
    /// and `GrammarBuilder.build` refuses it (nested counts multiply: `((a{1000}){1000}){1000}`).
    var isTooLarge = false
    static let maximumStates = 1_000_000

    mutating func newState() -> Int32 {
        epsilon.append([])
        byteEdges.append([])
        callEdges.append([])
        return Int32(epsilon.count - 1)
    }

    /// Adds paths spelling `e` from `from` to `to`; every state it creates is new, so the paths
    /// between `from` and `to` are exactly the strings of `e` (also when `from == to`: then `e`*).
    mutating func add(_ e: GrammarExpression, from: Int32, to: Int32) {
        switch e {
        case .bytes(let set):
            if !set.isEmpty { byteEdges[Int(from)].append((set, to)) }
        case .rule(let r):
            callEdges[Int(from)].append((Int32(r), to))
        case .sequence(let parts):
            if parts.isEmpty { epsilon[Int(from)].append(to); return }
            var current = from
            for (k, part) in parts.enumerated() {
                let next = k == parts.count - 1 ? to : newState()
                add(part, from: current, to: next)
                current = next
            }
        case .choice(let alternatives):
            for a in alternatives {
                // A fresh entry per alternative keeps loops inside one alternative from leaking.
                let entry = newState()
                epsilon[Int(from)].append(entry)
                add(a, from: entry, to: to)
            }
        case .repetition(let inner, let minCount, let maxCount):
            guard !isTooLarge else { return }
            var current = from
            for _ in 0..<minCount {
                if epsilon.count > Self.maximumStates { isTooLarge = true; return }
                let next = newState()
                add(inner, from: current, to: next)
                current = next
            }
            if let maxCount {
                for _ in minCount..<max(minCount, maxCount) {
                    if epsilon.count > Self.maximumStates { isTooLarge = true; return }
                    epsilon[Int(current)].append(to)
                    let next = newState()
                    add(inner, from: current, to: next)
                    current = next
                }
                epsilon[Int(current)].append(to)
            } else {
                let loop = newState()
                epsilon[Int(current)].append(loop)
                add(inner, from: loop, to: loop)
                epsilon[Int(loop)].append(to)
            }
        }
    }
}

/// The compiled grammar: one deterministic automaton per rule over byte classes, with call edges
/// (enter another rule; continue at a return state when it accepts). States of all rules share one
/// numbering; `TokenConstraint` runs it with a stack of return states.
public struct ByteGrammar: Sendable {
    /// Byte → class (bytes of one class behave identically everywhere in the grammar).
    let byteClass: [UInt8]
    let classCount: Int
    /// `transitions[state * classCount + class]`: the next state, or −1.
    let transitions: [Int32]
    /// Calls of state s: `callRule[callStart[s]..<callStart[s+1]]` with their return states.
    let callStart: [Int32]
    let callRule: [Int32]
    let callReturn: [Int32]
    let accepting: [Bool]
    /// No calls, not accepting, some byte transition: after reaching it, the configuration stays single.
    let isPlain: [Bool]
    /// No calls and accepting: at the bottom of the stack, reaching it means "complete, and go on
    /// with its own transitions" (regexes, where most states accept).
    let isFinalWithoutCalls: [Bool]
    let hasByteTransition: [Bool]
    /// Start state of each rule.
    let ruleStart: [Int32]
    /// Fewest bytes from the state to the end of its rule (calls included).
    let bytesToAccept: [Int32]

    /// Number of automaton states (all rules).
    public var stateCount: Int { accepting.count }
    public var ruleCount: Int { ruleStart.count }
    /// Fewest bytes of a complete value.
    public var shortestValueBytes: Int { Int(bytesToAccept[Int(ruleStart[0])]) }

    static let unreachable = Int32.max / 4
    /// Limits of determinization (states per rule; work, in subset elements touched, per grammar).
    /// A schema with a 2000-character string and a 20-item array of strings takes 7 million steps
    /// (≈ 0.3 s in release); the work limit keeps the worst pattern under ≈ 0.5 s and ≈ 300 MB.
    static let maximumDeterministicStates = 200_000
    static let maximumDeterminizationWork = 15_000_000

    init(rules: [NFA]) throws(GrammarError) {
        // Byte classes: the coarsest partition that every byte set of the grammar respects.
        var sets = Set<ByteSet>()
        for r in rules { for edges in r.byteEdges { for (s, _) in edges { sets.insert(s) } } }
        var signatureClass: [[Bool]: UInt8] = [:]
        var byteClass = [UInt8](repeating: 0, count: 256)
        let setList = Array(sets)
        var representative: [UInt8] = []
        for b in 0..<256 {
            let signature = setList.map { $0.contains(UInt8(b)) }
            if let c = signatureClass[signature] {
                byteClass[b] = c
            } else {
                let c = UInt8(representative.count)
                signatureClass[signature] = c
                representative.append(UInt8(b))
                byteClass[b] = c
            }
        }
        let classCount = representative.count

        // The byte classes each distinct byte set covers, so that a subset's transitions cost its
        // edges rather than edges × classes.
        var classListIndex: [ByteSet: Int] = [:]
        var classLists: [[Int]] = []
        for set in setList {
            classListIndex[set] = classLists.count
            classLists.append((0..<classCount).filter { set.contains(representative[$0]) })
        }

        // Subset construction per rule, within a work budget: a pattern such as `[ab]*a[ab]{999}`
        // determinizes to exponentially many subsets, and even below the state limit large subsets
        // cost time and memory; refusing it in well under a second beats compiling it for minutes.
        var work = 0
        var transitions: [Int32] = []
        var calls: [[(Int32, Int32)]] = []
        var accepting: [Bool] = []
        var ruleStart: [Int32] = []
        var targetsByClass = [[Int32]](repeating: [], count: classCount)
        for nfa in rules {
            let offset = Int32(accepting.count)
            ruleStart.append(offset)
            let acceptingSet = Set(nfa.accepting)
            let edges: [[(classList: Int, target: Int32)]] = nfa.byteEdges.map { list in
                list.map { (classListIndex[$0.0]!, $0.1) }
            }
            var index: [[Int32]: Int32] = [:]
            var queue: [[Int32]] = []
            var mark = [Int](repeating: -1, count: nfa.epsilon.count)
            var markGeneration = 0
            func closure(_ seeds: [Int32]) -> [Int32] {
                markGeneration += 1
                var out: [Int32] = []
                var stack = seeds
                while let s = stack.popLast() {
                    if mark[Int(s)] == markGeneration { continue }
                    mark[Int(s)] = markGeneration
                    out.append(s)
                    stack.append(contentsOf: nfa.epsilon[Int(s)])
                    work += 1 + nfa.epsilon[Int(s)].count
                }
                work += seeds.count
                return out.sorted()
            }
            func id(of set: [Int32]) -> Int32 {
                if let i = index[set] { return i }
                let i = Int32(queue.count)
                index[set] = i
                queue.append(set)
                work += set.count
                return i
            }
            _ = id(of: closure([0]))
            var k = 0
            var localTransitions: [Int32] = []
            var localCalls: [[(Int32, Int32)]] = []
            var localAccepting: [Bool] = []
            while k < queue.count {
                let set = queue[k]
                k += 1
                localAccepting.append(set.contains { acceptingSet.contains($0) })
                for s in set {
                    for edge in edges[Int(s)] {
                        for c in classLists[edge.classList] { targetsByClass[c].append(edge.target) }
                        work += classLists[edge.classList].count
                    }
                }
                for c in 0..<classCount {
                    let targets = targetsByClass[c]
                    localTransitions.append(targets.isEmpty ? -1 : offset + id(of: closure(targets)))
                    targetsByClass[c].removeAll(keepingCapacity: true)
                }
                var byRule: [Int32: [Int32]] = [:]
                var order: [Int32] = []
                for s in set {
                    for (r, t) in nfa.callEdges[Int(s)] {
                        if byRule[r] == nil { order.append(r) }
                        byRule[r, default: []].append(t)
                    }
                }
                localCalls.append(order.map { r in (r, offset + id(of: closure(byRule[r]!))) })
                if queue.count > Self.maximumDeterministicStates {
                    throw GrammarError("the grammar is too large (more than \(Self.maximumDeterministicStates) automaton states in one rule): reduce maxLength/maxItems or the pattern's repetition counts")
                }
                if work > Self.maximumDeterminizationWork {
                    throw GrammarError("the grammar is too complex to compile (its automaton would need more than \(Self.maximumDeterminizationWork / 1_000_000) million steps to build): reduce maxLength/maxItems or the pattern's repetition counts")
                }
            }
            transitions += localTransitions
            calls += localCalls
            accepting += localAccepting
        }
        let stateCount = accepting.count

        // Fewest bytes to accept, by Knuth's generalisation of Dijkstra's algorithm: a state costs
        // 1 + its byte successor's cost, or a called rule's cost + the return state's cost; both are
        // monotone and no smaller than their inputs, so states settle in increasing cost order.
        // (Plain repeated relaxation took one pass per state of a long chain.)
        var cost = [Int32](repeating: Self.unreachable, count: stateCount)
        // dependents[x]: (s, other): cost[s] ≤ cost[x] + (other < 0 ? 1 : cost[other]).
        var dependents = [[(state: Int32, other: Int32)]](repeating: [], count: stateCount)
        for s in 0..<stateCount {
            var last: Int32 = -1
            for c in 0..<classCount {
                let t = transitions[s * classCount + c]
                if t >= 0 && t != last { dependents[Int(t)].append((Int32(s), -1)); last = t }
            }
            for (r, t) in calls[s] {
                let callee = ruleStart[Int(r)]
                dependents[Int(t)].append((Int32(s), callee))
                dependents[Int(callee)].append((Int32(s), t))
            }
        }
        var heap = MinHeap()
        for s in 0..<stateCount where accepting[s] { cost[s] = 0; heap.push(0, Int32(s)) }
        var settled = [Bool](repeating: false, count: stateCount)
        while let (c, x) = heap.pop() {
            if settled[Int(x)] || c != cost[Int(x)] { continue }
            settled[Int(x)] = true
            for (s, other) in dependents[Int(x)] where !settled[Int(s)] {
                let add = other < 0 ? 1 : cost[Int(other)]
                guard add < Self.unreachable else { continue }
                let candidate = c + add
                if candidate < cost[Int(s)] { cost[Int(s)] = candidate; heap.push(candidate, s) }
            }
        }
        guard cost[Int(ruleStart[0])] < Self.unreachable else {
            throw GrammarError("the schema or pattern admits no value at all")
        }
        // Prune dead states (no way to finish): every reachable configuration can then complete.
        for s in 0..<stateCount {
            for c in 0..<classCount {
                let t = transitions[s * classCount + c]
                if t >= 0 && cost[Int(t)] >= Self.unreachable { transitions[s * classCount + c] = -1 }
            }
            calls[s] = calls[s].filter { cost[Int(ruleStart[Int($0.0)])] < Self.unreachable && cost[Int($0.1)] < Self.unreachable }
        }
        var callStart: [Int32] = [0], callRule: [Int32] = [], callReturn: [Int32] = []
        for s in 0..<stateCount {
            for (r, t) in calls[s] { callRule.append(r); callReturn.append(t) }
            callStart.append(Int32(callRule.count))
        }
        var hasByte = [Bool](repeating: false, count: stateCount)
        for s in 0..<stateCount { for c in 0..<classCount where transitions[s * classCount + c] >= 0 { hasByte[s] = true } }

        self.byteClass = byteClass
        self.classCount = classCount
        self.transitions = transitions
        self.callStart = callStart
        self.callRule = callRule
        self.callReturn = callReturn
        self.accepting = accepting
        self.hasByteTransition = hasByte
        self.isPlain = (0..<stateCount).map { hasByte[$0] && !accepting[$0] && callStart[$0] == callStart[$0 + 1] }
        self.isFinalWithoutCalls = (0..<stateCount).map { accepting[$0] && callStart[$0] == callStart[$0 + 1] }
        self.ruleStart = ruleStart
        self.bytesToAccept = cost
        try checkLeftRecursion()
    }

    /// A rule that can call itself before consuming a byte would make the stack grow without end.
    private func checkLeftRecursion() throws(GrammarError) {
        let rules = ruleStart.count
        var edges = [[Int]](repeating: [], count: rules)
        for r in 0..<rules {
            // States reachable from the start without consuming: through calls of rules that accept "".
            var seen: Set<Int32> = [ruleStart[r]]
            var stack = [ruleStart[r]]
            while let s = stack.popLast() {
                for k in Int(callStart[Int(s)])..<Int(callStart[Int(s) + 1]) {
                    let callee = Int(callRule[k])
                    edges[r].append(callee)
                    if bytesToAccept[Int(ruleStart[callee])] == 0 && seen.insert(callReturn[k]).inserted { stack.append(callReturn[k]) }
                }
            }
        }
        var state = [UInt8](repeating: 0, count: rules)  // 0 new, 1 on the path, 2 done
        func visit(_ r: Int) -> Bool {
            if state[r] == 1 { return false }
            if state[r] == 2 { return true }
            state[r] = 1
            for e in edges[r] where !visit(e) { return false }
            state[r] = 2
            return true
        }
        for r in 0..<rules where !visit(r) {
            throw GrammarError("the schema refers to itself without consuming input (a left-recursive $ref/anyOf cycle)")
        }
    }
}

/// A binary min-heap of (cost, state) for the fewest-bytes pass.
private struct MinHeap {
    private var items: [(Int32, Int32)] = []

    mutating func push(_ cost: Int32, _ state: Int32) {
        items.append((cost, state))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[parent].0 > items[i].0 else { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> (Int32, Int32)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < items.count && items[l].0 < items[smallest].0 { smallest = l }
                if r < items.count && items[r].0 < items[smallest].0 { smallest = r }
                if smallest == i { break }
                items.swapAt(i, smallest)
                i = smallest
            }
        }
        return top
    }
}
