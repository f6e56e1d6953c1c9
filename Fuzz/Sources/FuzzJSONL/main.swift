// `prepare`'s corpus reading (`DataPreparation.tokenize(corpus:)`): JSON Lines records, and, when the
// input's first byte is odd, the TinyStories `<|endoftext|>`-separated text format.
import FuzzSupport
import Gemma3Training

/// One token per byte: the fuzz target tests the document reader, not a tokenizer.
struct ByteTokenizer: DocumentTokenizer {
    var vocabularySize: Int { 257 }
    var endOfTextTokenID: Int32 { 256 }
    func encodeOrdinary(utf8: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        for b in utf8 { out.append(Int32(b)) }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size) else { return 0 }
    let format: CorpusFormat = bytes.first.map { $0 & 1 == 1 } == true && bytes.first != UInt8(ascii: "{") ? .endOfTextSeparated : .jsonLines
    _ = try? DataPreparation.tokenize(corpus: bytes, format: format, tokenizer: ByteTokenizer(), name: "fuzz.jsonl")
    return 0
}
