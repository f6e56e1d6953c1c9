import Foundation
import Gemma3Kernels
import Gemma3TestSupport
import Testing
@testable import Gemma3Model
@testable import Gemma3StructuredOutput

/// Generates `samples` outputs per grammar at temperature 1 (seeds 1…samples).
private func sampleOutputs(_ grammars: [ByteGrammar], vocabulary: TokenVocabulary, generator: Generator, promptIds: [TokenID],
                           stopTokens: Set<TokenID>, samples: Int, maxNewTokens: Int) throws -> [(Int, String)] {
    var outputs: [(Int, String)] = []
    for (i, grammar) in grammars.enumerated() {
        let constraint = TokenConstraint(grammar: grammar, vocabulary: vocabulary)
        for seed in 1...samples {
            let options = GenerationOptions(maxNewTokens: maxNewTokens, sampling: SamplingOptions(temperature: 1, seed: UInt64(seed)),
                                            stopTokenIds: stopTokens, constraint: constraint)
            let r = try generator.generate(promptIds: promptIds, options: options)
            outputs.append((i, r.text))
        }
    }
    return outputs
}

@Suite("Structured output: every constrained output parses and validates")
struct ConstrainedGenerationTests {
    @Test("10 schemas × 20 samples at temperature 1 on a tiny random model, GPT-2 vocabulary: all valid under jsonschema")
    func schemasOnRandomModelGPT2() throws {
        let tokenizer = try gpt2Tokenizer()
        let vocabulary = TokenVocabulary(tokenizer: tokenizer)
        let generator = Generator(engine: try tinyRandomEngine(vocabularySize: tokenizer.vocabularySize, seed: 7), tokenizer: tokenizer)
        let grammars = try testSchemas.map { try ByteGrammar.jsonSchema($0) }
        let outputs = try sampleOutputs(grammars, vocabulary: vocabulary, generator: generator, promptIds: tokenizer.encode("JSON:"),
                                        stopTokens: [tokenizer.endOfTextID], samples: 20, maxNewTokens: 64)
        #expect(outputs.count == 200)
        let failures = try jsonSchemaFailures(schemas: testSchemas, outputs: outputs)
        #expect(failures.isEmpty, "\(failures.count) invalid outputs:\n\(failures.prefix(20).joined(separator: "\n"))")
        // The outputs are not all alike (the constraint does not collapse sampling).
        for i in 0..<testSchemas.count {
            #expect(Set(outputs.filter { $0.0 == i }.map(\.1)).count >= 5, "schema \(i + 1): too few distinct outputs")
        }
    }

    @Test("the same on a Gemma-style vocabulary (▁ spaces, <0xNN> byte fallback, control tokens)")
    func schemasOnRandomModelGemmaStyle() throws {
        let tokenizer = try syntheticGemmaTokenizer()
        let vocabulary = TokenVocabulary(tokenizer: tokenizer)
        #expect(vocabulary.hasEverySingleByte)
        let generator = Generator(engine: try tinyRandomEngine(vocabularySize: tokenizer.vocabularySize, seed: 11), tokenizer: tokenizer)
        let grammars = try testSchemas.map { try ByteGrammar.jsonSchema($0) }
        let outputs = try sampleOutputs(grammars, vocabulary: vocabulary, generator: generator, promptIds: tokenizer.encode("JSON:"),
                                        stopTokens: [tokenizer.eosTokenID], samples: 20, maxNewTokens: 96)
        let failures = try jsonSchemaFailures(schemas: testSchemas, outputs: outputs)
        #expect(failures.isEmpty, "\(failures.count) invalid outputs:\n\(failures.prefix(20).joined(separator: "\n"))")
    }

    @Test("10 regexes × 20 samples: every output is a full match under Python's re")
    func regexesOnRandomModel() throws {
        let tokenizer = try gpt2Tokenizer()
        let vocabulary = TokenVocabulary(tokenizer: tokenizer)
        let generator = Generator(engine: try tinyRandomEngine(vocabularySize: tokenizer.vocabularySize, seed: 5), tokenizer: tokenizer)
        let grammars = try testPatterns.map { try ByteGrammar.regex($0) }
        let outputs = try sampleOutputs(grammars, vocabulary: vocabulary, generator: generator, promptIds: tokenizer.encode("Answer:"),
                                        stopTokens: [tokenizer.endOfTextID], samples: 20, maxNewTokens: 32)
        let failures = try regexFailures(patterns: testPatterns, outputs: outputs)
        #expect(failures.isEmpty, "\(failures.count) outputs do not match:\n\(failures.prefix(20).joined(separator: "\n"))")
        let gemma = try syntheticGemmaTokenizer()
        let gemmaGenerator = Generator(engine: try tinyRandomEngine(vocabularySize: gemma.vocabularySize, seed: 3), tokenizer: gemma)
        let gemmaOutputs = try sampleOutputs(grammars, vocabulary: TokenVocabulary(tokenizer: gemma), generator: gemmaGenerator,
                                             promptIds: gemma.encode("Answer:"), stopTokens: [gemma.eosTokenID], samples: 20, maxNewTokens: 48)
        let gemmaFailures = try regexFailures(patterns: testPatterns, outputs: gemmaOutputs)
        #expect(gemmaFailures.isEmpty, "\(gemmaFailures.count) outputs do not match:\n\(gemmaFailures.prefix(20).joined(separator: "\n"))")
    }

    @Test("the real Gemma 3 270M: 10 schemas × 20 samples at temperature 1, all valid (when the GGUF is present)")
    func schemasOnRealModel() throws {
        guard let path = realModelPath else {
            notice("real model not found (GEMMA3_GGUF or ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf): the constrained generation on Gemma 3 270M did not run")
            return
        }
        let model = try LanguageModel.load(path)
        let vocabulary = TokenVocabulary(tokenizer: model.tokenizer)
        #expect(vocabulary.hasEverySingleByte)
        let generator = try model.makeGenerator(context: 512)
        let grammars = try testSchemas.map { try ByteGrammar.jsonSchema($0) }
        let prompt = model.tokenizer.encode("Here is a JSON value describing a person, a pet or a list:\n")
        let outputs = try sampleOutputs(grammars, vocabulary: vocabulary, generator: generator, promptIds: prompt,
                                        stopTokens: model.stopTokens, samples: 20, maxNewTokens: 96)
        let failures = try jsonSchemaFailures(schemas: testSchemas, outputs: outputs)
        #expect(failures.isEmpty, "\(failures.count) invalid outputs:\n\(failures.prefix(20).joined(separator: "\n"))")
    }

    @Test("a constrained value ends generation; stop tokens only once it is complete; a chat reply closes its turn")
    func endOfValue() throws {
        let tokenizer = try gpt2Tokenizer()
        let vocabulary = TokenVocabulary(tokenizer: tokenizer)
        let generator = Generator(engine: try tinyRandomEngine(vocabularySize: tokenizer.vocabularySize, seed: 9), tokenizer: tokenizer)
        let constraint = TokenConstraint(grammar: try .regex("(yes|no)"), vocabulary: vocabulary)
        for seed in 1...10 {
            let r = try generator.generate(promptIds: tokenizer.encode("Q:"), options: GenerationOptions(
                maxNewTokens: 20, sampling: SamplingOptions(temperature: 1, seed: UInt64(seed)), stopTokenIds: [tokenizer.endOfTextID], constraint: constraint))
            #expect(r.text == "yes" || r.text == "no")
            #expect(r.stopReason == .valueComplete)
            #expect(!r.generatedIds.contains(tokenizer.endOfTextID))
        }
        // A number can go on after each digit: there the stop token is allowed, and some draws take it.
        let number = TokenConstraint(grammar: try .regex(#"\d+"#), vocabulary: vocabulary)
        var reasons = Set<StopReason>()
        for seed in 1...20 {
            let r = try generator.generate(promptIds: tokenizer.encode("N:"), options: GenerationOptions(
                maxNewTokens: 6, sampling: SamplingOptions(temperature: 1, seed: UInt64(seed)), stopTokenIds: [tokenizer.endOfTextID], constraint: number))
            #expect(r.text.allSatisfy(\.isNumber) && !r.text.isEmpty, "\(r.text.debugDescription)")
            if r.stopReason == .stopToken { #expect(r.generatedIds.count >= 2) }
            reasons.insert(r.stopReason)
        }
        #expect(reasons.contains(.maxNewTokens))
    }

    @Test("the token budget: with few tokens left the value is still closed (also from deep nesting)")
    func budget() throws {
        let tokenizer = try gpt2Tokenizer()
        let vocabulary = TokenVocabulary(tokenizer: tokenizer)
        let generator = Generator(engine: try tinyRandomEngine(vocabularySize: tokenizer.vocabularySize, seed: 13), tokenizer: tokenizer)
        let schemas = [testSchemas[7], testSchemas[8], testSchemas[5]]
        var outputs: [(Int, String)] = []
        for (i, s) in schemas.enumerated() {
            let constraint = TokenConstraint(grammar: try .jsonSchema(s), vocabulary: vocabulary)
            for seed in 1...15 {
                let r = try generator.generate(promptIds: tokenizer.encode("{"), options: GenerationOptions(
                    maxNewTokens: 12 + seed, sampling: SamplingOptions(temperature: 1, seed: UInt64(seed)), constraint: constraint))
                #expect(r.generatedIds.count <= 12 + seed)
                outputs.append((i, r.text))
            }
        }
        let failures = try jsonSchemaFailures(schemas: schemas, outputs: outputs)
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }
}

@Suite("Structured output: the mask equals trying every token on the recognizer")
struct MaskBruteForceTests {
    /// A small vocabulary: every single byte, JSON fragments, random byte strings over a JSON-ish alphabet.
    static func smallVocabulary(seed: UInt64) -> [[UInt8]] {
        var rng = SplitMix64(seed: seed)
        var tokens: [[UInt8]] = (0..<256).map { [UInt8($0)] }
        let fragments = ["{\"", "\"}", "\":", "\",", "\": \"", "[{", "}]", "},", "\n  ", "  ", "true", "false", "null", "12", "-0.5e+3",
                         "\\u00e9", "\\\"", "é", "日本", "\"name\":", "\"kind\":\"cat\"", "cat", "dog", "\"value\"", "red\"", "@a.com", "0-12"]
        tokens += fragments.map { Array($0.utf8) }
        let alphabet = Array("{}[]:,\" \n0123456789.-+eEtrufalsn\\abcé@".utf8)
        for _ in 0..<400 {
            let n = 1 + Int(rng.next() % 6)
            tokens.append((0..<n).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] })
        }
        // Every 2- and 3-byte string over JSON's punctuation: tokens that close one element and
        // open the next (`"},`, `":[`, `,"a`), the paths where calls and returns happen mid-token.
        let punctuation = Array("{}[]:,\" 1a".utf8)
        for a in punctuation {
            for b in punctuation {
                tokens.append([a, b])
                for c in punctuation { tokens.append([a, b, c]) }
            }
        }
        tokens.append([])  // a control token: never allowed
        return tokens
    }

    /// Moves the constraint to a random reachable state: up to `steps` random valid tokens.
    static func randomState(_ c: TokenConstraint, vocabulary: TokenVocabulary, steps: Int, rng: inout SplitMix64) throws {
        c.reset()
        for _ in 0..<steps {
            let valid = (0..<vocabulary.size).filter { c.trial(vocabulary.tokenBytes[$0]).valid && !vocabulary.tokenBytes[$0].isEmpty }
            guard !valid.isEmpty, c.canContinue else { return }
            try c.advance(TokenID(valid[Int(rng.next() % UInt64(valid.count))]))
        }
    }

    static func check(_ grammar: ByteGrammar, _ vocabulary: TokenVocabulary, states: Int, seed: UInt64) throws {
        let c = TokenConstraint(grammar: grammar, vocabulary: vocabulary)
        var rng = SplitMix64(seed: seed)
        for k in 0..<states {
            try randomState(c, vocabulary: vocabulary, steps: Int(rng.next() % 40), rng: &rng)
            let mask = c.allowedTokens()
            var expected = 0, maxAfter = 0
            for t in 0..<vocabulary.size {
                let bytes = vocabulary.tokenBytes[t]
                let (valid, after) = bytes.isEmpty ? (false, 0) : c.trial(bytes)
                if valid { expected += 1; maxAfter = max(maxAfter, after) }
                #expect(mask.contains(TokenID(t)) == valid, "state \(k), token \(t) \(String(decoding: bytes, as: UTF8.self).debugDescription)")
            }
            #expect(mask.allowedCount == expected)
            #expect(mask.maxBytesToCompleteAfter == maxAfter)
            // Budget-restricted masks: tokens after which the value fits in the tokens left.
            for remaining in [1, 2, 3, 5, 9, 17] {
                let restricted = c.allowedTokens(remainingTokens: remaining)
                var fitting = Set<Int>()
                for t in 0..<vocabulary.size where !vocabulary.tokenBytes[t].isEmpty {
                    let (valid, after) = c.trial(vocabulary.tokenBytes[t])
                    if valid && after <= remaining - 1 { fitting.insert(t) }
                }
                let want = fitting.isEmpty ? Set((0..<vocabulary.size).filter { mask.contains(TokenID($0)) }) : fitting
                let got = Set((0..<vocabulary.size).filter { restricted.contains(TokenID($0)) })
                #expect(got == want, "state \(k), \(remaining) tokens left")
            }
        }
    }

    @Test("random vocabularies × the 10 schemas × random states")
    func schemas() throws {
        for (i, s) in testSchemas.enumerated() {
            let vocabulary = TokenVocabulary(tokenBytes: Self.smallVocabulary(seed: UInt64(i + 1)))
            try Self.check(try .jsonSchema(s), vocabulary, states: 40, seed: UInt64(100 + i))
        }
    }

    @Test("random vocabularies × the 10 regexes × random states")
    func regexes() throws {
        for (i, p) in testPatterns.enumerated() {
            var tokens = Self.smallVocabulary(seed: UInt64(50 + i))
            tokens += ["yes", "no", "may", "be", "ab", "bc", "@", ".com", ".org", " Ab", "Cd", "-1", "2.5", "日", "è"].map { Array($0.utf8) }
            try Self.check(try .regex(p), TokenVocabulary(tokenBytes: tokens), states: 30, seed: UInt64(200 + i))
        }
    }

    @Test("the synthetic Gemma vocabulary (byte-fallback and ▁ tokens) and a GPT-2 slice")
    func realTokenizers() throws {
        let gemma = TokenVocabulary(tokenizer: try syntheticGemmaTokenizer())
        #expect(gemma.tokenBytes[1].isEmpty && gemma.tokenBytes[6 + 0x41] == [0x41])  // <eos> none; <0x41> is "A"
        let gpt2 = try gpt2Tokenizer()
        let slice = TokenVocabulary(tokenBytes: (0..<3000).map { gpt2.bytes(of: TokenID($0)) ?? [] } + [gpt2.bytes(of: 1298)!, gpt2.bytes(of: 1600)!])
        for (k, s) in [testSchemas[0], testSchemas[5], testSchemas[9], testSchemas[7]].enumerated() {
            try Self.check(try .jsonSchema(s), gemma, states: 6, seed: UInt64(300 + k))
            try Self.check(try .jsonSchema(s), slice, states: 4, seed: UInt64(400 + k))
        }
    }
}

@Suite("Structured output: what is not supported is an error")
struct UnsupportedSchemaTests {
    @Test("unsupported keywords name the keyword and where it is")
    func unsupportedKeywords() {
        let cases: [(String, String, String)] = [
            (##"{"type":"object","properties":{"age":{"type":"integer","minimum":0}}}"##, "\"minimum\"", "#/properties/age"),
            (#"{"type":"string","format":"email"}"#, "\"format\"", "#"),
            (#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#, "\"oneOf\"", "#"),
            (#"{"allOf":[{"type":"string"}]}"#, "\"allOf\"", "#"),
            (#"{"not":{"type":"string"}}"#, "\"not\"", "#"),
            (#"{"type":"object","patternProperties":{"^a":{}}}"#, "\"patternProperties\"", "#"),
            (#"{"type":"array","prefixItems":[{"type":"string"}]}"#, "\"prefixItems\"", "#"),
            (##"{"type":"array","items":{"type":"number","multipleOf":2}}"##, "\"multipleOf\"", "#/items"),
            (#"{"type":"array","uniqueItems":true}"#, "\"uniqueItems\"", "#"),
            (##"{"$defs":{"a":{"type":"string","maxLength":3,"exclusiveMaximum":3}},"$ref":"#/$defs/a"}"##, "\"exclusiveMaximum\"", "#/$defs/a"),
            (#"{"if":{"type":"string"},"then":{"maxLength":3}}"#, "\"if\"", "#"),
        ]
        for (schema, keyword, path) in cases {
            do {
                _ = try ByteGrammar.jsonSchema(schema)
                Issue.record("\(schema) compiled")
            } catch {
                #expect(error.message.contains("unsupported JSON Schema keyword \(keyword)"), "\(error.message)")
                #expect(error.message.contains("at \(path):"), "\(error.message)")
            }
        }
    }

    @Test("invalid schemas, impossible schemas, bad references and bad patterns are errors")
    func invalidSchemas() {
        let cases: [(String, String)] = [
            (#"{"type":"object""#, "not valid JSON"),
            (#"false"#, "admits no value"),
            (#"{"type":"strin"}"#, "unknown type"),
            (#"{"type":"array","minItems":3,"maxItems":2}"#, "below minItems"),
            (#"{"type":"string","minLength":-1}"#, "non-negative"),
            (##"{"$ref":"#/$defs/missing"}"##, "does not resolve"),
            (#"{"$ref":"https://example.com/s.json"}"#, "only local references"),
            (#"{"type":"object","properties":{},"required":["a"],"additionalProperties":false}"#, "required but not in properties"),
            (#"{"type":"string","pattern":"(a"}"#, "missing ')'"),
            (#"{"type":"string","pattern":"(?=a)b"}"#, "look-arounds"),
            (#"{"type":"string","pattern":"\"x\""}"#, "admits no value"),
            (##"{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"}"##, "left-recursive"),
            (#"{"enum":[1,2],"type":"string"}"#, "no value of enum"),
        ]
        for (schema, why) in cases {
            do {
                _ = try ByteGrammar.jsonSchema(schema)
                Issue.record("\(schema) compiled")
            } catch {
                #expect(error.message.contains(why), "\(schema): \(error.message)")
                #expect(!error.message.contains("\n"))
            }
        }
        for (pattern, why) in [("a{3,1}", "below the minimum"), (#"(a)\1"#, "back-references"), ("a)", "unbalanced"), ("*a", "nothing to repeat"),
                               ("a^b", "anchors"), (#"\bword"#, "not supported"), ("[z-a]", "bad character range")] {
            do {
                _ = try ByteGrammar.regex(pattern)
                Issue.record("\(pattern) compiled")
            } catch {
                #expect(error.message.contains(why), "\(pattern): \(error.message)")
            }
        }
    }

    @Test("schema compilation of the test schemas takes well under 50 ms")
    func compileTime() throws {
        for s in testSchemas {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try ByteGrammar.jsonSchema(s)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            #expect(ms < 50, "\(ms) ms: \(s)")
        }
    }
}

/// Runs `gemma3 args…`; returns (exit status, stdout, stderr).
private func runGemma3(_ args: [String]) throws -> (Int32, String, String) {
    let r = try runProcess(try gemma3Executable().path, args)
    return (r.status, String(decoding: r.stdout, as: UTF8.self), String(decoding: r.stderr, as: UTF8.self))
}

@Suite("Structured output: the command line", .serialized)
struct StructuredOutputCommandLineTests {
    /// A random-weight checkpoint directory with the GPT-2 tokenizer files.
    static func modelDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-structured-\(UUID().uuidString)")
        var c = Gemma3Config(vocabSize: 50257, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2, numAttentionHeads: 2,
                             numKeyValueHeads: 1, headDim: 8, slidingWindow: 16, layerTypes: [.slidingAttention, .fullAttention],
                             maxPositionEmbeddings: 256)
        c.eosTokenIds = [50256]
        let store = ParameterStore(config: c)
        var rng = SplitMix64(seed: 17)
        for t in store.layout.tensors { rng.fillNormal(store.view(t), std: t.isMatrix ? 0.5 : 0.1) }
        try HFCheckpoint.save(config: c, parameters: store, directory: url)
        for f in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: sharedGPT2.appendingPathComponent(f), to: url.appendingPathComponent(f))
        }
        return url
    }

    @Test("generate --json-schema / --json-object / --regex: stdout is the answer, --json's text field too; all valid")
    func generateFlags() throws {
        let dir = try Self.modelDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let schemaFile = dir.appendingPathComponent("schema.json")
        try Data(testSchemas[0].utf8).write(to: schemaFile)
        var outputs: [(Int, String)] = []
        for seed in 1...4 {
            let common = ["generate", "--model", dir.path, "--prompt", "Person:", "--temperature", "1", "--seed", "\(seed)", "--max-new-tokens", "60"]
            let (status, stdout, stderr) = try runGemma3(common + ["--json-schema", schemaFile.path])
            #expect(status == 0, "\(stderr)")
            #expect(stdout.hasSuffix("\n"))
            outputs.append((0, String(stdout.dropLast())))
            let (s2, json, e2) = try runGemma3(common + ["--json-schema", schemaFile.path, "--json"])
            #expect(s2 == 0, "\(e2)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            let text = try #require(object["text"] as? String)
            #expect(text == String(stdout.dropLast()), "the same seed gives the same answer")
            let (s3, anyObject, e3) = try runGemma3(common + ["--json-object"])
            #expect(s3 == 0, "\(e3)")
            outputs.append((1, String(anyObject.dropLast())))
            let (s4, regex, e4) = try runGemma3(common + ["--regex", #"\d{3}-[a-z]{2,4}"#])
            #expect(s4 == 0, "\(e4)")
            #expect(regex.range(of: #"^\d{3}-[a-z]{2,4}\n$"#, options: .regularExpression) != nil, "\(regex.debugDescription)")
        }
        let failures = try jsonSchemaFailures(schemas: [testSchemas[0], #"{"type":"object"}"#], outputs: outputs)
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }

    @Test("a bad schema, an unsupported keyword, a bad regex or two constraints: one line on stderr, non-zero exit")
    func errors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-structured-errors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let unsupported = dir.appendingPathComponent("minimum.json"), broken = dir.appendingPathComponent("broken.json")
        try Data(#"{"type":"integer","minimum":3}"#.utf8).write(to: unsupported)
        try Data(#"{"type":"#.utf8).write(to: broken)
        // The constraint is checked before the model is loaded: no model is needed for these.
        let model = dir.appendingPathComponent("no-model").path
        let cases: [([String], String)] = [
            (["generate", "--model", model, "--prompt", "x", "--json-schema", unsupported.path], "unsupported JSON Schema keyword \"minimum\""),
            (["generate", "--model", model, "--prompt", "x", "--json-schema", broken.path], "not valid JSON"),
            (["generate", "--model", model, "--prompt", "x", "--json-schema", dir.appendingPathComponent("absent.json").path], "cannot read"),
            (["generate", "--model", model, "--prompt", "x", "--regex", "(a"], "missing ')'"),
            (["chat", "--model", model, "--message", "x", "--regex", "a{2,1}"], "below the minimum"),
            (["generate", "--model", model, "--prompt", "x", "--regex", "a", "--json-object"], "at most one of"),
        ]
        for (args, why) in cases {
            let (status, stdout, stderr) = try runGemma3(args)
            #expect(status != 0)
            #expect(stdout.isEmpty)
            let lines = stderr.split(separator: "\n").filter { !$0.hasPrefix("Usage") && !$0.hasPrefix("  See") && !$0.isEmpty }
            #expect(lines.count == 1 && stderr.contains(why), "\(args): \(stderr)")
        }
    }
}
