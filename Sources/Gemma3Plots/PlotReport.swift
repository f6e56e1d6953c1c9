import Foundation
import Gemma3Infrastructure
import Gemma3Training

/// A generated story shown in `report.md`.
public struct ReportSample: Sendable {
    public var temperature: Double
    public var prompt: String
    public var text: String
    public init(temperature: Double, prompt: String, text: String) {
        self.temperature = temperature; self.prompt = prompt; self.text = text
    }
}

/// The figures and report of `gemma3 plot RUN_DIR`, built from `metrics.jsonl`.
public struct TrainingReport {
    public let records: [MetricsRecord]
    public let steps: [StepMetrics]
    public let evals: [EvalMetrics]
    public let run: RunInfo?

    /// Loads `RUN_DIR/metrics.jsonl`. Records repeated by a resumed run keep their latest version.
    public init(runDirectory: URL) throws {
        let url = runDirectory.appendingPathComponent("metrics.jsonl")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TrainingError.io("\(url.path): no such file (is \(runDirectory.path) a training run directory?)")
        }
        records = try MetricsRecord.read(url)
        var stepByIndex: [Int: StepMetrics] = [:], evalByIndex: [Int: EvalMetrics] = [:]
        var run: RunInfo?
        for r in records {
            switch r {
            case .step(let s): stepByIndex[s.step] = s
            case .eval(let e): evalByIndex[e.step] = e
            case .run(let i): if run == nil { run = i } else { run?.resumed = true }
            }
        }
        steps = stepByIndex.values.sorted { $0.step < $1.step }
        evals = evalByIndex.values.sorted { $0.step < $1.step }
        self.run = run
        if steps.isEmpty && evals.isEmpty {
            throw TrainingError.io("\(url.path) has no step or eval records yet")
        }
    }

    /// Another run drawn into the loss figure (its evaluations), e.g. the same recipe in another precision.
    public struct Comparison {
        public var label: String
        public var report: TrainingReport
        public init(label: String, report: TrainingReport) { self.label = label; self.report = report }
    }

    /// The three figures of the original project. With `comparisons`, the loss figure also shows each
    /// other run's train and val evaluations, and the curves are labelled with `label` and theirs.
    public func charts(label: String = "", comparisons: [Comparison] = []) -> [(name: String, chart: LineChart)] {
        let suffix = comparisons.isEmpty || label.isEmpty ? "" : ": " + label
        let finiteSteps = steps.filter { !$0.skipped && $0.loss.isFinite }
        var lossSeries: [PlotSeries] = [
            PlotSeries(name: "train (per step)" + suffix, points: finiteSteps.map { (Double($0.step), $0.loss) }, color: .lightBlue, lineWidth: 1.2),
            PlotSeries(name: "train (eval)" + suffix, points: evals.map { (Double($0.step), $0.trainLoss) }, color: .blue, lineWidth: 2, markers: true),
            PlotSeries(name: "val (eval)" + suffix, points: evals.map { (Double($0.step), $0.valLoss) }, color: .orange, lineWidth: 2, markers: true),
        ]
        let palette: [(train: PlotColor, val: PlotColor)] = [(PlotColor(23, 190, 207), .red), (.green, PlotColor(148, 103, 189)),
                                                             (PlotColor(140, 86, 75), PlotColor(227, 119, 194))]
        for (i, other) in comparisons.enumerated() {
            let colors = palette[i % palette.count]
            lossSeries.append(PlotSeries(name: "train (eval): " + other.label, points: other.report.evals.map { (Double($0.step), $0.trainLoss) },
                                         color: colors.train, lineWidth: 2, markers: true))
            lossSeries.append(PlotSeries(name: "val (eval): " + other.label, points: other.report.evals.map { (Double($0.step), $0.valLoss) },
                                         color: colors.val, lineWidth: 2, markers: true))
        }
        if let h = run?.unigramEntropyBits, h.isFinite, let last = (steps.last?.step ?? evals.last?.step) {
            let nats = h * log(2.0)
            lossSeries.append(PlotSeries(name: "unigram entropy", points: [(0, nats), (Double(last), nats)], color: PlotColor(150, 150, 150), lineWidth: 1.5))
        }
        let norms = finiteSteps.map(\.gradNorm).filter { $0 > 0 && $0.isFinite }
        let spread = (norms.max() ?? 1) / Swift.max(norms.min() ?? 1, 1e-30)
        return [
            ("loss", LineChart(title: "Training and validation loss", xLabel: "optimizer step", yLabel: "cross-entropy (nats/token)", series: lossSeries)),
            ("grad_norm", LineChart(title: "Gradient norm (before clipping)", xLabel: "optimizer step", yLabel: "global L2 norm" + (spread > 30 ? " (log scale)" : ""),
                                    series: [PlotSeries(name: "grad norm", points: finiteSteps.map { (Double($0.step), $0.gradNorm) }, color: .green, lineWidth: 1.5)],
                                    logY: spread > 30)),
            ("lr", LineChart(title: "Learning rate", xLabel: "optimizer step", yLabel: "learning rate",
                             series: [PlotSeries(name: "lr", points: steps.map { (Double($0.step), $0.learningRate) }, color: .red, lineWidth: 2)])),
        ]
    }

    /// Writes `loss|grad_norm|lr.{png,svg}` and `report.md` into `directory`; returns the files.
    @discardableResult
    public func write(to directory: URL, samples: [ReportSample] = [], samplesNote: String? = nil,
                      label: String = "", comparisons: [Comparison] = []) throws -> [URL] {
        var written: [URL] = []
        for (name, chart) in charts(label: label, comparisons: comparisons) {
            let png = directory.appendingPathComponent("\(name).png")
            try AtomicFileWriter.write(Data(chart.png()), to: png)
            let svg = directory.appendingPathComponent("\(name).svg")
            try AtomicFileWriter.write(Data(chart.svg().utf8), to: svg)
            written += [png, svg]
        }
        let md = directory.appendingPathComponent("report.md")
        try AtomicFileWriter.write(Data(markdown(samples: samples, samplesNote: samplesNote, label: label, comparisons: comparisons).utf8), to: md)
        written.append(md)
        return written
    }

    /// The text of `report.md`.
    public func markdown(samples: [ReportSample], samplesNote: String?, label: String = "", comparisons: [Comparison] = []) -> String {
        func f(_ v: Double, _ digits: Int = 4) -> String { v.isFinite ? String(format: "%.\(digits)f", v) : "n/a" }
        var o = "# Training report\n\n"
        if let r = run {
            o += "Model: \(r.model), \(r.parameters) parameters; \(r.tokensPerStep) tokens per optimizer step; planned \(r.maxIters) steps.\n\n"
        }
        let done = steps.last?.step ?? 0
        let tokensPerSecond = median(steps.filter { !$0.skipped }.map(\.tokensPerSecond).filter(\.isFinite))
        o += "| quantity | value |\n|---|---|\n"
        o += "| optimizer steps completed | \(done) |\n"
        if let r = run { o += "| tokens seen | \(done * r.tokensPerStep) |\n" }
        o += "| median throughput | \(f(tokensPerSecond, 0)) tokens/s |\n"
        if let e = steps.last?.elapsed { o += "| training wall time (all sessions) | \(f(e / 60, 1)) min |\n" }
        if let last = evals.last {
            o += "| final train loss (step \(last.step)) | \(f(last.trainLoss)) nats/token, perplexity \(f(last.trainPerplexity, 2)), \(f(last.trainBitsPerByte)) bits/byte |\n"
            o += "| final val loss (step \(last.step)) | \(f(last.valLoss)) nats/token, perplexity \(f(last.valPerplexity, 2)), \(f(last.valBitsPerByte)) bits/byte |\n"
        }
        if let best = evals.min(by: { $0.valLoss < $1.valLoss }) {
            o += "| best val loss | \(f(best.valLoss)) at step \(best.step) (perplexity \(f(best.valPerplexity, 2))) |\n"
        }
        if let h = run?.unigramEntropyBits, h.isFinite {
            o += "| unigram entropy of train.bin (baseline) | \(f(h)) bits/token = \(f(h * log(2.0))) nats/token |\n"
        }
        let skipped = steps.filter(\.skipped).count
        if skipped > 0 { o += "| skipped (non-finite) steps | \(skipped) |\n" }
        if !comparisons.isEmpty {
            o += "\n## Compared runs\n\n| run | last eval step | val loss | bits/byte | Δ val loss vs \(label.isEmpty ? "this run" : label) |\n|---|---|---|---|---|\n"
            let own = evals.last
            if let own { o += "| \(label.isEmpty ? "this run" : label) | \(own.step) | \(f(own.valLoss)) | \(f(own.valBitsPerByte)) | 0 |\n" }
            for c in comparisons {
                guard let e = c.report.evals.last else { continue }
                let delta = own.map { f(e.valLoss - $0.valLoss) } ?? "n/a"
                o += "| \(c.label) | \(e.step) | \(f(e.valLoss)) | \(f(e.valBitsPerByte)) | \(delta) |\n"
            }
        }
        o += "\n## Figures\n\n![loss](loss.png)\n\n![gradient norm](grad_norm.png)\n\n![learning rate](lr.png)\n\n"
        o += "(SVG versions: `loss.svg`, `grad_norm.svg`, `lr.svg`.)\n\n"
        if !samples.isEmpty || samplesNote != nil {
            o += "## Samples\n\n"
            if let note = samplesNote { o += note + "\n\n" }
            for s in samples {
                o += "### temperature \(s.temperature)\n\n"
                o += "Prompt: `\(s.prompt)`\n\n"
                o += s.text.split(separator: "\n", omittingEmptySubsequences: false).map { "> " + $0 }.joined(separator: "\n") + "\n\n"
            }
        }
        return o
    }
}
