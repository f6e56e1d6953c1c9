import Foundation

/// Paths and helpers shared by the hub tests.
enum TestPaths {
    /// Repository root (this file is Tests/HubTests/TestSupport.swift).
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// The read-only data beside the repository.
    static let shared = repoRoot.deletingLastPathComponent().appendingPathComponent("shared")
    static let tinyStories = shared.appendingPathComponent("data/tinystories")
    static let gpt2 = shared.appendingPathComponent("data/gpt2")

    /// A fresh temporary directory, removed by the caller.
    static func temporaryDirectory(_ tag: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("gemma3-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// The sorted names in a directory ([] when it does not exist).
func directoryEntries(_ url: URL) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted()
}
