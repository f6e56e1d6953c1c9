import ArgumentParser

/// `gemma3 bench <what>`: the benchmarks, one subcommand each.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks (each prints a summary, or one JSON object with --json).",
        subcommands: [BenchTokenizerCommand.self, BenchGenerateCommand.self, BenchTrainCommand.self, BenchFineTuneCommand.self, BenchGEMVCommand.self, BenchConstrainCommand.self, BenchServeCommand.self]
    )
}
