import Foundation
import Gemma3Kernels

/// Random training windows from a token file, nanoGPT style: each sequence of a batch is
/// `block_size + 1` consecutive tokens starting at a uniformly random offset; the model reads the
/// first `block_size` as inputs and predicts the last `block_size` as targets.
///
/// The sampler is a pure function of its `state` (one SplitMix64 word), which the trainer saves
/// in `trainer_state.json`; restoring it replays exactly the same batches (exact resume).
public struct BatchSampler: Sendable {
    /// The token stream (kept alive by the sampler).
    public let tokens: TokenFile
    public let batchSize: Int
    public let blockSize: Int
    /// The generator; its state is the whole "data position".
    public var rng: SplitMix64

    /// Window length: inputs plus the one extra target token.
    public var windowLength: Int { blockSize + 1 }

    /// Tokens of one batch of windows ([batch_size, block_size + 1]).
    public var batchTokenCount: Int { batchSize * windowLength }

    /// Throws if the file is too short to hold one window.
    public init(tokens: TokenFile, batchSize: Int, blockSize: Int, seed: UInt64) throws {
        guard tokens.count >= blockSize + 1 else {
            throw TrainingError.invalidData(
                "\(tokens.url.lastPathComponent) has \(tokens.count) tokens, fewer than one window of block_size + 1 = \(blockSize + 1)")
        }
        self.tokens = tokens
        self.batchSize = batchSize
        self.blockSize = blockSize
        self.rng = SplitMix64(seed: seed)
    }

    /// Uniform integer in 0..<bound without modulo bias (Lemire's multiply-and-reject).
    static func uniform(_ rng: inout SplitMix64, below bound: UInt64) -> UInt64 {
        var r = rng.next().multipliedFullWidth(by: bound)
        if r.low < bound {
            let threshold = (0 &- bound) % bound
            while r.low < threshold { r = rng.next().multipliedFullWidth(by: bound) }
        }
        return r.high
    }

    /// Fills `windows` ([batch_size × (block_size + 1)] Int32) with the next batch and advances the state.
    /// Throws if a token is outside the model's vocabulary (data prepared with another tokenizer).
    public mutating func next(into windows: UnsafeMutableBufferPointer<Int32>, vocabularySize: Int) throws {
        precondition(windows.count >= batchTokenCount, "window buffer too small")
        let starts = UInt64(tokens.count - windowLength + 1)
        let src = tokens.tokens.baseAddress!
        for b in 0..<batchSize {
            let start = Int(BatchSampler.uniform(&rng, below: starts))
            let dst = windows.baseAddress! + b * windowLength
            var bad = false
            for i in 0..<windowLength {
                let t = src[start + i]
                bad = bad || Int(t) >= vocabularySize
                dst[i] = Int32(t)
            }
            if bad {
                let t = (0..<windowLength).map { Int(src[start + $0]) }.first { $0 >= vocabularySize }!
                throw TrainingError.invalidData(
                    "\(tokens.url.lastPathComponent) holds token id \(t) but the model's vocabulary has \(vocabularySize) entries (data prepared with another tokenizer?)")
            }
        }
    }

    /// Splits windows [B, T+1] into inputs [B, T] and targets [B, T] (targets = inputs shifted by one).
    public static func split(
        windows: UnsafeBufferPointer<Int32>, batchSize: Int, blockSize: Int,
        inputs: UnsafeMutableBufferPointer<Int32>, targets: UnsafeMutableBufferPointer<Int32>
    ) {
        for b in 0..<batchSize {
            let w = windows.baseAddress! + b * (blockSize + 1)
            (inputs.baseAddress! + b * blockSize).update(from: w, count: blockSize)
            (targets.baseAddress! + b * blockSize).update(from: w + 1, count: blockSize)
        }
    }
}
