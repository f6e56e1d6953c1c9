import ArgumentParser
import Foundation
import Gemma3Model
import Gemma3Tokenizers

/// `gemma3 detokenize`: GPT-2 (or, with --model, Gemma) token ids -> text.
struct DetokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detokenize",
        abstract: "Print the text of GPT-2 token ids, or of Gemma ids with --model (the reverse of `gemma3 tokenize`).",
        discussion: """
        Ids are separated by spaces or commas; a --file may also hold the JSON object that \
        `gemma3 tokenize --json` prints. The exact bytes are written (a newline is added only on \
        a terminal); with --json the text is decoded lossily (U+FFFD for broken UTF-8).
        """
    )

    @Option(help: ArgumentHelp("Directory with the GPT-2 tokenizer files (default: \(CLIEnvironment.gpt2TokenizerDirectory.path)).", valueName: "dir"))
    var tokenizer: String?

    @Option(help: ArgumentHelp("Use the tokenizer of this model (GGUF file, model directory or tokenizer.json) instead of the GPT-2 files.", valueName: "file|dir"))
    var model: String?

    @Flag(help: "Gemma: write the text of control tokens such as <bos> and <end_of_turn> (hidden by default).")
    var special = false

    @Option(help: ArgumentHelp("Read the ids from this file instead of the arguments.", valueName: "file"))
    var file: String?

    @Flag(help: "Print one JSON object {\"text\": ..., \"bytes\": N, \"count\": N}.")
    var json = false

    @Argument(help: "Token ids.")
    var ids: [String] = []

    func validate() throws {
        if ids.isEmpty == (file == nil) { throw ValidationError("give either token ids or --file FILE") }
    }

    func run() throws {
        if model != nil && tokenizer != nil { throw ValidationError("give --model or --tokenizer, not both") }
        let modelTokenizer = try model.map { try loadModelTokenizer($0) }
        let gemma = modelTokenizer as? GemmaTokenizer
        if special && gemma == nil { throw ValidationError("--special applies to Gemma tokenizers (--model)") }
        let gpt2 = gemma == nil ? try (modelTokenizer as? GPT2Tokenizer) ?? loadGPT2Tokenizer(tokenizer) : nil
        var text: String
        if let file {
            text = String(decoding: try readTextFile(file), as: UTF8.self)
            if text.drop(while: { $0.isWhitespace }).first == "{" {
                // `gemma3 tokenize --json` output: take the "ids" array.
                guard let start = text.range(of: "\"ids\""),
                      let open = text[start.upperBound...].firstIndex(of: "["),
                      let close = text[open...].firstIndex(of: "]") else {
                    throw TokenizerCommandError("\(file) is a JSON object without an \"ids\" array")
                }
                text = String(text[text.index(after: open) ..< close])
            }
        } else {
            text = ids.joined(separator: " ")
        }
        var tokens: [Int32] = []
        for field in text.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\n" || $0 == "\t" || $0 == "\r" || $0 == "[" || $0 == "]" }) {
            guard let id = Int32(field) else { throw TokenizerCommandError("not a token id: \(field)") }
            tokens.append(id)
        }
        let bytes = try gemma?.decode(tokens, special: special) ?? gpt2!.decode(tokens)
        if json {
            let object: [String: Any] = ["text": String(decoding: bytes, as: UTF8.self), "bytes": bytes.count, "count": tokens.count]
            var data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            data.append(0x0A)
            FileHandle.standardOutput.write(data)
        } else {
            FileHandle.standardOutput.write(Data(bytes))
            if isatty(STDOUT_FILENO) != 0 { FileHandle.standardOutput.write(Data([0x0A])) }
        }
    }
}
