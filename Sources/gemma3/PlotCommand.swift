import ArgumentParser
import Foundation
import Gemma3Model
import Gemma3Plots
import Gemma3Tokenizers
import Gemma3Training

/// `gemma3 plot RUN_DIR`: figures and a report of a training run.
struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Plot a training run (loss, gradient norm, learning rate as PNG and SVG) and write report.md with sample stories.",
        discussion: """
        Reads RUN_DIR/metrics.jsonl and writes loss.{png,svg}, grad_norm.{png,svg}, lr.{png,svg} and \
        report.md into RUN_DIR (or --out). The samples come from RUN_DIR/best (else latest) at a few \
        temperatures, with fixed seeds.
        """
    )

    @Argument(help: ArgumentHelp("Run directory written by `gemma3 train`.", valueName: "run-dir"))
    var runDirectory: String

    @Option(help: ArgumentHelp("Where to write the figures and report (default: the run directory).", valueName: "dir"))
    var out: String?

    @Option(help: "Prompt of the sample stories.")
    var prompt = "Once upon a time"

    @Option(help: "Sampling temperatures, comma-separated (empty: no samples).")
    var temperatures = "0.5,0.8,1.0"

    @Option(name: .customLong("max-new-tokens"), help: "Length of each sample.")
    var maxNewTokens = 200

    @Option(help: "Seed of the first sample (the next ones use seed+1, …).")
    var seed: UInt64 = 1

    @Option(help: ArgumentHelp("Tokenizer directory (default: the checkpoint's own vocab.json + merges.txt).", valueName: "dir"))
    var tokenizer: String?

    @Option(help: ArgumentHelp("Another run directory whose evaluations the loss figure and report also show (repeatable), e.g. the same recipe with --dtype bf16.", valueName: "run-dir"))
    var compare: [String] = []

    @Flag(help: "Print one JSON object listing the written files and the final figures.")
    var json = false

    func run() throws {
        let runURL = URL(fileURLWithPath: runDirectory, isDirectory: true)
        let outURL = out.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? runURL
        try FileManager.default.createDirectory(at: outURL, withIntermediateDirectories: true)
        let report = try TrainingReport(runDirectory: runURL)
        let comparisons = try compare.map { path in
            let url = URL(fileURLWithPath: path, isDirectory: true)
            return TrainingReport.Comparison(label: url.standardizedFileURL.lastPathComponent, report: try TrainingReport(runDirectory: url))
        }

        var temps: [Double] = []
        for part in temperatures.split(separator: ",") {
            guard let t = Double(part.trimmingCharacters(in: .whitespaces)), t >= 0, t.isFinite else {
                throw ValidationError("--temperatures must be comma-separated numbers ≥ 0, got \"\(temperatures)\"")
            }
            temps.append(t)
        }
        var samples: [ReportSample] = []
        var note: String?
        if !temps.isEmpty {
            try? TrainingCheckpoint.recover(runDirectory: runURL, name: TrainingCheckpoint.best)
            try? TrainingCheckpoint.recover(runDirectory: runURL, name: TrainingCheckpoint.latest)
            let name = TrainingCheckpoint.exists(runDirectory: runURL, name: TrainingCheckpoint.best) ? TrainingCheckpoint.best
                : TrainingCheckpoint.exists(runDirectory: runURL, name: TrainingCheckpoint.latest) ? TrainingCheckpoint.latest : nil
            if let name {
              do {
                let dir = runURL.appendingPathComponent(name)
                let model = try loadModel(dir.path, options: LoadOptions(tokenizerDirectory: tokenizer.map { URL(fileURLWithPath: $0, isDirectory: true) }))
                let generator = try model.makeGenerator(context: 1024)
                let stop = model.stopTokens
                for (k, t) in temps.enumerated() {
                    let options = GenerationOptions(maxNewTokens: maxNewTokens,
                                                    sampling: SamplingOptions(temperature: Float(t), seed: seed + UInt64(k)),
                                                    stopTokenIds: stop)
                    let r = try generator.generate(prompt: prompt, options: options)
                    samples.append(ReportSample(temperature: t, prompt: prompt, text: prompt + r.text))
                }
                note = "From `\(name)/`, \(maxNewTokens) new tokens at most, seeds \(seed)…\(seed + UInt64(temps.count - 1)) "
                    + "(`gemma3 generate --model \(dir.path) --prompt \"\(prompt)\" --temperature T --seed S` reproduces them)."
              } catch {
                // The figures are still worth writing (e.g. a toy vocabulary that cannot encode the prompt).
                FileHandle.standardError.write(Data("warning: no samples: \(error)\n".utf8))
                note = "No samples: \(error)"
                samples = []
              }
            } else {
                note = "No checkpoint in \(runURL.path) yet: no samples."
            }
        }
        let files = try report.write(to: outURL, samples: samples, samplesNote: note,
                                     label: comparisons.isEmpty ? "" : runURL.standardizedFileURL.lastPathComponent, comparisons: comparisons)
        if json {
            let e = report.evals.last
            func n(_ v: Double?) -> Any { v.map { $0.isFinite ? $0 as Any : NSNull() } ?? NSNull() }
            let object: [String: Any] = [
                "files": files.map(\.path), "steps": report.steps.last?.step ?? 0,
                "val_loss": n(e?.valLoss), "val_perplexity": n(e?.valPerplexity), "val_bpb": n(e?.valBitsPerByte),
                "samples": samples.map { ["temperature": $0.temperature, "text": $0.text] },
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        } else {
            for f in files { print(f.path) }
        }
    }
}
