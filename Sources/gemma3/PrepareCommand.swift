import ArgumentParser
import Foundation
import Gemma3Kernels
import Gemma3Tokenizers
import Gemma3Training

/// `gemma3 prepare`: text corpora -> `train.bin` / `val.bin` (uint16 GPT-2 ids) + `meta.json`.
struct PrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Tokenize text files into train.bin / val.bin token files and meta.json.",
        discussion: """
        Inputs are TinyStories-style .txt files (stories separated by lines that are exactly \
        <|endoftext|>) or JSON Lines with a "text" field (.jsonl/.json, or a first byte '{'). \
        A document is the text between separators with leading and trailing ASCII whitespace \
        removed; empty documents are skipped. Outputs are raw little-endian uint16 ids with the \
        end-of-text id 50256 after every document (numpy.memmap(path, dtype=numpy.uint16) reads \
        them). The input is streamed in chunks and tokenized on all cores; outputs are written to \
        temporary files and renamed into place only when everything succeeded.
        """
    )

    @Option(parsing: .upToNextOption, help: ArgumentHelp("Training text file(s).", valueName: "file"))
    var train: [String] = []

    @Option(parsing: .upToNextOption, help: ArgumentHelp("Validation text file(s).", valueName: "file"))
    var val: [String] = []

    @Option(help: ArgumentHelp("Send this fraction of the training documents to val.bin instead (chosen by a hash of each document).", valueName: "f"))
    var valFraction: Double?

    @Option(help: ArgumentHelp("Output directory.", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("Directory with the GPT-2 tokenizer files (default: \(CLIEnvironment.gpt2TokenizerDirectory.path)).", valueName: "dir"))
    var tokenizer: String?

    @Flag(help: "Overwrite existing train.bin / val.bin / meta.json.")
    var force = false

    @Flag(help: "No progress output.")
    var quiet = false

    @Flag(help: "Print one JSON object with the statistics.")
    var json = false

    func validate() throws {
        if train.isEmpty { throw ValidationError("give at least one --train FILE") }
        if val.isEmpty == (valFraction == nil) { throw ValidationError("give either --val FILE or --val-fraction F") }
        if let f = valFraction, !(f > 0 && f < 1) {
            throw ValidationError("--val-fraction must be between 0 and 1 (exclusive), got \(f)")
        }
    }

    func run() throws {
        let tokenizerDirectory = tokenizer.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? CLIEnvironment.gpt2TokenizerDirectory
        let gpt2 = try GPT2Tokenizer(directory: tokenizerDirectory)
        let record = try TokenizerRecord.gpt2(directory: tokenizerDirectory)
        let files = { (paths: [String]) in paths.map { URL(fileURLWithPath: $0) } }
        var options = PrepareOptions(
            trainFiles: files(train),
            validation: valFraction.map { .fraction($0) } ?? .files(files(val)),
            outputDirectory: URL(fileURLWithPath: out, isDirectory: true))
        options.overwrite = force
        options.progress = ProgressRenderer.handler(enabled: !quiet)
        InterruptHandler.install()
        let summary = try DataPreparation.run(options, tokenizer: gpt2, tokenizerRecord: record)
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            FileHandle.standardOutput.write(try e.encode(summary) + Data("\n".utf8))
        } else {
            print(Self.report(summary))
        }
    }

    static func report(_ s: PreparationSummary) -> String {
        func row(_ name: String, _ r: SplitRecord) -> String {
            name.padding(toLength: 6, withPad: " ", startingAt: 0)
                + String(format: "%11d %12d %14d %12.3f  ", r.documents, r.tokens, r.bytes, r.bytesPerToken)
                + "\(s.outputDirectory)/\(r.file)"
        }
        let header = "split    documents       tokens          bytes  bytes/token  file"
        let totalTokens = s.meta.train.tokens + s.meta.val.tokens
        let speed = String(format: "%.2f s, %.1f MB/s, %.2fM tokens/s, %d threads",
                           s.seconds, s.megabytesPerSecond, s.tokensPerSecond / 1e6, s.threads)
        return """
            \(header)
            \(row("train", s.meta.train))
            \(row("val", s.meta.val))
            \(totalTokens) tokens (\(s.meta.tokenizer.name), vocab \(s.meta.vocabSize), \(s.meta.eotToken) after each document) from \(String(format: "%.1f", Double(s.inputBytes) / 1e6)) MB in \(speed)
            """
    }
}
