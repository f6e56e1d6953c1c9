import ArgumentParser
import Foundation
import Gemma3Model
import Gemma3StructuredOutput

/// `--json-schema FILE`, `--json-object`, `--regex PATTERN`: structured output for generate, chat
/// and bench constrain.
struct StructuredOutputFlags: ParsableArguments {
    @Option(help: ArgumentHelp("Constrain the answer to JSON valid under this JSON Schema (the supported subset: docs/structured-output.md).", valueName: "file"))
    var jsonSchema: String?

    @Flag(help: "Constrain the answer to a JSON object.")
    var jsonObject = false

    @Option(help: ArgumentHelp("Constrain the answer to a whole match of this regular expression (Python re syntax, its regular subset).", valueName: "pattern"))
    var regex: String?

    /// Whether any constraint was asked for.
    var isConstrained: Bool { jsonSchema != nil || jsonObject || regex != nil }

    /// What the constraint is, for reports.
    var label: String {
        if let jsonSchema { return "json-schema \(jsonSchema)" }
        if let regex { return "regex \(regex)" }
        return jsonObject ? "json-object" : "none"
    }

    func validate() throws {
        if [jsonSchema != nil, jsonObject, regex != nil].filter({ $0 }).count > 1 {
            throw ValidationError("give at most one of --json-schema, --json-object and --regex")
        }
    }

    /// The compiled grammar (nil without a constraint); one-line errors for unreadable files,
    /// invalid schemas, unsupported keywords and bad patterns.
    func grammar() throws -> ByteGrammar? {
        if let jsonSchema {
            guard let data = FileManager.default.contents(atPath: jsonSchema) else {
                throw ModelCommandError("cannot read the JSON schema file \(jsonSchema)")
            }
            do { return try ByteGrammar.jsonSchema(String(decoding: data, as: UTF8.self)) } catch {
                throw ModelCommandError("\(jsonSchema): \(error.message)")
            }
        }
        if let regex {
            do { return try ByteGrammar.regex(regex) } catch { throw ModelCommandError(error.message) }
        }
        return jsonObject ? ByteGrammar.jsonObject() : nil
    }
}
