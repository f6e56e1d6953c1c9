import ArgumentParser
import Dispatch
import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3Training

/// `gemma3 eval`: loss, perplexity and bits per byte of a model over a whole token file.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Loss, perplexity and bits per byte of a model over a whole token file.",
        discussion: """
        The file is cut into windows of T+1 tokens starting at 0, T, 2T, … (the last one shorter), \
        so every token but the first is predicted exactly once, each from at most T tokens of \
        context; the loss is the mean natural-log cross-entropy over all predicted tokens. The \
        forward pass is the training model's (float32, batched matrix products, no KV cache). \
        Bits per byte use bytes_per_token of the matching split in the meta.json beside the file.
        """
    )

    @Option(help: ArgumentHelp("Model directory (config.json + model.safetensors), e.g. RUN/best.", valueName: "dir"))
    var model: String

    @Option(help: ArgumentHelp("Token file written by `gemma3 prepare`, e.g. DATA/val.bin.", valueName: "file"))
    var data: String

    @Option(help: "Context T: tokens of history per window (default: min(512, max_position_embeddings)).")
    var context: Int?

    @Option(help: "Evaluate only the first N tokens of the file.")
    var maxTokens: Int?

    @Option(help: "Windows per forward pass (default: enough for ≈ 1024 tokens).")
    var batchSize: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if let context, context < 1 { throw ValidationError("--context must be positive") }
        if let maxTokens, maxTokens < 2 { throw ValidationError("--max-tokens must be at least 2") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be positive") }
    }

    func run() throws {
        let (config, store) = try loadModelDirectory(model)
        let dataURL = URL(fileURLWithPath: data)
        let file = try TokenFile(url: dataURL)
        let count = min(file.count, maxTokens ?? file.count)
        guard count >= 2 else { throw ModelCommandError("\(data) has \(file.count) tokens; at least 2 are needed") }
        let T = context ?? min(512, config.maxPositionEmbeddings)
        guard T <= config.maxPositionEmbeddings else {
            throw ModelCommandError("--context \(T) exceeds the model's max_position_embeddings (\(config.maxPositionEmbeddings))")
        }
        let B = batchSize ?? max(1, min(16, 1024 / T))
        let bytesPerToken = try Self.bytesPerToken(for: dataURL)

        var lastReport = DispatchTime.now().uptimeNanoseconds
        let result = try Evaluation.evaluate(
            config: config, parameters: store, tokens: UnsafeBufferPointer(rebasing: file.tokens[0..<count]),
            context: T, batchSize: B
        ) { predicted, runningLoss in
            let now = DispatchTime.now().uptimeNanoseconds
            if !json, now - lastReport > 10_000_000_000 {
                lastReport = now
                writeStderr(String(format: "eval: %d / %d tokens, running loss %.4f", predicted, count - 1, runningLoss))
            }
        }
        let (loss, bitsPerToken, seconds, predicted, windows) = (result.loss, result.bitsPerToken, result.seconds, result.predictedTokens, result.windows)
        var object: [String: Any] = [
            "model": model, "data": data, "context": T, "tokens": count, "predicted_tokens": predicted,
            "windows": windows, "loss": loss, "perplexity": exp(loss), "bits_per_token": bitsPerToken,
            "seconds": seconds, "tokens_per_second": Double(predicted) / seconds,
        ]
        if let bytesPerToken { object["bits_per_byte"] = bitsPerToken / bytesPerToken; object["bytes_per_token"] = bytesPerToken }
        if json {
            print(try jsonLine(object))
        } else {
            var line = String(format: "loss %.4f | perplexity %.3f | %.4f bits/token", loss, exp(loss), bitsPerToken)
            if let bytesPerToken { line += String(format: " | %.4f bits/byte", bitsPerToken / bytesPerToken) }
            print(line)
            writeStderr(String(format: "[%d tokens predicted in %d windows of ≤ %d, %.1f s, %.0f tokens/s]",
                               predicted, windows, T + 1, seconds, Double(predicted) / seconds))
        }
    }

    /// bytes_per_token of the split whose file name matches, from meta.json beside the file (nil when absent).
    static func bytesPerToken(for url: URL) throws -> Double? {
        let dir = url.deletingLastPathComponent()
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent(DatasetMeta.metaFileName).path) else { return nil }
        let meta = try DatasetMeta.load(directory: dir)
        let name = url.lastPathComponent
        if name == meta.val.file { return meta.val.bytesPerToken }
        if name == meta.train.file { return meta.train.bytesPerToken }
        return nil
    }
}
