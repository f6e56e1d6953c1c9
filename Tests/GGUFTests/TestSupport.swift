import Foundation
import Gemma3TestSupport

/// The repository root, located from this source file.
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The real Gemma 3 270M GGUF: $GEMMA3_GGUF, else the `gemma3 download gemma3-270m` cache path.
let realModelPath: String? = {
    let env = ProcessInfo.processInfo.environment
    let candidates: [String?] = [env["GEMMA3_GGUF"],
                      FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/gemma3/gemma-3-270m-q4_k_m.gguf").path]
    return candidates.compactMap { $0 }.first { FileManager.default.fileExists(atPath: $0) }
}()

/// A llama.cpp source tree with a build: $LLAMA_CPP_DIR, else ../peers/llama.cpp beside the
/// repository, else ~/.cache/gemma3/llama.cpp.
let llamaCppDirectory: String? = {
    let env = ProcessInfo.processInfo.environment
    let candidates: [String?] = [env["LLAMA_CPP_DIR"],
                      repositoryRoot.deletingLastPathComponent().appendingPathComponent("peers/llama.cpp").path,
                      FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/gemma3/llama.cpp").path]
    return candidates.compactMap { $0 }.first { FileManager.default.fileExists(atPath: $0) }
}()

/// A llama.cpp tool from `build/bin`, if built.
func llamaTool(_ name: String) -> String? {
    guard let dir = llamaCppDirectory else { return nil }
    let path = dir + "/build/bin/" + name
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}

/// llama.cpp's Python GGUF package (`gguf-py`, an independent reader and dequantizer), if present
/// together with numpy.
let ggufPyDirectory: String? = {
    guard let dir = llamaCppDirectory.map({ $0 + "/gguf-py" }), FileManager.default.fileExists(atPath: dir + "/gguf/quants.py") else { return nil }
    let r = try? run("/usr/bin/env", ["python3", "-c", "import numpy"])
    return r?.status == 0 ? dir : nil
}()

/// Prints why a comparison against an external tool did not run (visible in the test log).
func notice(_ message: String) {
    print("NOTICE: \(message)")
}

/// Runs a program; returns its exit status, stdout and stderr.
@discardableResult
func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: Data? = nil) throws -> (status: Int32, stdout: Data, stderr: Data) {
    try runProcess(executable, arguments, environment: environment, stdin: stdin)
}

/// Runs a Python snippet with gguf-py on the path; returns stdout (throws on failure).
func python(_ code: String, _ arguments: [String] = []) throws -> String {
    let r = try run("/usr/bin/env", ["python3", "-c", code] + arguments, environment: ["PYTHONPATH": ggufPyDirectory ?? ""])
    guard r.status == 0 else {
        throw TestFailure("python3 failed: \(String(decoding: r.stderr, as: UTF8.self).suffix(2000))")
    }
    return String(decoding: r.stdout, as: UTF8.self)
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A fresh temporary directory.
func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Deterministic pseudo-random floats (SplitMix64 → uniform in [-scale, scale]).
func randomFloats(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var s = seed
    return (0..<n).map { _ in
        s &+= 0x9E37_79B9_7F4A_7C15
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return (Float(z >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
}
