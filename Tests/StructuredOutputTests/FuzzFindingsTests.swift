import Testing
import Gemma3StructuredOutput

/// Inputs the fuzz targets found (docs/fuzzing.md), each now a one-line error.
@Suite struct StructuredOutputFuzzFindingsTests {
    @Test("30000 nested regex groups: an error, not a stack overflow (FuzzRegex)")
    func deepGroups() {
        #expect(throws: GrammarError.self) { try ByteGrammar.regex(String(repeating: "(", count: 30_000)) }
    }

    @Test("nested repetition counts that multiply to 10^9 states: an error, not gigabytes (FuzzRegex)")
    func multipliedRepetitions() {
        #expect(throws: GrammarError.self) { try ByteGrammar.regex("((a{1000}){1000}){1000}") }
    }

    @Test("a string schema with minLength 10^8: an error, not gigabytes (FuzzJSONSchema)")
    func hugeMinLength() {
        #expect(throws: GrammarError.self) { try ByteGrammar.jsonSchema(#"{"type": "string", "minLength": 100000000}"#) }
    }
}
