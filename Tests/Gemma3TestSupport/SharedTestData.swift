import Foundation

/// Paths shared by the test targets: the repository and the read-only data beside it.
public enum TestPaths {
    /// Repository root (this file is Tests/Gemma3TestSupport/SharedTestData.swift).
    public static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// The read-only data beside the repository.
    public static let shared = repoRoot.deletingLastPathComponent().appendingPathComponent("shared")
    public static let tinyStories = shared.appendingPathComponent("data/tinystories")
    public static let gpt2 = shared.appendingPathComponent("data/gpt2")

    /// A fresh temporary directory, removed by the caller.
    public static func temporaryDirectory(_ tag: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("gemma3-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Result of running an external program.
public struct ProcessResult {
    public var status: Int32
    public var output: String
    public init(status: Int32, output: String) {
        self.status = status
        self.output = output
    }
}

/// Runs `python3 -c script args…` and returns its exit status and combined stdout + stderr.
public func runPython(script: String, arguments: [String] = []) throws -> ProcessResult {
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

/// The sorted names in a directory ([] when it does not exist).
public func directoryEntries(_ url: URL) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted()
}
