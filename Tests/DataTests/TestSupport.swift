import Foundation
import Testing

/// Paths and helpers shared by the data tests.
enum TestPaths {
    /// Repository root (this file is Tests/DataTests/TestSupport.swift).
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// The read-only data beside the repository.
    static let shared = repoRoot.deletingLastPathComponent().appendingPathComponent("shared")
    static let tinyStories = shared.appendingPathComponent("data/tinystories")
    static let gpt2 = shared.appendingPathComponent("data/gpt2")

    /// A fresh temporary directory, removed by the caller with `cleanup`.
    static func temporaryDirectory(_ tag: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("gemma3-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Result of running an external program.
struct ProcessResult {
    var status: Int32
    var output: String
}

/// Runs `python3 -c script args…` (or a script file) and returns its exit status and combined output.
func runPython(script: String, arguments: [String]) throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", script] + arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return ProcessResult(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// Lists the entries of a directory (empty when it does not exist).
func directoryEntries(_ url: URL) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted()
}
