import Foundation
import Gemma3Kernels

/// Fills micro-batches ([B·T] inputs and targets, `ignoreIndex` −100 where nothing is learned)
/// from a state of one word, which the trainer saves: restoring it replays the same batches.
public protocol MicroBatchSampler {
    /// The data position (saved in `trainer_state.json` as `sampler_state`).
    var state: UInt64 { get set }
    mutating func next(inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>) throws
}

/// What a run learns from: the token files of `gemma3 prepare` (pre-training) or the examples of a
/// fine-tuning set. The trainer's loop is the same for both.
public protocol TrainingCorpus: AnyObject {
    /// Tokens of the train split (recorded in the trainer state; a resume on other data is refused).
    var trainTokenCount: Int { get }
    var valTokenCount: Int { get }
    /// UTF-8 bytes per counted token of each split (for bits per byte).
    var bytesPerTrainToken: Double { get }
    var bytesPerValToken: Double { get }
    /// The vocabulary the data was tokenized with, where recorded (checked against the model's).
    var recordedVocabularySize: Int? { get }
    /// The largest token id in either split, with where it is (for the error message).
    func largestToken() -> (id: Int, location: String)
    /// Entropy of the train split's token frequencies, bits per token.
    func unigramEntropyBits() -> Double
    /// The training batches, positioned at `state` (0 for a new run: the corpus maps it to its start).
    func trainSampler(batchSize: Int, blockSize: Int, seed: UInt64, state: UInt64?) throws -> any MicroBatchSampler
    /// The fixed evaluation batches of a split and how many there are.
    func evaluationBatches(validation: Bool, batchSize: Int, blockSize: Int, batches: Int, seed: UInt64) throws
        -> (sampler: any MicroBatchSampler, count: Int)
}

/// Pre-training data: `train.bin`/`val.bin` windows drawn by `BatchSampler`.
public final class TokenFileCorpus: TrainingCorpus {
    public let meta: DatasetMeta
    public let train: TokenFile
    public let val: TokenFile
    let directory: URL

    /// Reads `meta.json` and both token files of a prepared directory and checks them against each other.
    public init(directory: URL) throws {
        self.directory = directory
        meta = try DatasetMeta.load(directory: directory)
        train = try TokenFile(url: directory.appendingPathComponent(DatasetMeta.trainFileName))
        val = try TokenFile(url: directory.appendingPathComponent(DatasetMeta.valFileName))
        let metaPath = directory.appendingPathComponent(DatasetMeta.metaFileName).path
        try DatasetMeta.verify(train, against: meta.train, metaPath: metaPath)
        try DatasetMeta.verify(val, against: meta.val, metaPath: metaPath)
    }

    public var trainTokenCount: Int { train.count }
    public var valTokenCount: Int { val.count }
    public var bytesPerTrainToken: Double { meta.train.bytesPerToken }
    public var bytesPerValToken: Double { meta.val.bytesPerToken }
    public var recordedVocabularySize: Int? { meta.vocabSize }

    public func largestToken() -> (id: Int, location: String) {
        let (t, v) = (Int(train.maximumToken()), Int(val.maximumToken()))
        let file = t >= v ? DatasetMeta.trainFileName : DatasetMeta.valFileName
        return (max(t, v), directory.appendingPathComponent(file).path)
    }

    public func unigramEntropyBits() -> Double { Gemma3Training.unigramEntropyBits(train) }

    struct WindowSampler: MicroBatchSampler {
        var sampler: BatchSampler
        let windows: UnsafeMutableBufferPointer<Int32>
        let vocabularySize: Int
        var state: UInt64 {
            get { sampler.rng.state }
            set { sampler.rng.state = newValue }
        }
        mutating func next(inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>) throws {
            try sampler.next(into: windows, vocabularySize: vocabularySize)
            let n = sampler.batchSize * sampler.blockSize
            BatchSampler.split(windows: UnsafeBufferPointer(windows), batchSize: sampler.batchSize, blockSize: sampler.blockSize,
                               inputs: UnsafeMutableBufferPointer(start: inputs, count: n), targets: UnsafeMutableBufferPointer(start: targets, count: n))
        }
    }

    /// The windows' scratch buffers live as long as the corpus (a run's few samplers).
    private var scratch: [UnsafeMutableBufferPointer<Int32>] = []
    deinit { scratch.forEach { $0.deallocate() } }

    private func windowSampler(tokens: TokenFile, batchSize: Int, blockSize: Int, seed: UInt64) throws -> WindowSampler {
        let sampler = try BatchSampler(tokens: tokens, batchSize: batchSize, blockSize: blockSize, seed: seed)
        let windows = UnsafeMutableBufferPointer<Int32>.allocate(capacity: sampler.batchTokenCount)
        scratch.append(windows)
        return WindowSampler(sampler: sampler, windows: windows, vocabularySize: Int(Int32.max))
    }

    public func trainSampler(batchSize: Int, blockSize: Int, seed: UInt64, state: UInt64?) throws -> any MicroBatchSampler {
        var s = try windowSampler(tokens: train, batchSize: batchSize, blockSize: blockSize, seed: 0)
        s.state = state ?? Trainer.samplerSeed(seed)
        return s
    }

    public func evaluationBatches(validation: Bool, batchSize: Int, blockSize: Int, batches: Int, seed: UInt64) throws
        -> (sampler: any MicroBatchSampler, count: Int) {
        (try windowSampler(tokens: validation ? val : train, batchSize: batchSize, blockSize: blockSize, seed: seed), batches)
    }
}
