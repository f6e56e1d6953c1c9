import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A small float32 model with the GPT-2 tokenizer, as `gemma3 train` writes one: random weights
/// (small, so the next-token distributions are broad and seeds matter),
/// 2 layers (one sliding, one full), hidden 128, the 50257-token vocabulary.
final class TinyServingModel {
    let url: URL
    init() throws {
        url = try TestPaths.temporaryDirectory("serve-model")
        let config = Gemma3Config(
            vocabSize: 50257, hiddenSize: 128, intermediateSize: 256, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 1,
            headDim: 32, slidingWindow: 16, layerTypes: [.slidingAttention, .fullAttention], maxPositionEmbeddings: 4096,
            eosTokenIds: [50256])
        let store = ParameterStore(config: config)
        var rng = SplitMix64(seed: 7)
        for t in store.layout.tensors { rng.fillNormal(store.view(t), std: t.isMatrix ? 0.05 : 0.1) }
        try HFCheckpoint.save(config: config, parameters: store, directory: url)
        for f in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: TestPaths.gpt2.appendingPathComponent(f), to: url.appendingPathComponent(f))
        }
    }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// The real Gemma 3 270M GGUF, when `scripts/fetch-test-artefacts.sh` (or `gemma3 download`) put it in the cache.
var realGGUF: URL? {
    let env = ProcessInfo.processInfo.environment
    let cache = env["GEMMA3_CACHE"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
        ?? URL(fileURLWithPath: env["HOME"] ?? NSHomeDirectory()).appendingPathComponent(".cache/gemma3")
    for candidate in [cache.appendingPathComponent("gemma-3-270m-q4_k_m.gguf"), cache.appendingPathComponent("models/gemma-3-270m-q4_k_m.gguf")]
    where FileManager.default.fileExists(atPath: candidate.path) {
        return candidate
    }
    return nil
}

struct ServerError: Error, CustomStringConvertible {
    let description: String
}

/// `gemma3 serve` as a child process on 127.0.0.1 with `--port 0`: started with the given flags,
/// its address read from the one line it prints, stopped with SIGTERM.
final class ServerProcess {
    let process = Process()
    let baseURL: String
    private let stderrFile: URL
    private let stdoutPipe = Pipe()
    private(set) var stdoutRest = Data()

    init(model: URL, arguments: [String] = [], waitUntilHealthy: Bool = true) throws {
        stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-serve-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log")
        FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.executableURL = try gemma3Executable()
        process.arguments = ["serve", "--model", model.path, "--host", "127.0.0.1", "--port", "0", "--threads", "1"] + arguments
        process.standardOutput = stdoutPipe
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        try process.run()
        // The first line on stdout is the address.
        var line = Data()
        let deadline = Date().addingTimeInterval(60)
        while !line.contains(0x0A) && Date() < deadline {
            let d = stdoutPipe.fileHandleForReading.availableData
            if d.isEmpty { break }
            line.append(d)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let first = text.split(separator: "\n").first, first.hasPrefix("listening on http://127.0.0.1:"),
              let port = Int(first.dropFirst("listening on http://127.0.0.1:".count)), port > 0 else {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            let log = (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
            throw ServerError(description: "no address line; stdout \(text.debugDescription), stderr: \(log)")
        }
        if let newline = line.firstIndex(of: 0x0A) { stdoutRest = Data(line[line.index(after: newline)...]) }
        baseURL = "http://127.0.0.1:\(port)"
        if waitUntilHealthy { try waitForHealth() }
    }

    /// What the server wrote to stderr so far.
    var stderr: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    /// Polls GET /health until 200 (the model is loaded).
    func waitForHealth(timeout: TimeInterval = 120) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let status = try? healthStatus(), status == 200 { return }
            guard process.isRunning else { throw ServerError(description: "the server exited: \(stderr)") }
            usleep(50_000)
        }
        throw ServerError(description: "the server did not become healthy: \(stderr)")
    }

    /// GET /health's status code (a raw socket, so the test needs no HTTP client of its own).
    func healthStatus() throws -> Int {
        let r = try runPython(script: """
            import sys, urllib.request, urllib.error
            try:
                print(urllib.request.urlopen(sys.argv[1] + "/health", timeout=5).status)
            except urllib.error.HTTPError as e:
                print(e.code)
            """, arguments: [baseURL])
        guard r.status == 0, let code = Int(r.output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ServerError(description: r.output)
        }
        return code
    }

    /// Sends SIGTERM and waits (at most `timeout` s, then SIGKILL); returns the exit status and
    /// whether it exited normally (not by a signal).
    @discardableResult
    func stop(timeout: TimeInterval = 30) -> (status: Int32, exited: Bool, stdout: String) {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        let rest = stdoutPipe.fileHandleForReading.readDataToEndOfFile()
        var all = Data(stdoutRest)
        all.append(rest)
        let out = String(decoding: all, as: UTF8.self)
        return (process.terminationStatus, process.terminationReason == .exit, out)
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: stderrFile)
    }
}

/// The Python scripts beside this file.
let scriptsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")

/// Runs `python3 Scripts/NAME args…`; returns its exit status and combined output.
func runClientScript(_ name: String, _ arguments: [String]) throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", scriptsDirectory.appendingPathComponent(name).path] + arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return ProcessResult(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// Whether the official `openai` Python package is importable.
let openAIClientAvailable: Bool = {
    (try? runPython(script: "import openai"))?.status == 0
}()

/// `gemma3 generate --json` for a prompt: the generated ids and text.
func generateJSON(model: URL, prompt: String, maxNewTokens: Int, extra: [String] = []) throws -> [String: Any] {
    let r = try runProcess(try gemma3Executable().path, ["generate", "--model", model.path, "--prompt", prompt, "--temperature", "0",
                                                         "--max-new-tokens", String(maxNewTokens), "--json"] + extra,
                           environment: ["GEMMA3_THREADS": "1"])
    guard r.status == 0, let object = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any] else {
        throw ServerError(description: "generate failed: \(String(decoding: r.stderr, as: UTF8.self))")
    }
    return object
}
