import Foundation
import Gemma3Model
import Gemma3Tokenizers
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// How `GemmaServer` listens and how big its pools are.
public struct ServerConfiguration: Sendable {
    /// Address to bind (default loopback only).
    public var host: String
    /// TCP port; 0 picks a free one (the `listening` event reports it).
    public var port: Int
    /// Slots: requests decoded together, each with its own KV cache.
    public var parallel: Int
    /// Positions per slot; nil: the model's `max_position_embeddings`, at most 4096.
    public var context: Int?
    /// When set, every endpoint but `/health` needs `Authorization: Bearer KEY`.
    public var apiKey: String?
    /// Requests that may wait for a slot; more are answered 429.
    public var maxQueue: Int
    /// Largest request body read; larger ones are answered 413.
    public var maxBodyBytes: Int
    /// Prompt tokens per prefill step (one chunk per scheduler iteration).
    public var prefillChunk: Int
    /// What a request may reuse of a slot's cached tokens (`exact` keeps replies bit-identical to uncached ones).
    public var promptCache: PromptCacheMode
    /// After SIGTERM/SIGINT, how long in-flight requests may run before they are cancelled.
    public var shutdownGracePeriod: Duration
    /// The model name `/v1/models` lists.
    public var modelID: String
    /// Where the HTTP framework and the service group log (nil: nowhere).
    public var logger: Logger?

    public init(host: String = "127.0.0.1", port: Int = 8080, parallel: Int = 4, context: Int? = nil, apiKey: String? = nil,
                maxQueue: Int = 64, maxBodyBytes: Int = 1 << 20, prefillChunk: Int = 512, promptCache: PromptCacheMode = .exact, shutdownGracePeriod: Duration = .seconds(10),
                modelID: String, logger: Logger? = nil) {
        self.host = host
        self.port = port
        self.parallel = parallel
        self.context = context
        self.apiKey = apiKey
        self.maxQueue = maxQueue
        self.maxBodyBytes = maxBodyBytes
        self.prefillChunk = prefillChunk
        self.promptCache = promptCache
        self.shutdownGracePeriod = shutdownGracePeriod
        self.modelID = modelID
        self.logger = logger
    }
}

/// What the server reports to its caller (the library prints nothing).
public enum ServerEvent: Sendable {
    /// The listener accepts connections on this address (the model may still be loading).
    case listening(host: String, port: Int)
    /// The model is loaded and requests are served.
    case modelLoaded(ServedModel, seconds: Double)
}

/// The engine behind the scheduler.
func makeBatchDecoder(model: LanguageModel, slots: Int, context: Int, prefillChunk: Int) throws -> BatchedEngine {
    // Spare ring rows for rewinds: a chunk plus an answer of up to 512 tokens (reuse past that
    // recomputes the prompt).
    try BatchedEngine(weights: model.weights, slots: slots, context: context, prefillChunk: prefillChunk,
                      rewindLimit: min(context, prefillChunk + 512))
}

/// The model's continuous-batching engine: one decode step reads every weight once for all slots,
/// and each slot's numbers are those of a lone `InferenceEngine` (batch-invariant).
extension BatchedEngine: BatchDecoding {}

/// The model's state as the endpoints see it.
final class ServingState: @unchecked Sendable {
    enum Phase {
        case loading
        case ready(ServedModel, any GenerationScheduling)
        case failed(String)
    }
    private let lock = NSLock()
    private var phase = Phase.loading

    var current: Phase {
        lock.lock(); defer { lock.unlock() }
        return phase
    }

    func set(_ p: Phase) {
        lock.lock(); phase = p; lock.unlock()
    }

    /// The model and scheduler, or 503 while loading.
    func ready() throws(APIError) -> (ServedModel, any GenerationScheduling) {
        switch current {
        case .ready(let model, let scheduler): return (model, scheduler)
        case .loading: throw APIError(status: 503, "the model is loading", type: "unavailable_error", code: "model_loading", retryAfter: 1)
        case .failed(let why): throw APIError(status: 503, "the model failed to load: \(why)", type: "unavailable_error", code: "model_failed")
        }
    }
}

/// An OpenAI-compatible HTTP server for one model (docs/serving.md): `/v1/chat/completions`,
/// `/v1/completions`, `/v1/models`, `/health`, `/metrics`, `/tokenize`, `/detokenize`, with
/// continuous batching over a slot pool.
///
/// The listener starts at once; the model is loaded on its own thread meanwhile (`/health`
/// answers 503 until it is ready). `run` returns after SIGTERM or SIGINT once in-flight requests
/// have finished (or were cancelled after `shutdownGracePeriod`).
public final class GemmaServer: Sendable {
    public let configuration: ServerConfiguration
    private let loader: @Sendable () throws -> LanguageModel
    let state = ServingState()
    /// The server's Prometheus metrics.
    public let metrics = ServingMetrics()

    /// - Parameter loader: loads the model (called once, on a thread of its own).
    public init(configuration: ServerConfiguration, loader: @escaping @Sendable () throws -> LanguageModel) {
        self.configuration = configuration
        self.loader = loader
    }

    /// Listens, loads the model, serves until SIGTERM/SIGINT. Throws when the address cannot be
    /// bound or the model cannot be loaded.
    public func run(onEvent: @escaping @Sendable (ServerEvent) -> Void = { _ in }) async throws {
        let logger = configuration.logger ?? Logger(label: "gemma3.serve", factory: { _ in SwiftLogNoOpLogHandler() })
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: ServingMiddleware(apiKey: configuration.apiKey, metrics: metrics))
        Endpoints(server: self).register(on: router)
        let host = configuration.host
        let app = Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(host, port: configuration.port), serverName: "gemma3-swift"),
            onServerRunning: { channel in
                // No address: the channel is already closing (a failed model load shuts down at once).
                if let port = channel.localAddress?.port { onEvent(.listening(host: host, port: port)) }
            },
            logger: logger)
        let schedulerService = SchedulerService(state: state)
        var groupConfiguration = ServiceGroupConfiguration(services: [schedulerService, app], gracefulShutdownSignals: [.sigterm, .sigint],
                                                           logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = configuration.shutdownGracePeriod
        groupConfiguration.maximumCancellationDuration = .seconds(5)
        let group = ServiceGroup(configuration: groupConfiguration)
        let loadFailure = LoadFailure()
        startLoading(onEvent: onEvent) { error in
            loadFailure.error = error
            Task { await group.triggerGracefulShutdown() }
        }
        try await group.run()
        if let error = loadFailure.error { throw error }
    }

    private final class LoadFailure: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: (any Error)?
        var error: (any Error)? {
            get { lock.lock(); defer { lock.unlock() }; return stored }
            set { lock.lock(); stored = newValue; lock.unlock() }
        }
    }

    private func startLoading(onEvent: @escaping @Sendable (ServerEvent) -> Void, onFailure: @escaping @Sendable (any Error) -> Void) {
        let configuration = configuration
        let loader = loader
        let state = state
        let metrics = metrics
        let thread = Thread {
            let start = Date()
            do {
                let model = try loader()
                let limit = model.config.maxPositionEmbeddings
                let context = configuration.context ?? min(4096, limit)
                guard context >= 1, context <= limit else {
                    throw GenerationError("--context \(context) is outside 1…\(limit) (the model's max_position_embeddings)")
                }
                let decoder = try makeBatchDecoder(model: model, slots: configuration.parallel, context: context,
                                                   prefillChunk: configuration.prefillChunk)
                let scheduler = Scheduler(decoder: decoder, tokenizer: model.tokenizer, maxQueue: configuration.maxQueue,
                                          promptCache: configuration.promptCache, observer: metrics)
                let served = ServedModel(id: configuration.modelID, tokenizer: model.tokenizer, stopTokens: model.stopTokens,
                                         contextLength: decoder.contextLength, created: Int(Date().timeIntervalSince1970))
                scheduler.start()
                state.set(.ready(served, scheduler))
                onEvent(.modelLoaded(served, seconds: Date().timeIntervalSince(start)))
            } catch {
                state.set(.failed("\(error)"))
                onFailure(error)
            }
        }
        thread.name = "gemma3-model-loader"
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// Stops the scheduler once the HTTP server (shut down before it: services stop in reverse
/// order) has finished its in-flight requests.
struct SchedulerService: Service {
    let state: ServingState

    func run() async throws {
        try? await gracefulShutdown()
        if case .ready(_, let scheduler) = state.current { scheduler.stop() }
    }
}

/// The endpoints metrics are labelled with (every other path counts as "other").
let knownEndpoints: Set<String> = ["/health", "/metrics", "/v1/models", "/models", "/v1/completions", "/completions",
                                   "/v1/chat/completions", "/chat/completions", "/tokenize", "/detokenize"]

/// Bearer-key check, OpenAI-shaped errors for everything thrown (unknown routes included), and
/// the request metrics (counted when the body has been written).
struct ServingMiddleware<Context: RequestContext>: RouterMiddleware {
    let apiKey: String?
    let metrics: ServingMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let path = request.uri.path
        let endpoint = knownEndpoints.contains(path) ? path : "other"
        var response: Response
        do {
            if let apiKey, path != "/health" {
                guard let header = request.headers[.authorization], header == "Bearer \(apiKey)" else {
                    throw APIError(status: 401, request.headers[.authorization] == nil
                                   ? "missing API key: send Authorization: Bearer KEY" : "invalid API key",
                                   code: "invalid_api_key")
                }
            }
            response = try await next(request, context)
        } catch let error as APIError {
            response = error.response
        } catch let error as HTTPError {
            let message = error.status == .notFound ? "no route \(request.method) \(path)" : (error.body ?? error.status.reasonPhrase)
            response = APIError(status: error.status.code, message, code: error.status == .notFound ? "not_found" : nil).response
        } catch is NIOTooManyBytesError {
            response = APIError(status: 413, "the request body is too large", code: "request_too_large").response
        } catch {
            response = APIError(status: 500, "internal error: \(error)").response
        }
        let status = response.status.code
        let body = response.body
        let metrics = metrics
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            do {
                try await body.write(writer)
                metrics.requestCompleted(endpoint: endpoint, status: status, seconds: Self.seconds(ContinuousClock.now - start))
            } catch {
                metrics.requestCompleted(endpoint: endpoint, status: status, seconds: Self.seconds(ContinuousClock.now - start))
                throw error
            }
        }
        return response
    }

    static func seconds(_ d: Duration) -> Double {
        let c = d.components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}

extension APIError {
    /// The error as an HTTP response (JSON body; `Retry-After` when set).
    var response: Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        return Response(status: HTTPResponse.Status(code: status), headers: headers,
                        body: ResponseBody(byteBuffer: ByteBuffer(string: body.serialized)))
    }
}

/// A JSON response.
func jsonResponse(_ value: JSONOutput, status: HTTPResponse.Status = .ok, close: Bool = false) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    if close { headers[.connection] = "close" }
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: value.serialized + "\n")))
}
