import ArgumentParser
import Dispatch
import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3Tokenizers
import Gemma3Training

/// `gemma3 eval`: loss, perplexity and bits per byte of a model over a whole token file.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Loss, perplexity and bits per byte of a model over a whole token file or text file.",
        discussion: """
        --data FILE.bin (from `gemma3 prepare`) is cut into windows of T+1 tokens starting at 0, T, \
        2T, … (the last one shorter), so every token but the first is predicted exactly once, each \
        from at most T tokens of context; the loss is the mean natural-log cross-entropy over all \
        predicted tokens. The forward pass is the training model's (float32, batched matrix \
        products, no KV cache). Bits per byte use bytes_per_token of the matching split in the \
        meta.json beside the file.
        --text FILE (UTF-8) is tokenized with the model's own tokenizer: GPT-2 models as above (\
        `<|endoftext|>` read as the special token); Gemma models (a GGUF file, or a Hugging Face \
        directory with Gemma's tokenizer.json) see each window as <bos> followed by T tokens, all \
        of which are predicted, with the inference engine (quantized weights used as stored). Bits \
        per byte use the text's bytes per token.
        """
    )

    @Option(help: ArgumentHelp("Model directory (config.json + model.safetensors), e.g. RUN/best; or a Gemma 3 GGUF file.", valueName: "dir|file.gguf"))
    var model: String

    @OptionGroup var adapter: AdapterOption

    @Option(help: ArgumentHelp("Token file written by `gemma3 prepare`, e.g. DATA/val.bin.", valueName: "file"))
    var data: String?

    @Option(help: ArgumentHelp("A UTF-8 text file, tokenized with the model's tokenizer.", valueName: "file"))
    var text: String?

    @Option(help: "Context T: tokens of history per window (default: min(512, max_position_embeddings)).")
    var context: Int?

    @Option(help: "Evaluate only the first N tokens of the file.")
    var maxTokens: Int?

    @Option(help: "Windows per forward pass (default: enough for ≈ 1024 tokens).")
    var batchSize: Int?

    @Option(help: ArgumentHelp("Batched-product arithmetic on GGUF models (ignored for other models): f32 (exact on the stored weights, the default for evaluation), bf16 (AVX-512 BF16 CPUs) or auto.", valueName: "auto|f32|bf16"))
    var prefill: PrefillChoice = .f32

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if (data == nil) == (text == nil) { throw ValidationError("give either --data FILE.bin or --text FILE") }
        if let context, context < 1 { throw ValidationError("--context must be positive") }
        if let maxTokens, maxTokens < 2 { throw ValidationError("--max-tokens must be at least 2") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be positive") }
    }

    func run() throws {
        if let text { return try runText(text) }
        let data = self.data!
        // A GGUF file is refused before its weights are mapped and converted.
        let loaded = LanguageModel.isGGUF(model) ? nil : try loadModel(model)
        guard let loaded, loaded.format == .gpt2Checkpoint, let store = loaded.parameters else {
            throw ModelCommandError("\(data) holds GPT-2 token ids; evaluate a Gemma model on text with --text FILE")
        }
        let config = loaded.config
        let dataURL = URL(fileURLWithPath: data)
        let file = try TokenFile(url: dataURL)
        let count = min(file.count, maxTokens ?? file.count)
        guard count >= 2 else { throw ModelCommandError("\(data) has \(file.count) tokens; at least 2 are needed") }
        let T = context ?? min(512, config.maxPositionEmbeddings)
        guard T <= config.maxPositionEmbeddings else {
            throw ModelCommandError("--context \(T) exceeds the model's max_position_embeddings (\(config.maxPositionEmbeddings))")
        }
        let B = batchSize(forContext: T)
        let bytesPerToken = try Self.bytesPerToken(for: file)

        let result = try Evaluation.evaluate(
            config: config, parameters: store, tokens: UnsafeBufferPointer(rebasing: file.tokens[0..<count]),
            context: T, batchSize: B, progress: progressReporter()
        )
        try report(result, context: T, bytesPerToken: bytesPerToken, fields: ["data": data, "tokens": count])
    }

    /// --batch-size, else as many windows as keep a batch near 1024 tokens (at most 16).
    func batchSize(forContext T: Int) -> Int { batchSize ?? max(1, min(16, 1024 / T)) }

    /// A progress callback that prints the running loss to stderr every 10 s (silent with --json).
    func progressReporter() -> (Int, Double) -> Void {
        var lastReport = DispatchTime.now().uptimeNanoseconds
        return { predicted, runningLoss in
            let now = DispatchTime.now().uptimeNanoseconds
            if !json, now - lastReport > 10_000_000_000 {
                lastReport = now
                writeStderr(String(format: "eval: %d tokens predicted, running loss %.4f", predicted, runningLoss))
            }
        }
    }

    /// Prints the result: one JSON object (with `fields` added) or a line on stdout and timing on stderr.
    func report(_ result: EvaluationResult, context T: Int, bytesPerToken: Double?, fields: [String: Any]) throws {
        var object: [String: Any] = [
            "model": model, "context": T, "predicted_tokens": result.predictedTokens, "windows": result.windows,
            "loss": result.loss, "perplexity": result.perplexity, "bits_per_token": result.bitsPerToken,
            "seconds": result.seconds, "tokens_per_second": Double(result.predictedTokens) / result.seconds,
        ]
        if let bytesPerToken {
            object["bits_per_byte"] = result.bitsPerByte(bytesPerToken: bytesPerToken)
            object["bytes_per_token"] = bytesPerToken
        }
        object.merge(fields) { _, new in new }
        if json {
            print(try jsonLine(object))
            return
        }
        var line = String(format: "loss %.4f | perplexity %.3f | %.4f bits/token", result.loss, result.perplexity, result.bitsPerToken)
        if let bytesPerToken { line += String(format: " | %.4f bits/byte", result.bitsPerByte(bytesPerToken: bytesPerToken)) }
        print(line)
        writeStderr(String(format: "[%d tokens predicted in %d windows of ≤ %d, %.1f s, %.0f tokens/s]",
                           result.predictedTokens, result.windows, T + 1, result.seconds, Double(result.predictedTokens) / result.seconds))
    }

    /// --text: tokenizes with the model's tokenizer and evaluates (see the discussion).
    func runText(_ path: String) throws {
        let bytes = try readTextFile(path)
        let result: EvaluationResult
        let tokenCount: Int, T: Int
        var fullTokenCount = 0
        let progress = progressReporter()
        // 16-bit activations for any single-token product (a last window of one token): eval's
        // figures stay within 1e-4 of exact arithmetic on the stored weights.
        let loaded = try loadModel(model, options: LoadOptions(decodeActivations: .int16, prefill: try prefill.precision(), adapter: adapter.url))
        let gemma = loaded.gemmaTokenizer.map { (config: loaded.config, weights: loaded.weights, tokenizer: $0) }
        if let gemma {
            let all = bytes.withUnsafeBufferPointer { gemma.tokenizer.encode(utf8: $0, addBOS: false) }
            let tokens = Array(all.prefix(maxTokens ?? Int.max))
            guard !tokens.isEmpty else { throw ModelCommandError("\(path) is empty") }
            fullTokenCount = all.count
            if let context, context + 1 > gemma.config.maxPositionEmbeddings {
                throw ModelCommandError("--context \(context) + BOS exceeds the model's max_position_embeddings (\(gemma.config.maxPositionEmbeddings))")
            }
            T = min(context ?? min(512, gemma.config.maxPositionEmbeddings - 1), tokens.count)
            let engine = try InferenceEngine(weights: gemma.weights, maxContext: T + 1)
            result = try Evaluation.evaluate(engine: engine, tokens: tokens, context: T, bos: gemma.tokenizer.bosTokenID, progress: progress)
            tokenCount = tokens.count
        } else {
            guard let tokenizer = loaded.tokenizer as? GPT2Tokenizer, let store = loaded.parameters else {
                throw ModelCommandError("\(model): no GPT-2 tokenizer")
            }
            let config = loaded.config
            var ids: [Int32] = []
            bytes.withUnsafeBufferPointer { tokenizer.encode(utf8: $0, allowSpecial: true, into: &ids) }
            guard ids.count >= 2 else { throw ModelCommandError("\(path) has \(ids.count) tokens; at least 2 are needed") }
            fullTokenCount = ids.count
            if let outside = ids.first(where: { Int($0) >= config.vocabSize }) {
                throw ModelCommandError("\(path): token \(outside) is outside the model's vocabulary (\(config.vocabSize))")
            }
            let tokens = ids.prefix(maxTokens ?? Int.max).map { UInt16($0) }
            if let context, context > config.maxPositionEmbeddings {
                throw ModelCommandError("--context \(context) exceeds the model's max_position_embeddings (\(config.maxPositionEmbeddings))")
            }
            T = min(context ?? min(512, config.maxPositionEmbeddings), tokens.count - 1)
            let B = batchSize(forContext: T)
            result = try tokens.withUnsafeBufferPointer {
                try Evaluation.evaluate(config: config, parameters: store, tokens: $0, context: T, batchSize: B, progress: progress)
            }
            tokenCount = tokens.count
        }
        // With --max-tokens the text is cut, so bytes per token come from the whole text's average.
        let bytesPerToken = Double(bytes.count) / Double(fullTokenCount)
        try report(result, context: T, bytesPerToken: bytesPerToken,
                   fields: ["text": path, "tokens": tokenCount, "text_bytes": bytes.count])
    }

    /// bytes_per_token of the split whose file name matches, from meta.json beside the file (nil when
    /// absent), after checking that the file is the one meta.json describes.
    static func bytesPerToken(for file: TokenFile) throws -> Double? {
        let dir = file.url.deletingLastPathComponent()
        let metaPath = dir.appendingPathComponent(DatasetMeta.metaFileName).path
        guard FileManager.default.fileExists(atPath: metaPath) else { return nil }
        let meta = try DatasetMeta.load(directory: dir)
        let name = file.url.lastPathComponent
        guard let split = [meta.val, meta.train].first(where: { $0.file == name }) else { return nil }
        try DatasetMeta.verify(file, against: split, metaPath: metaPath)
        return split.bytesPerToken
    }
}
