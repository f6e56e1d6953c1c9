import ArgumentParser
import Gemma3Kernels

@main
struct Gemma3Command: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemma3",
        abstract: "Gemma 3 (270M architecture) in Swift: prepare data, train, evaluate, generate, benchmark.",
        subcommands: [DownloadCommand.self, PrepareCommand.self, TokenizeCommand.self, DetokenizeCommand.self, BenchCommand.self, TrainCommand.self, PlotCommand.self, GenerateCommand.self, ChatCommand.self, ServeCommand.self, EvalCommand.self, ConvertCommand.self, VerifyReferenceCommand.self]
    )

    /// Configures the libraries from the environment, then runs the verb.
    static func main() {
        RuntimeSettings.configure(CLIEnvironment.runtimeSettings())
        main(nil)
    }
}
