import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3Tokenizers

/// Which tokens of a fine-tuning example the loss covers.
public enum LossScope: String, Sendable, Codable, CaseIterable {
    /// The assistant turns (`messages`) or the completion (`prompt` + `completion`); all of `text`.
    case completions
    /// Every token.
    case all
}

/// A fine-tuning set from JSON Lines, one example per line, in one of three shapes:
/// `{"messages": [{"role": "system"|"user"|"assistant", "content": "…"}, …]}` (Gemma's chat template),
/// `{"prompt": "…", "completion": "…"}` (the completion followed by end of text), or `{"text": "…"}`.
///
/// Each example is one row of a batch, padded to the block size (no packing: examples never see each
/// other); longer ones are cut at the block size. Without a separate validation file, the examples whose
/// line hashes (FNV-1a) to 0 mod 10 are held out. The training order is a new shuffle every epoch, a
/// pure function of the seed and the number of examples drawn (the sampler's whole state).
public final class FineTuneDataset: TrainingCorpus {
    /// One tokenized example.
    public struct Example: Sendable, Equatable {
        public var tokens: [Int32]
        /// Per position: whether predicting `tokens[i]` counts in the loss (position 0 never does).
        public var learned: [Bool]
        public init(tokens: [Int32], learned: [Bool]) { self.tokens = tokens; self.learned = learned }
    }

    public let train: [Example]
    public let validation: [Example]
    /// Examples (of both splits) cut at the block size.
    public let truncated: Int
    public let blockSize: Int
    private let bytesPerToken: (train: Double, val: Double)
    private let counts: (train: Int, val: Int)
    private let entropy: Double

    /// Reads and tokenizes `data` (and `validationData` when given).
    public init(data: URL, validationData: URL? = nil, tokenizer: any TextTokenizer, blockSize: Int,
                lossScope: LossScope = .completions) throws {
        guard blockSize >= 2 else { throw TrainingError.invalidData("block size must be at least 2 for fine-tuning") }
        self.blockSize = blockSize
        let lines = try Self.readLines(data)
        var train: [Example] = [], validation: [Example] = []
        var heldOutByHash: [(hash: UInt64, example: Example)] = []
        var truncated = 0
        for (number, line) in lines {
            var example = try Self.example(line, number: number, file: data.path, tokenizer: tokenizer, lossScope: lossScope)
            if example.tokens.count > blockSize + 1 {
                truncated += 1
                example.tokens.removeLast(example.tokens.count - blockSize - 1)
                example.learned.removeLast(example.learned.count - blockSize - 1)
            }
            guard example.learned.dropFirst().contains(true) else {
                throw TrainingError.invalidData("\(data.path):\(number): nothing to learn within the first \(blockSize) tokens (raise --block-size, or --train-on all)")
            }
            let hash = Self.fnv1a(line)
            if validationData == nil && hash % 10 == 0 { heldOutByHash.append((hash, example)) } else { train.append(example) }
        }
        if let validationData {
            for (number, line) in try Self.readLines(validationData) {
                var example = try Self.example(line, number: number, file: validationData.path, tokenizer: tokenizer, lossScope: lossScope)
                if example.tokens.count > blockSize + 1 {
                    truncated += 1
                    example.tokens.removeLast(example.tokens.count - blockSize - 1)
                    example.learned.removeLast(example.learned.count - blockSize - 1)
                }
                if example.learned.dropFirst().contains(true) { validation.append(example) }
            }
        } else {
            validation = heldOutByHash.map(\.example)
            if validation.isEmpty && train.count >= 2 {
                // No line hashed into the held-out tenth (a small set): hold out the smallest hash's.
                let hashes = lines.map { Self.fnv1a($0.1) }
                let i = hashes.indices.min { hashes[$0] < hashes[$1] }!
                validation = [train.remove(at: i)]
            }
        }
        guard !train.isEmpty else { throw TrainingError.invalidData("\(data.path): no training examples") }
        guard !validation.isEmpty else {
            throw TrainingError.invalidData("\(data.path): no validation example (give --val-data, or at least two examples)")
        }
        self.train = train
        self.validation = validation
        self.truncated = truncated
        func stats(_ examples: [Example]) -> (count: Int, bytes: Int, frequencies: [Int32: Int]) {
            var count = 0, bytes = 0, frequencies: [Int32: Int] = [:]
            for e in examples {
                for i in 1..<e.tokens.count where e.learned[i] {
                    count += 1
                    bytes += tokenizer.bytes(of: e.tokens[i])?.count ?? 0
                    frequencies[e.tokens[i], default: 0] += 1
                }
            }
            return (count, bytes, frequencies)
        }
        let (trainCount, trainBytes, frequencies) = stats(train)
        let (valCount, valBytes, _) = stats(validation)
        counts = (trainCount, valCount)
        bytesPerToken = (Double(trainBytes) / Double(max(1, trainCount)), Double(valBytes) / Double(max(1, valCount)))
        var h = 0.0
        for (_, k) in frequencies { let p = Double(k) / Double(trainCount); h -= p * log2(p) }
        entropy = h
    }

    /// The non-empty lines of a JSON Lines file with their 1-based numbers; invalid UTF-8 is refused.
    static func readLines(_ url: URL) throws -> [(Int, [UInt8])] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TrainingError.io("cannot read \(url.path): \(FileManager.default.fileExists(atPath: url.path) ? "unreadable" : "no such file")")
        }
        return try lines(of: [UInt8](data), source: url.path)
    }

    /// Every example of a JSON Lines document in memory, with its line number (the parser the fuzz
    /// target drives; `init` reads files through it).
    public static func examples(jsonLines bytes: [UInt8], source: String, tokenizer: any TextTokenizer,
                                lossScope: LossScope = .completions) throws -> [(line: Int, example: Example)] {
        try lines(of: bytes, source: source).map { ($0.0, try example($0.1, number: $0.0, file: source, tokenizer: tokenizer, lossScope: lossScope)) }
    }

    static func lines(of bytes: [UInt8], source: String) throws -> [(Int, [UInt8])] {
        let url = URL(fileURLWithPath: source)
        guard String(validating: bytes, as: UTF8.self) != nil else { throw TrainingError.invalidData("\(url.path) is not valid UTF-8") }
        var out: [(Int, [UInt8])] = []
        var number = 0
        for line in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
            number += 1
            var l = Array(line)
            if l.last == 0x0D { l.removeLast() }
            if l.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            out.append((number, l))
        }
        guard !out.isEmpty else { throw TrainingError.invalidData("\(url.path) holds no examples") }
        return out
    }

    static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return h
    }

    /// One line → its tokens and loss mask.
    static func example(_ line: [UInt8], number: Int, file: String, tokenizer: any TextTokenizer, lossScope: LossScope) throws -> Example {
        let at = "\(file):\(number)"
        let value: JSONValue
        let parsed: Result<JSONValue, Gemma3Tokenizers.JSONSyntaxError> = line.withUnsafeBufferPointer { bytes in
            do throws(Gemma3Tokenizers.JSONSyntaxError) { return .success(try JSONReader.parse(bytes)) } catch { return .failure(error) }
        }
        switch parsed {
        case .success(let v): value = v
        case .failure(let error): throw TrainingError.invalidData("\(at): not valid JSON (\(error.reason) at byte \(error.offset))")
        }
        guard case .object = value else { throw TrainingError.invalidData("\(at): each line must be a JSON object") }
        func string(_ key: String) throws -> String? {
            switch value[key] {
            case nil, .null?: return nil
            case .string(let s)?: return s
            default: throw TrainingError.invalidData("\(at): \"\(key)\" must be a string")
            }
        }
        var segments: [(ids: [Int32], learned: Bool)] = []
        let all = lossScope == .all
        if let messages = value["messages"] {
            guard let gemma = tokenizer as? GemmaTokenizer, gemma.id(of: "<start_of_turn>") != nil else {
                throw TrainingError.invalidData("\(at): \"messages\" needs a Gemma chat vocabulary (<start_of_turn>); use prompt/completion or text")
            }
            guard case .array(let items) = messages, !items.isEmpty else { throw TrainingError.invalidData("\(at): \"messages\" must be a non-empty array") }
            var turns: [GemmaChatTemplate.Message] = []
            for (i, item) in items.enumerated() {
                guard case .string(let role)? = item["role"], ["system", "developer", "user", "assistant"].contains(role) else {
                    throw TrainingError.invalidData("\(at): messages[\(i)].role must be system, user or assistant")
                }
                guard case .string(let content)? = item["content"] else { throw TrainingError.invalidData("\(at): messages[\(i)].content must be a string") }
                turns.append(.init(role: role, content: content))
            }
            guard turns.contains(where: { $0.role == "assistant" }) else { throw TrainingError.invalidData("\(at): no assistant message to learn") }
            let rendered: [GemmaChatTemplate.Segment]
            do { rendered = try GemmaChatTemplate.segments(turns, addGenerationPrompt: false) } catch {
                throw TrainingError.invalidData("\(at): \(error.description)")
            }
            for (i, s) in rendered.enumerated() {
                segments.append((gemma.encode(s.text, addBOS: i == 0, parseSpecial: true), all || s.isAssistant))
            }
        } else if let prompt = try string("prompt") {
            guard let completion = try string("completion") else { throw TrainingError.invalidData("\(at): \"prompt\" without \"completion\"") }
            segments.append((tokenizer.encode(prompt), all))
            segments.append((plain(completion, tokenizer) + [tokenizer.endOfTextID], true))
        } else if let text = try string("text") {
            segments.append((tokenizer.encode(text) + [tokenizer.endOfTextID], true))
        } else {
            throw TrainingError.invalidData("\(at): expected \"messages\", \"prompt\" + \"completion\", or \"text\"")
        }
        var tokens: [Int32] = [], learned: [Bool] = []
        for (ids, l) in segments {
            tokens += ids
            learned += [Bool](repeating: l, count: ids.count)
        }
        if !learned.isEmpty { learned[0] = false }  // nothing predicts the first token
        guard tokens.count >= 2 else { throw TrainingError.invalidData("\(at): the example is a single token") }
        return Example(tokens: tokens, learned: learned)
    }

    /// Text that continues a sequence: no `<bos>` of its own.
    private static func plain(_ text: String, _ tokenizer: any TextTokenizer) -> [Int32] {
        if let gemma = tokenizer as? GemmaTokenizer { return gemma.encode(text, addBOS: false, parseSpecial: false) }
        return tokenizer.encode(text)
    }

    // MARK: TrainingCorpus

    public var trainTokenCount: Int { counts.train }
    public var valTokenCount: Int { counts.val }
    public var bytesPerTrainToken: Double { bytesPerToken.train }
    public var bytesPerValToken: Double { bytesPerToken.val }
    public var recordedVocabularySize: Int? { nil }

    public func largestToken() -> (id: Int, location: String) {
        let id = (train + validation).map { $0.tokens.max() ?? 0 }.max() ?? 0
        return (Int(id), "the fine-tuning data")
    }

    public func unigramEntropyBits() -> Double { entropy }

    /// Writes example `e` as one row: inputs t[0..<n−1], targets t[1..<n] where learned, padded.
    static func fill(_ e: Example, row: Int, blockSize T: Int, inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>) {
        let base = row * T
        let n = min(e.tokens.count - 1, T)
        for j in 0..<T {
            inputs[base + j] = j < n ? e.tokens[j] : 0
            targets[base + j] = j < n && e.learned[j + 1] ? e.tokens[j + 1] : -100
        }
    }

    struct EpochSampler: MicroBatchSampler {
        let examples: [Example]
        let batchSize: Int, blockSize: Int, seed: UInt64
        /// Examples drawn so far.
        var state: UInt64
        private var order: [Int] = []
        private var orderEpoch = UInt64.max

        init(examples: [Example], batchSize: Int, blockSize: Int, seed: UInt64, state: UInt64) {
            self.examples = examples; self.batchSize = batchSize; self.blockSize = blockSize; self.seed = seed; self.state = state
        }

        /// Fisher–Yates from (seed, epoch).
        private mutating func permutation(epoch: UInt64) -> [Int] {
            if epoch != orderEpoch {
                var rng = SplitMix64(seed: seed ^ 0xF1E7_0000_0000_0000 ^ (epoch &* 0x9E37_79B9_7F4A_7C15))
                order = Array(examples.indices)
                for i in stride(from: order.count - 1, to: 0, by: -1) {
                    order.swapAt(i, Int(BatchSampler.uniform(&rng, below: UInt64(i + 1))))
                }
                orderEpoch = epoch
            }
            return order
        }

        mutating func next(inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>) throws {
            let n = UInt64(examples.count)
            for b in 0..<batchSize {
                let order = permutation(epoch: state / n)
                FineTuneDataset.fill(examples[order[Int(state % n)]], row: b, blockSize: blockSize, inputs: inputs, targets: targets)
                state += 1
            }
        }
    }

    /// The examples in a fixed order, batch after batch; rows past the end are empty (no targets).
    struct FixedSampler: MicroBatchSampler {
        let examples: [Example]
        let batchSize: Int, blockSize: Int
        var state: UInt64 = 0
        mutating func next(inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>) throws {
            for b in 0..<batchSize {
                let i = Int(state)
                if i < examples.count {
                    FineTuneDataset.fill(examples[i], row: b, blockSize: blockSize, inputs: inputs, targets: targets)
                } else {
                    (inputs + b * blockSize).update(repeating: 0, count: blockSize)
                    (targets + b * blockSize).update(repeating: -100, count: blockSize)
                }
                state += 1
            }
        }
    }

    public func trainSampler(batchSize: Int, blockSize: Int, seed: UInt64, state: UInt64?) throws -> any MicroBatchSampler {
        EpochSampler(examples: train, batchSize: batchSize, blockSize: blockSize, seed: seed, state: state ?? 0)
    }

    /// Validation: every held-out example. Train: as many training examples, in a fixed shuffled order.
    public func evaluationBatches(validation: Bool, batchSize: Int, blockSize: Int, batches: Int, seed: UInt64) throws
        -> (sampler: any MicroBatchSampler, count: Int) {
        let count = (self.validation.count + batchSize - 1) / batchSize
        if validation { return (FixedSampler(examples: self.validation, batchSize: batchSize, blockSize: blockSize), count) }
        var rng = SplitMix64(seed: seed)
        var order = Array(train.indices)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(BatchSampler.uniform(&rng, below: UInt64(i + 1)))) }
        let picked = order.prefix(self.validation.count).map { train[$0] }
        return (FixedSampler(examples: picked, batchSize: batchSize, blockSize: blockSize), (picked.count + batchSize - 1) / batchSize)
    }
}
