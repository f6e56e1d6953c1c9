import Foundation
import Testing
import Gemma3Tokenizers

/// Inputs FuzzGemmaTokenizer found (docs/fuzzing.md), each now a one-line error.
@Suite struct GemmaTokenizerFuzzFindingsTests {
    @Test("an added token with a negative id standing in for a missing one is an error, not a nil-unwrap trap")
    func negativeAddedTokenID() throws {
        // <pad> 0, <eos> 1, (no 2), the 256 byte pieces from 3; the added <bos> at −2 makes the entry count
        // equal to the largest id + 1, which once passed the contiguity check.
        let bytes = (0..<256).map { "\"" + String(format: "<0x%02X>", $0) + "\": \(3 + $0)" }.joined(separator: ", ")
        func json(bosID: Int) -> String {
            """
            {"added_tokens": [{"id": 0, "content": "<pad>", "special": true}, {"id": \(bosID), "content": "<bos>", "special": true}],
             "model": {"type": "BPE", "vocab": {"<pad>": 0, "<eos>": 1, \(bytes)}}}
            """
        }
        #expect(throws: TokenizerError.self) { try GemmaTokenizer(tokenizerJSON: Data(json(bosID: -2).utf8), source: "hostile.json") }
        // The same file with the id in place loads (the check can fail).
        #expect(try GemmaTokenizer(tokenizerJSON: Data(json(bosID: 2).utf8), source: "fixed.json").vocabularySize == 259)
    }
}
