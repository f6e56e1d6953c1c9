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

/// Runs `executable` with `arguments` (and `environment` merged over this process's), writing `stdin`
/// to it; returns its exit status, stdout and stderr. Both pipes are read concurrently so neither fills up.
@discardableResult
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                       stdin: Data? = nil) throws -> (status: Int32, stdout: Data, stderr: Data) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe(), err = Pipe(), input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = input
    try p.run()
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try input.fileHandleForWriting.close()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return (p.terminationStatus, outData, errData)
}
