import Foundation

/// Helpers shared by the test targets that run the built `gemma3` command-line tool.

/// Why the executable could not be found.
public struct MissingExecutable: Error, CustomStringConvertible {
    public let description: String
}

/// The `gemma3` executable built beside the test bundle (`swift test` builds every product),
/// or `$GEMMA3_BINARY`.
public func gemma3Executable() throws -> URL {
    if let p = ProcessInfo.processInfo.environment["GEMMA3_BINARY"] { return URL(fileURLWithPath: p) }
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    for _ in 0..<5 {
        let candidate = dir.appendingPathComponent("gemma3")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    throw MissingExecutable(description: "cannot find the gemma3 executable next to \(CommandLine.arguments[0]); set GEMMA3_BINARY")
}
