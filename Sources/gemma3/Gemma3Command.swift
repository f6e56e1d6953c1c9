import ArgumentParser
import Foundation
import Gemma3Kernels

@main
struct Gemma3Command: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemma3",
        abstract: "Gemma 3 (270M architecture) in Swift: prepare data, train, evaluate, generate, benchmark.",
        subcommands: [DownloadCommand.self, PrepareCommand.self, TokenizeCommand.self, DetokenizeCommand.self, BenchCommand.self, TrainCommand.self, FineTuneCommand.self, MergeAdapterCommand.self, PlotCommand.self, GenerateCommand.self, ChatCommand.self, ServeCommand.self, EvalCommand.self, ConvertCommand.self, VerifyReferenceCommand.self]
    )

    /// Configures the libraries from the environment, then runs the verb.
    static func main() {
        if let message = TextInput.invalidArgument() {
            writeStderr("Error: \(message)")
            Foundation.exit(64)  // ArgumentParser's status for a bad command line
        }
        RuntimeSettings.configure(CLIEnvironment.runtimeSettings())
        do {
            var command = try parseAsRoot(nil)
            try command.run()
        } catch {
            exit(withError: readableError(error))
        }
    }

    /// Foundation's file errors print as multi-line `NSCocoaErrorDomain` dumps; the user gets the
    /// path and the system's reason on one line instead. Every other error passes unchanged
    /// (ArgumentParser's own, for help and usage, included).
    static func readableError(_ error: any Error) -> any Error {
        let ns = error as NSError
        guard ns.domain == NSCocoaErrorDomain else { return error }
        let path = (ns.userInfo[NSFilePathErrorKey] as? String) ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
        let reason: String
        if let posix = ns.userInfo[NSUnderlyingErrorKey] as? POSIXError {
            reason = String(cString: strerror(posix.code.rawValue))
        } else if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            reason = String(cString: strerror(Int32(underlying.code)))
        } else {
            reason = ns.localizedDescription
        }
        return ValidationFailure(description: path.map { "\($0): \(reason)" } ?? reason)
    }
}

/// An error that is only its one-line message.
struct ValidationFailure: Error, CustomStringConvertible {
    let description: String
}
