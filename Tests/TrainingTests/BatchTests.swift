import Foundation
import Testing
@testable import Gemma3Training

/// A temporary directory removed when the value is released.
final class TemporaryDirectory {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-train-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
}

func writeTokens(_ tokens: [UInt16], to url: URL) throws {
    let data = tokens.withUnsafeBufferPointer { Data(buffer: $0) }
    try data.write(to: url)
}

@Suite struct BatchTests {
    @Test func windowsAreConsecutiveTokensAndReproducibleFromTheState() throws {
        let dir = try TemporaryDirectory()
        let url = dir.url.appendingPathComponent("train.bin")
        try writeTokens((0..<5000).map { UInt16($0 % 1000) }, to: url)
        let file = try TokenFile(url: url)
        var sampler = try BatchSampler(tokens: file, batchSize: 4, blockSize: 16, seed: 42)
        var a = [Int32](repeating: 0, count: sampler.batchTokenCount)
        var starts = Set<Int32>()
        for _ in 0..<200 {
            try a.withUnsafeMutableBufferPointer { try sampler.next(into: $0, vocabularySize: 1000) }
            for b in 0..<4 {
                let w = Array(a[(b * 17)..<(b * 17 + 17)])
                for i in 1..<17 { #expect(w[i] == (w[i - 1] + 1) % 1000) }
                starts.insert(w[0])
            }
        }
        #expect(starts.count > 500)  // offsets spread over the file
        // Restoring the saved state replays the same batches.
        let saved = sampler.rng
        var x = a, y = a
        try x.withUnsafeMutableBufferPointer { try sampler.next(into: $0, vocabularySize: 1000) }
        sampler.rng = saved
        try y.withUnsafeMutableBufferPointer { try sampler.next(into: $0, vocabularySize: 1000) }
        #expect(x == y)
        // The same seed gives the same stream; another seed does not.
        var s1 = try BatchSampler(tokens: file, batchSize: 4, blockSize: 16, seed: 7)
        var s2 = try BatchSampler(tokens: file, batchSize: 4, blockSize: 16, seed: 7)
        var s3 = try BatchSampler(tokens: file, batchSize: 4, blockSize: 16, seed: 8)
        var b1 = a, b2 = a, b3 = a
        try b1.withUnsafeMutableBufferPointer { try s1.next(into: $0, vocabularySize: 1000) }
        try b2.withUnsafeMutableBufferPointer { try s2.next(into: $0, vocabularySize: 1000) }
        try b3.withUnsafeMutableBufferPointer { try s3.next(into: $0, vocabularySize: 1000) }
        #expect(b1 == b2 && b1 != b3)
    }

    @Test func everyOffsetIsReachableIncludingTheLast() throws {
        let dir = try TemporaryDirectory()
        let url = dir.url.appendingPathComponent("t.bin")
        try writeTokens((0..<20).map(UInt16.init), to: url)
        var sampler = try BatchSampler(tokens: try TokenFile(url: url), batchSize: 1, blockSize: 4, seed: 1)
        var w = [Int32](repeating: 0, count: 5)
        var seen = Set<Int32>()
        for _ in 0..<2000 { try w.withUnsafeMutableBufferPointer { try sampler.next(into: $0, vocabularySize: 100) }; seen.insert(w[0]) }
        #expect(seen == Set((0...15).map(Int32.init)))  // 20 - (4 + 1) + 1 start positions
    }

    @Test func outOfVocabularyTokensAndShortFilesAreErrors() throws {
        let dir = try TemporaryDirectory()
        let url = dir.url.appendingPathComponent("t.bin")
        try writeTokens([1, 2, 3, 60000, 4, 5], to: url)
        var sampler = try BatchSampler(tokens: try TokenFile(url: url), batchSize: 1, blockSize: 5, seed: 1)
        var w = [Int32](repeating: 0, count: 6)
        #expect(throws: TrainingError.self) { try w.withUnsafeMutableBufferPointer { try sampler.next(into: $0, vocabularySize: 1000) } }
        #expect(throws: TrainingError.self) { _ = try BatchSampler(tokens: try TokenFile(url: url), batchSize: 1, blockSize: 6, seed: 1) }
    }
}
