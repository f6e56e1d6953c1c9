import ArgumentParser
import Dispatch
import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3Serving
import Logging

/// `gemma3 serve`: the OpenAI-compatible HTTP server (docs/serving.md).
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a model over an OpenAI-compatible HTTP API with continuous batching.",
        discussion: """
        Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, \
        GET /metrics, POST /tokenize, POST /detokenize. Prints one line to stdout, \
        "listening on http://HOST:PORT", once the listener accepts connections (the model may still \
        be loading: /health answers 503 until it is ready); logs go to stderr. SIGTERM or SIGINT \
        stops accepting, lets in-flight requests finish (cancelling them after 10 s) and exits 0.
        """
    )

    @Option(help: ArgumentHelp("A Gemma 3 GGUF file, a Hugging Face Gemma directory or a checkpoint directory.", valueName: "file.gguf|dir"))
    var model: String

    @OptionGroup var adapter: AdapterOption

    @Option(help: "Address to bind.")
    var host = "127.0.0.1"

    @Option(parsing: .unconditional, help: "TCP port (0: a free one, shown in the listening line).")
    var port = 8080

    @Option(parsing: .unconditional, help: "Requests decoded together (slots, each with its own KV cache).")
    var parallel = 4

    @Option(parsing: .unconditional, help: "Positions per slot (prompt + answer); default the model's max_position_embeddings, at most 4096.")
    var context: Int?

    @Option(help: "Require Authorization: Bearer KEY on every endpoint but /health.")
    var apiKey: String?

    @Option(name: .customLong("queue"), parsing: .unconditional, help: "Requests that may wait for a slot; more are answered 429.")
    var queue = 64

    @Option(parsing: .unconditional, help: "Largest request body in bytes; larger ones are answered 413.")
    var maxBodyBytes = 1 << 20

    @Option(parsing: .unconditional, help: "Prompt tokens per prefill step (a new prompt holds up decoding for at most one step).")
    var prefillChunk = 512

    @Option(help: ArgumentHelp("What a request may reuse of a slot's cached tokens: exact (whole prefill chunks: replies bit-identical to uncached ones), prefix (the longest shared prefix, as llama-server; replies may differ in the last bits), off.", valueName: "exact|prefix|off"))
    var promptCache: PromptCacheMode = .exact

    @Option(parsing: .unconditional, help: "Worker threads of the compute pool (default: GEMMA3_THREADS, else every core).")
    var threads: Int?

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0…65535") }
        guard parallel >= 1 else { throw ValidationError("--parallel must be ≥ 1") }
        if let context, context < 1 { throw ValidationError("--context must be positive") }
        guard queue >= 0 else { throw ValidationError("--queue must be ≥ 0") }
        guard maxBodyBytes >= 1 else { throw ValidationError("--max-body-bytes must be positive") }
        guard prefillChunk >= 1 else { throw ValidationError("--prefill-chunk must be positive") }
        if let threads, threads < 1 { throw ValidationError("--threads must be ≥ 1") }
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key must not be empty") }
    }

    func run() throws {
        if let threads {
            var settings = RuntimeSettings.current
            settings.threads = threads
            RuntimeSettings.configure(settings)
        }
        guard FileManager.default.fileExists(atPath: model) else {
            throw ModelCommandError("model \(model) does not exist")
        }
        var logger = Logger(label: "gemma3.serve", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = .warning
        let name = URL(fileURLWithPath: model).standardizedFileURL.lastPathComponent
        let configuration = ServerConfiguration(
            host: host, port: port, parallel: parallel, context: context, apiKey: apiKey, maxQueue: queue,
            maxBodyBytes: maxBodyBytes, prefillChunk: prefillChunk, promptCache: promptCache, modelID: name, logger: logger)
        let path = model, adapterURL = adapter.url
        let server = GemmaServer(configuration: configuration) { try loadModel(path, options: LoadOptions(adapter: adapterURL)) }
        let done = DispatchSemaphore(value: 0)
        let failure = ServeFailure()
        Task {
            do {
                try await server.run { event in
                    switch event {
                    case .listening(let host, let port):
                        let shown = host.contains(":") ? "[\(host)]" : host
                        writeStdout("listening on http://\(shown):\(port)\n")
                    case .modelLoaded(let served, let seconds):
                        writeStderr(String(format: "model %@ loaded in %.2f s: %d slots × %d positions", served.id, seconds,
                                           configuration.parallel, served.contextLength))
                    }
                }
            } catch {
                failure.set(error)
            }
            done.signal()
        }
        done.wait()
        if let error = failure.error { throw ModelCommandError("\(error)") }
    }
}

/// The error that ended the server, handed from its task to the command.
private final class ServeFailure: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: (any Error)?
    func set(_ e: any Error) { lock.lock(); stored = e; lock.unlock() }
    var error: (any Error)? { lock.lock(); defer { lock.unlock() }; return stored }
}

extension PromptCacheMode: ExpressibleByArgument {}
