import Testing
import Gemma3Formats
@testable import Gemma3Model

/// Inputs the fuzz targets found (docs/fuzzing.md), each now a one-line error; built in memory
/// with `GGUFFile(bytes:)`.
@Suite struct GGUFFuzzFindingsTests {
    @Test("a bos_token_id above Int32.max is a FormatError, not a trap (FuzzGGUF)")
    func hugeTokenID() throws {
        var w = GGUFWriter()
        w.set("tokenizer.ggml.model", .string("llama"))
        w.set("tokenizer.ggml.tokens", .array(.string, [.string("<pad>"), .string("<eos>"), .string("<bos>")]))
        w.set("tokenizer.ggml.bos_token_id", .uint64(1 << 40))
        w.set("tokenizer.ggml.eos_token_id", .uint32(1))
        let file = try GGUFFile(bytes: w.serialized(), name: "hostile.gguf")
        #expect(throws: FormatError.self) { try GGUFGemma3.tokenizer(from: file) }
    }

    @Test("a negative sliding_window_pattern (Int64.min) is a FormatError, not an overflow trap")
    func negativePattern() throws {
        let config = tinyConfig(vocab: 96)
        var w = try GGUFGemma3.writer(config: config, parameters: tinyStore(config, seed: 1), matrixType: .f32)
        w.set("gemma3.attention.sliding_window_pattern", .int64(.min))
        let file = try GGUFFile(bytes: w.serialized(), name: "hostile.gguf")
        #expect(throws: FormatError.self) { try GGUFGemma3.config(from: file) }
    }
}
