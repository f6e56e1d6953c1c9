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

    @Test("patterns whose automaton takes too long to build: an error naming the cause, not a long compile (FuzzRegex)")
    func costlyDeterminization() {
        // The input FuzzRegex timed out on (a Unicode word class under `+`, then a class of word and
        // other characters 167 times), and the textbook exponential case.
        let patterns = [#"(?P<x>[^\W.d]+)\=?[\#tu00*\#0\#0\#02x5A]{167}!*?]Z"#, "[ab]*a[ab]{40}"]
        for pattern in patterns {
            do {
                _ = try ByteGrammar.regex(pattern)
                Issue.record("\(pattern.debugDescription) compiled")
            } catch {
                #expect(error.message.contains("too complex") || error.message.contains("too large"), "\(error.message)")
            }
        }
        // A large but ordinary schema stays within the limits.
        #expect(throws: Never.self) {
            try ByteGrammar.jsonSchema(#"{"type":"object","properties":{"title":{"type":"string","maxLength":200},"body":{"type":"string","maxLength":2000},"tags":{"type":"array","items":{"type":"string","maxLength":50},"maxItems":20}},"required":["title","body"]}"#)
        }
    }
}
