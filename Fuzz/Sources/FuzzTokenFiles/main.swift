// A prepared dataset: `meta.json` (`DatasetMeta.decode`) and a token file (`TokenFile(bytes:)`),
// separated by a `fileSeparator` line; then what training reads from them (a batch of windows).
import Foundation
import FuzzSupport
import Gemma3Training

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size) else { return 0 }
    let (metaBytes, tokenBytes) = splitInput(bytes, separator: fileSeparator)
    let meta = try? DatasetMeta.decode(Data(metaBytes), source: "fuzz-meta.json")
    guard let tokens = try? TokenFile(bytes: tokenBytes, name: "train.bin") else { return 0 }
    _ = tokens.maximumToken()
    let blockSize = 1 + Int((meta?.train.documents ?? tokens.count).magnitude % 64)
    guard var sampler = try? BatchSampler(tokens: tokens, batchSize: 2, blockSize: blockSize, seed: 1) else { return 0 }
    var windows = [Int32](repeating: 0, count: sampler.batchTokenCount)
    try? windows.withUnsafeMutableBufferPointer { try sampler.next(into: $0, vocabularySize: meta?.vocabSize ?? 65536) }
    return 0
}
