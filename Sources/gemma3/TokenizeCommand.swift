import ArgumentParser
import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3Tokenizers

/// `gemma3 tokenize`: text -> GPT-2 token ids, like llama.cpp's `llama-tokenize`.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the GPT-2 token ids of a text (the ids of tiktoken's gpt2 encoding).",
        discussion: """
        Special-token text such as <|endoftext|> is ordinary text unless --special is given \
        (then it becomes its id, 50256). A --file must be valid UTF-8: the error gives the byte \
        offset of the first invalid sequence.
        """
    )

    @Option(help: ArgumentHelp("Directory with the GPT-2 tokenizer files (default: \(CLIEnvironment.gpt2TokenizerDirectory.path)).", valueName: "dir"))
    var tokenizer: String?

    @Option(help: ArgumentHelp("Use the tokenizer of this model (GGUF file, model directory or tokenizer.json) instead of the GPT-2 files; Gemma ids then include the BOS, as llama-tokenize prints them.", valueName: "file|dir"))
    var model: String?

    @Flag(help: "Parse special tokens such as <|endoftext|> (Gemma: <start_of_turn>, <eos>, …).")
    var special = false

    @Option(help: ArgumentHelp("Read the text from this file instead of the argument.", valueName: "file"))
    var file: String?

    @Flag(help: "Print one JSON object {\"ids\": [...], \"count\": N}.")
    var json = false

    @Argument(help: "The text to tokenize.")
    var text: String?

    func validate() throws {
        if (text == nil) == (file == nil) { throw ValidationError("give either a TEXT argument or --file FILE") }
    }

    func run() throws {
        if model != nil && tokenizer != nil { throw ValidationError("give --model or --tokenizer, not both") }
        let gpt2 = model == nil ? try loadGPT2Tokenizer(tokenizer) : nil
        var bytes: [UInt8]
        if let file {
            bytes = try readTextFile(file)
        } else {
            bytes = Array(text!.utf8)
        }
        let modelTokenizer = try model.map { try loadModelTokenizer($0) }
        if let gpt2 = modelTokenizer as? GPT2Tokenizer { return try printIds(encodeGPT2(gpt2, bytes)) }
        let gemma = modelTokenizer as? GemmaTokenizer
        if let gemma { return try printIds(bytes.withUnsafeBufferPointer { gemma.encode(utf8: $0, parseSpecial: special) }) }
        try printIds(encodeGPT2(gpt2!, bytes))
    }

    func encodeGPT2(_ gpt2: GPT2Tokenizer, _ bytes: [UInt8]) -> [TokenID] {
        bytes.withUnsafeBufferPointer { utf8 in
            if special {
                var out: [Int32] = []
                gpt2.encode(utf8: utf8, allowSpecial: true, into: &out)
                return out
            }
            return gpt2.encodeOrdinary(utf8: utf8, threads: Parallel.threadCount)
        }
    }

    func printIds(_ ids: [TokenID]) throws {
        var output = json ? "{\"ids\":[" : ""
        output.reserveCapacity(ids.count * 6 + 32)
        for (k, id) in ids.enumerated() {
            if k > 0 { output += json ? "," : " " }
            output += String(id)
        }
        output += json ? "],\"count\":\(ids.count)}\n" : "\n"
        FileHandle.standardOutput.write(Data(output.utf8))
    }
}

/// Loads the GPT-2 tokenizer from `--tokenizer DIR`, or from the default cache directory.
func loadGPT2Tokenizer(_ directory: String?) throws -> GPT2Tokenizer {
    let url = directory.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? CLIEnvironment.gpt2TokenizerDirectory
    return try GPT2Tokenizer(directory: url)
}

/// The tokenizer of the model at `path` (`--model`): GGUF file, model directory or tokenizer.json.
func loadModelTokenizer(_ path: String) throws -> any TextTokenizer {
    try LanguageModel.loadTokenizer(path, options: LoadOptions(fallbackTokenizerDirectory: CLIEnvironment.gpt2TokenizerDirectory))
}

/// Reads a text file and checks that it is UTF-8 (one-line error with the byte offset otherwise).
func readTextFile(_ path: String) throws -> [UInt8] {
    let data: Data
    do {
        data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw TokenizerCommandError("cannot read \(path): \(error.localizedDescription)")
    }
    let bytes = [UInt8](data)
    if let offset = bytes.withUnsafeBufferPointer(firstInvalidUTF8Offset) {
        throw TokenizerCommandError("\(path) is not valid UTF-8: invalid byte sequence at byte offset \(offset)")
    }
    return bytes
}

/// A one-line error of the tokenizer verbs.
struct TokenizerCommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
