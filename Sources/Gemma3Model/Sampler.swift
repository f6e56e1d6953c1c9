import Foundation
import Gemma3Tokenizers
import Gemma3Kernels

/// How the next token is chosen from the logits, with Hugging Face `generate` semantics.
///
/// The logits go through, in HF's order: the repetition penalty, then temperature, top-k, top-p
/// and min-p; the survivors are renormalised and one is drawn. A temperature of 0 means greedy
/// (argmax after the repetition penalty, as HF does with `do_sample=False`).
public struct SamplingOptions: Sendable, Equatable {
    /// 0 = greedy; otherwise logits are divided by it.
    public var temperature: Float
    /// Keep only the k most likely tokens; 0 disables.
    public var topK: Int
    /// Keep the smallest set of most likely tokens whose probability sums to at least `topP`; 1 disables.
    public var topP: Float
    /// Drop tokens whose probability is below `minP` × the top probability; 0 disables.
    public var minP: Float
    /// HF repetition penalty: a seen token's logit is divided by it when positive, multiplied when
    /// negative. 1 disables. "Seen" means in the prompt or generated so far.
    public var repetitionPenalty: Float
    /// Seed of the sampler's random generator (sampling is reproducible for a given seed).
    public var seed: UInt64

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, minP: Float = 0,
                repetitionPenalty: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.seed = seed
    }

    /// Greedy decoding (argmax).
    public static let greedy = SamplingOptions()

    /// Whether the options draw at random (temperature > 0).
    public var isSampling: Bool { temperature > 0 }

    /// Throws a one-line error for values outside their domain.
    public func validate() throws {
        guard temperature >= 0, temperature.isFinite else { throw GenerationError("--temperature must be ≥ 0, got \(temperature)") }
        guard topK >= 0 else { throw GenerationError("--top-k must be ≥ 0, got \(topK)") }
        guard topP > 0, topP <= 1 else { throw GenerationError("--top-p must be in (0, 1], got \(topP)") }
        guard minP >= 0, minP <= 1 else { throw GenerationError("--min-p must be in [0, 1], got \(minP)") }
        guard repetitionPenalty > 0, repetitionPenalty.isFinite else {
            throw GenerationError("--repetition-penalty must be > 0, got \(repetitionPenalty)")
        }
    }
}

/// An error from generation or evaluation with a one-line message.
public struct GenerationError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Chooses tokens from logits according to `SamplingOptions`; owns the random state and the
/// scratch buffers, so one sampler serves a whole generation without allocating per token.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    private var rng: SplitMix64
    private var candidates: [TokenID] = []
    private var weights: [Double] = []

    public init(options: SamplingOptions) {
        self.options = options
        self.rng = SplitMix64(seed: options.seed)
    }

    /// Applies HF's repetition penalty in place to every distinct token of `seen`.
    public static func applyRepetitionPenalty(_ logits: UnsafeMutableBufferPointer<Float>, seen: some Sequence<TokenID>, penalty: Float) {
        guard penalty != 1 else { return }
        var done = Set<TokenID>()
        for t in seen where t >= 0 && Int(t) < logits.count && done.insert(t).inserted {
            let v = logits[Int(t)]
            logits[Int(t)] = v < 0 ? v * penalty : v / penalty
        }
    }

    /// Index of the largest logit; the first one on ties (like `torch.argmax`).
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        guard var best = logits.first else { return 0 }
        var index = 0
        for i in 1..<logits.count where logits[i] > best {
            best = logits[i]
            index = i
        }
        return index
    }

    /// The probabilities (summing to 1) of the tokens that survive the filters, for inspection and
    /// tests: returns (token ids, probabilities). For greedy options this is the argmax with 1.
    /// `logits` is modified (repetition penalty applied).
    public mutating func distribution(_ logits: UnsafeMutableBufferPointer<Float>, seen: [TokenID] = []) -> [(TokenID, Double)] {
        Sampler.applyRepetitionPenalty(logits, seen: seen, penalty: options.repetitionPenalty)
        guard options.isSampling else { return [(TokenID(Sampler.argmax(UnsafeBufferPointer(logits))), 1)] }
        let total = filter(UnsafeBufferPointer(logits))
        return (0..<candidates.count).map { (candidates[$0], weights[$0] / total) }
    }

    /// Picks the next token. `seen` are the tokens the repetition penalty applies to (prompt and
    /// generated ids). `logits` is modified (penalty applied).
    public mutating func sample(_ logits: UnsafeMutableBufferPointer<Float>, seen: [TokenID] = []) -> TokenID {
        Sampler.applyRepetitionPenalty(logits, seen: seen, penalty: options.repetitionPenalty)
        guard options.isSampling else { return TokenID(Sampler.argmax(UnsafeBufferPointer(logits))) }
        let total = filter(UnsafeBufferPointer(logits))
        let u = rng.nextUniform() * total
        var acc = 0.0
        for i in 0..<candidates.count {
            acc += weights[i]
            if u < acc { return candidates[i] }
        }
        return candidates[candidates.count - 1]
    }

    private mutating func allTokens(_ logits: UnsafeBufferPointer<Float>, invT: Double) -> Double {
        var maxLogit = -Float.infinity
        for v in logits where v > maxLogit { maxLogit = v }
        candidates.removeAll(keepingCapacity: true)
        weights.removeAll(keepingCapacity: true)
        var total = 0.0
        for i in 0..<logits.count {
            let w = exp((Double(logits[i]) - Double(maxLogit)) * invT)
            candidates.append(Int32(i))
            weights.append(w)
            total += w
        }
        return total
    }

    /// Fills `candidates` (sorted by decreasing logit) and their unnormalised weights
    /// exp((logit − max)/T) after top-k, top-p and min-p; returns the sum of the weights.
    ///
    /// Exact, without sorting the whole vocabulary: only tokens within a logit margin of the
    /// maximum are sorted, and the margin is widened until the kept set provably lies inside it.
    private mutating func filter(_ logits: UnsafeBufferPointer<Float>) -> Double {
        let invT = 1.0 / Double(options.temperature)
        guard options.topK > 0 || options.topP < 1 || options.minP > 0 else {
            // Plain temperature sampling: every token is a candidate and no order is needed.
            return allTokens(logits, invT: invT)
        }
        var maxLogit = -Float.infinity
        for v in logits where v > maxLogit { maxLogit = v }
        let m = Double(maxLogit)
        guard m.isFinite else {
            // Degenerate logits (all −∞, or NaN from a broken model): fall back to the argmax.
            candidates = [Int32(Sampler.argmax(logits))]
            weights = [1]
            return 1
        }
        // Total mass of the whole vocabulary: top-p without top-k is relative to all tokens.
        // (With top-k, top-p is relative to the k survivors and the total is not needed.)
        var z = 0.0
        if options.topP < 1 && options.topK == 0 {
            for v in logits { z += exp((Double(v) - m) * invT) }
        }

        let k = options.topK > 0 ? min(options.topK, logits.count) : logits.count
        // min-p keeps p ≥ minP · pmax  ⇔  (logit − max)/T ≥ ln(minP).
        let minPCut = options.minP > 0 ? log(Double(options.minP)) : -Double.infinity
        var margin = 8.0  // in units of T·ln: tokens with (max − logit)/T ≤ margin are candidates
        while true {
            let cut = m - margin / invT
            candidates.removeAll(keepingCapacity: true)
            var mass = 0.0
            for i in 0..<logits.count where Double(logits[i]) >= cut {
                candidates.append(Int32(i))
                mass += exp((Double(logits[i]) - m) * invT)
            }
            // The kept set is a prefix of the sorted order. It lies among the candidates when they
            // hold all k tokens of top-k (top-p and min-p then only shorten that prefix); without
            // top-k, when they reach the top-p mass or min-p cuts above `cut`.
            if candidates.count == logits.count || margin == .infinity { break }
            if options.topK > 0 {
                if candidates.count >= k { break }
            } else if (options.topP < 1 && mass >= Double(options.topP) * z) || -margin <= minPCut {
                break
            }
            // Beyond ~1e4·T below the maximum every weight underflows to 0: take everything.
            margin = margin > 1e4 ? .infinity : margin * 2
        }
        candidates.sort { a, b in
            let la = logits[Int(a)], lb = logits[Int(b)]
            return la > lb || (la == lb && a < b)
        }
        if candidates.count > k { candidates.removeLast(candidates.count - k) }

        weights.removeAll(keepingCapacity: true)
        for c in candidates { weights.append(exp((Double(logits[Int(c)]) - m) * invT)) }

        // top-p over the distribution after top-k (HF applies the warpers in sequence, so the
        // probabilities are renormalised over the top-k survivors).
        if options.topP < 1 {
            let kept = weights.reduce(0, +)
            let zp = options.topK > 0 ? kept : z
            // HF removes tokens whose ascending cumulative probability is ≤ 1 − top_p; equivalently,
            // it keeps the descending prefix up to and including the token that reaches top_p.
            var cumulative = 0.0
            var keep = weights.count
            for i in 0..<weights.count {
                cumulative += weights[i] / zp
                if cumulative >= Double(options.topP) - 1e-12 {
                    keep = i + 1
                    break
                }
            }
            candidates.removeLast(candidates.count - keep)
            weights.removeLast(weights.count - keep)
        }
        // min-p relative to the most likely surviving token.
        if options.minP > 0, let top = weights.first {
            let threshold = Double(options.minP) * top
            var keep = weights.count
            while keep > 1 && weights[keep - 1] < threshold { keep -= 1 }
            candidates.removeLast(candidates.count - keep)
            weights.removeLast(weights.count - keep)
        }
        return weights.reduce(0, +)
    }
}
