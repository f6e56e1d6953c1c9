import ArgumentParser
import Dispatch
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Model

/// `gemma3 bench serve`: `gemma3 serve` and llama-server on the same model file, under the same load
/// from this process: aggregate decode tokens/s and time to first token at several concurrencies.
struct BenchServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Measure gemma3 serve (and llama-server, with --llama-server) under concurrent streamed completions.",
        discussion: """
        Starts `gemma3 serve --model M --parallel P --context C/P --threads T` on a free loopback port \
        (and, with --llama-server, `llama-server -m M --parallel P -c C -t T` — its -c is the whole \
        KV pool, ours is per slot), then, for each --concurrency level, runs --rounds rounds of that \
        many concurrent streamed /v1/completions requests: --prompt-tokens distinct prompt tokens each \
        (token ids), --answer-tokens tokens each (greedy, ignore_eos). Reports per server and level the \
        median aggregate decode tokens/s (all generated tokens of a round over its wall time) and the \
        time to first token p50/p99 over every request of the level, and our ratios. One warm-up \
        request per server first. The servers run one at a time, so they never share the cores.
        """
    )

    @Option(help: ArgumentHelp("Model file both servers load (e.g. ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf).", valueName: "file.gguf"))
    var model: String

    @Option(name: .customLong("llama-server"), help: ArgumentHelp("llama-server executable to measure in the same run.", valueName: "path"))
    var llamaServer: String?

    @Option(help: "Comma-separated numbers of concurrent requests.")
    var concurrency = "1,4,16"

    @Option(help: "Prompt tokens per request.")
    var promptTokens = 128

    @Option(help: "Generated tokens per request.")
    var answerTokens = 128

    @Option(help: "Rounds per concurrency level (medians are reported).")
    var rounds = 3

    @Option(help: "Server slots (--parallel of both servers).")
    var parallel = 16

    @Option(help: "KV positions over all slots (llama-server's -c; ours gets this divided by --parallel per slot).")
    var context = 8192

    @Option(help: "Threads of each server (default: every core).")
    var threads: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if levels.isEmpty || levels.contains(where: { $0 < 1 }) { throw ValidationError("--concurrency must list positive numbers, e.g. 1,4,16") }
        if promptTokens < 1 || answerTokens < 1 { throw ValidationError("--prompt-tokens and --answer-tokens must be at least 1") }
        if rounds < 1 { throw ValidationError("--rounds must be at least 1") }
        if parallel < 1 { throw ValidationError("--parallel must be at least 1") }
        if context / max(1, parallel) < promptTokens + answerTokens + 1 {
            throw ValidationError("--context \(context) over --parallel \(parallel) slots leaves \(context / max(1, parallel)) positions a slot, fewer than a request needs (\(promptTokens + answerTokens + 1))")
        }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if let maximum = levels.max(), maximum > parallel { throw ValidationError("--concurrency \(maximum) exceeds --parallel \(parallel)") }
    }

    var levels: [Int] { concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func run() throws {
        guard FileManager.default.fileExists(atPath: model) else { throw ValidationError("\(model) does not exist") }
        let tokenizer = try LanguageModel.loadTokenizer(model)
        // Distinct prompts of exactly --prompt-tokens ids: a numbered opening, then a fixed story.
        let story = String(repeating: "Once upon a time, in a small village by the sea, there lived a girl named Lily who loved to collect shells. Every morning she walked along the beach with her dog. ", count: 1 + promptTokens / 16)
        let body = tokenizer.encode(story)
        func prompt(_ i: Int) -> [Int] {
            let ids = tokenizer.encode("Story \(i + 1). ") + body
            return Array(ids.prefix(promptTokens)).map { Int($0) }
        }
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        var servers: [ServerMeasurement] = []

        let own = try ServerProcess.startOwn(model: model, parallel: parallel, slotContext: context / parallel, threads: threadCount)
        servers.append(try measure(name: "gemma3 serve", server: own, prompt: prompt))
        own.stop()
        if let llamaServer {
            let reference = try ServerProcess.startLlamaServer(executable: llamaServer, model: model, parallel: parallel, context: context, threads: threadCount)
            servers.append(try measure(name: "llama-server", server: reference, prompt: prompt))
            reference.stop()
        }
        try report(servers, threads: threadCount)
    }

    /// Every level, every round, on one running server.
    private func measure(name: String, server: ServerProcess, prompt: (Int) -> [Int]) throws -> ServerMeasurement {
        var counter = 0
        func request() -> CompletionRequest {
            defer { counter += 1 }
            return CompletionRequest(prompt: prompt(counter), maxTokens: answerTokens)
        }
        // Warm-up: page in the weights, first-call allocations.
        let warm = CompletionClient.run([request()], port: server.port)
        if let failure = warm.first(where: { $0.error != nil }) { throw ValidationError("\(name): warm-up request failed: \(failure.error!)") }
        var levelsOut: [LevelMeasurement] = []
        for level in levels {
            var aggregate: [Double] = [], ttft: [Double] = [], tokens = 0, requests = 0
            for _ in 0..<rounds {
                let batch = (0..<level).map { _ in request() }
                let start = DispatchTime.now().uptimeNanoseconds
                let results = CompletionClient.run(batch, port: server.port)
                let wall = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
                if let failure = results.first(where: { $0.error != nil }) { throw ValidationError("\(name): a request failed at concurrency \(level): \(failure.error!)") }
                let generated = results.reduce(0) { $0 + $1.completionTokens }
                aggregate.append(Double(generated) / wall)
                ttft.append(contentsOf: results.map(\.timeToFirstToken))
                tokens += generated
                requests += results.count
            }
            levelsOut.append(LevelMeasurement(concurrency: level, aggregateTokensPerSecond: median(aggregate),
                                              ttftP50: percentile(ttft, 0.50), ttftP99: percentile(ttft, 0.99),
                                              rounds: aggregate, requests: requests, tokensPerRequest: Double(tokens) / Double(max(1, requests))))
        }
        return ServerMeasurement(name: name, command: server.commandLine, levels: levelsOut)
    }

    private func report(_ servers: [ServerMeasurement], threads: Int) throws {
        let ours = servers[0], reference = servers.count > 1 ? servers[1] : nil
        if json {
            func levelObject(_ l: LevelMeasurement) -> [String: Any] {
                ["concurrency": l.concurrency, "aggregate_tokens_per_second": l.aggregateTokensPerSecond,
                 "ttft_p50_seconds": l.ttftP50, "ttft_p99_seconds": l.ttftP99, "round_tokens_per_second": l.rounds,
                 "requests": l.requests, "tokens_per_request": l.tokensPerRequest]
            }
            var object: [String: Any] = [
                "model": model, "host_cpu": BuildInfo.hostCPU, "build": BuildInfo.description, "threads": threads,
                "parallel": parallel, "context": context, "prompt_tokens": promptTokens, "answer_tokens": answerTokens, "rounds": rounds,
                "servers": servers.map { ["name": $0.name, "command": $0.command, "levels": $0.levels.map(levelObject)] as [String: Any] },
            ]
            if let reference {
                object["ratios"] = zip(ours.levels, reference.levels).map { o, r in
                    ["concurrency": o.concurrency, "aggregate_throughput": o.aggregateTokensPerSecond / r.aggregateTokensPerSecond,
                     "ttft_p50": o.ttftP50 / r.ttftP50, "ttft_p99": o.ttftP99 / r.ttftP99] as [String: Any]
                }
            }
            print(try jsonLine(object))
            return
        }
        print("bench serve: \(model), \(promptTokens)-token prompts, \(answerTokens)-token answers, \(rounds) rounds, \(threads) threads, --parallel \(parallel)")
        print("  host CPU: \(BuildInfo.hostCPU)")
        for server in servers {
            print("  \(server.name): \(server.command)")
            for l in server.levels {
                print(String(format: "    concurrency %3d: %7.1f tokens/s aggregate, TTFT p50 %6.0f ms, p99 %6.0f ms",
                             l.concurrency, l.aggregateTokensPerSecond, l.ttftP50 * 1e3, l.ttftP99 * 1e3))
            }
        }
        if let reference {
            print("  ours / llama-server:")
            for (o, r) in zip(ours.levels, reference.levels) {
                print(String(format: "    concurrency %3d: throughput %.2f×, TTFT p50 %.2f×, p99 %.2f×",
                             o.concurrency, o.aggregateTokensPerSecond / r.aggregateTokensPerSecond, o.ttftP50 / r.ttftP50, o.ttftP99 / r.ttftP99))
            }
        }
    }
}

private struct LevelMeasurement {
    let concurrency: Int
    let aggregateTokensPerSecond: Double
    let ttftP50: Double, ttftP99: Double
    let rounds: [Double]
    let requests: Int
    let tokensPerRequest: Double
}

private struct ServerMeasurement {
    let name: String
    let command: String
    let levels: [LevelMeasurement]
}

/// The value below which `fraction` of `values` lie (nearest rank).
private func percentile(_ values: [Double], _ fraction: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(sorted.count - 1, max(0, rank))]
}

// MARK: - The servers

/// A server child process on a loopback port, stopped with SIGTERM.
private final class ServerProcess {
    let process: Process
    let port: Int
    let commandLine: String

    private init(process: Process, port: Int, commandLine: String) {
        (self.process, self.port, self.commandLine) = (process, port, commandLine)
    }

    /// `gemma3 serve` (this executable) on a free port: the port from its address line.
    static func startOwn(model: String, parallel: Int, slotContext: Int, threads: Int) throws -> ServerProcess {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let arguments = ["serve", "--model", model, "--host", "127.0.0.1", "--port", "0", "--parallel", "\(parallel)",
                         "--context", "\(slotContext)", "--threads", "\(threads)"]
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        InterruptHandler.register(child: p.processIdentifier)
        // The first line that names an address: "… http://127.0.0.1:PORT …".
        let reader = out.fileHandleForReading
        var text = ""
        let deadline = Date().addingTimeInterval(180)
        var port: Int?
        while port == nil, Date() < deadline, p.isRunning {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
            if let range = text.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(text[range].split(separator: ":").last!)
            }
        }
        guard let port else {
            p.terminate()
            throw ValidationError("gemma3 serve did not print its address (output: \(text.prefix(200)))")
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        let drain = UncheckedSendable(reader)
        DispatchQueue.global().async { while !drain.value.availableData.isEmpty {} }
        let server = ServerProcess(process: p, port: port, commandLine: "gemma3 " + arguments.joined(separator: " "))
        try server.waitHealthy(timeout: 180)
        return server
    }

    static func startLlamaServer(executable: String, model: String, parallel: Int, context: Int, threads: Int) throws -> ServerProcess {
        let port = try freePort()
        let arguments = ["-m", model, "--host", "127.0.0.1", "--port", "\(port)", "--parallel", "\(parallel)", "-c", "\(context)",
                         "-t", "\(threads)", "-tb", "\(threads)", "--no-webui"]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        InterruptHandler.register(child: p.processIdentifier)
        let server = ServerProcess(process: p, port: port, commandLine: "llama-server " + arguments.joined(separator: " "))
        try server.waitHealthy(timeout: 180)
        return server
    }

    /// Polls GET /health until 200.
    func waitHealthy(timeout: TimeInterval) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard process.isRunning else { throw ValidationError("\(commandLine.split(separator: " ").first!) exited with status \(process.terminationStatus) before it was ready") }
            if CompletionClient.get("/health", port: port) == 200 { return }
            usleep(100_000)
        }
        stop()
        throw ValidationError("\(commandLine.split(separator: " ").first!) was not healthy within \(Int(timeout)) s")
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(20)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        InterruptHandler.unregister(child: process.processIdentifier)
    }

    /// A port nothing listens on now (bound to 0, read back, closed).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ValidationError("cannot open a socket") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> Bool in
                bind(fd, sa, length) == 0 && getsockname(fd, sa, &length) == 0
            }
        }
        guard bound else { throw ValidationError("cannot bind a loopback port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

// MARK: - The client

private struct CompletionRequest {
    let prompt: [Int]
    let maxTokens: Int
}

private struct CompletionResult {
    var timeToFirstToken = Double.nan
    var completionTokens = 0
    var error: String?
}

/// Streamed /v1/completions requests, all started at once, each on its own URLSession (its delegate
/// notes when the first event arrives).
private enum CompletionClient {
    static func run(_ requests: [CompletionRequest], port: Int) -> [CompletionResult] {
        let streams = requests.map { StreamingRequest($0, port: port) }
        for s in streams { s.start() }
        return streams.map { $0.wait() }
    }

    /// Status of GET `path`, or nil when nothing answers.
    static func get(_ path: String, port: Int) -> Int? {
        let session = URLSession(configuration: .ephemeral)
        defer { session.finishTasksAndInvalidate() }
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.timeoutInterval = 5
        let done = DispatchSemaphore(value: 0)
        // Written before the signal, read after the wait.
        final class Status: @unchecked Sendable { var code: Int? }
        let status = Status()
        session.dataTask(with: request) { _, response, _ in
            status.code = (response as? HTTPURLResponse)?.statusCode
            done.signal()
        }.resume()
        done.wait()
        return status.code
    }
}

/// One streamed request: counts server-sent events as they arrive.
private final class StreamingRequest: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    private let request: URLRequest
    private let lock = NSLock()
    private var began: UInt64 = 0
    private var result = CompletionResult()
    private var received = Data()
    private var status = 0
    private let finished = DispatchSemaphore(value: 0)
    private var session: URLSession?

    init(_ completion: CompletionRequest, port: Int) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/completions")!)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.timeoutInterval = 600
        let body: [String: Any] = ["prompt": completion.prompt, "max_tokens": completion.maxTokens, "temperature": 0,
                                   "stream": true, "ignore_eos": true, "stream_options": ["include_usage": true]]
        request.httpBody = try? JSONSerialization.data(withJSONObject: body)
        self.request = request
    }

    func start() {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 600
        let session = URLSession(configuration: configuration, delegate: self, delegateQueue: nil)
        self.session = session
        began = DispatchTime.now().uptimeNanoseconds
        session.dataTask(with: request).resume()
    }

    func wait() -> CompletionResult {
        finished.wait()
        session?.finishTasksAndInvalidate()
        return lock.withLock { result }
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        lock.withLock { status = (response as? HTTPURLResponse)?.statusCode ?? 0 }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.withLock {
            received.append(data)
            if result.timeToFirstToken.isNaN, received.range(of: Data("data: ".utf8)) != nil {
                result.timeToFirstToken = Double(now - began) * 1e-9
            }
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        lock.withLock {
            let text = String(decoding: received, as: UTF8.self)
            if let error {
                result.error = error.localizedDescription
            } else if status != 200 {
                result.error = "HTTP \(status): \(text.prefix(200))"
            } else if !text.contains("[DONE]") {
                result.error = "the stream ended without data: [DONE]"
            }
            // Tokens from the usage object of the last event, else one per event with text.
            if let range = text.range(of: #""completion_tokens"\s*:\s*(\d+)"#, options: [.regularExpression, .backwards]),
               let n = Int(text[range].split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) {
                result.completionTokens = n
            } else {
                result.completionTokens = text.components(separatedBy: "data: ").dropFirst().filter { !$0.hasPrefix("[DONE]") }.count
            }
        }
        finished.signal()
    }
}
