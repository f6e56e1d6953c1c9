import ArgumentParser
import Dispatch
import Foundation
import Gemma3Distributed
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Model
import Gemma3Training

#if canImport(Glibc)
import Glibc
#endif

/// `gemma3 bench train`: training-step throughput of the Swift model on random weights and tokens.
struct BenchTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Measure training steps (forward + backward + clipping + AdamW): tokens/s, GFLOP/s, memory, time per layer type.",
        discussion: """
        Builds the preset with HF initialisation (seed 1234), draws random token windows, and runs \
        --warmup untimed steps then --steps timed ones. Reports the median step time as tokens/s, \
        achieved GFLOP/s (matmul FLOPs 6 · matmul-parameters · tokens, plus the attention score and \
        value products as computed), peak resident memory (getrusage), and the share of time spent \
        in attention, MLP, norms, LM head + cross-entropy, embedding and optimizer.
        With --pytorch PYTHON, the same model (HF Gemma3ForCausalLM, float32, same thread count, \
        AdamW, clipping) is then trained by PyTorch eager and torch.compile, each in float32 and \
        under bf16 autocast, in the same run (scripts/reference/torch_train_bench.py; needs torch \
        and transformers) and the ratios printed.
        """
    )

    @Option(help: "Model preset (\(Gemma3Config.presetNames.joined(separator: ", "))).")
    var preset = "tinystories-270m"

    @Option(help: "Sequences per step.")
    var batch = 4

    @Option(help: "Tokens per sequence.")
    var seq = 128

    @Option(help: "Timed steps.")
    var steps = 5

    @Option(help: "Untimed warm-up steps.")
    var warmup = 1

    @Option(help: ArgumentHelp("Training precision: f32, or bf16 (products on bfloat16 inputs, float32 accumulation, as PyTorch's CPU autocast).", valueName: "f32|bf16"))
    var dtype: TrainingDType = .f32

    @Flag(help: "Also time every matrix product by shape (GFLOP/s of each against the sgemm reference).")
    var gemms = false

    @Flag(inversion: .prefixedNo, help: "Under mpirun: overlap the gradient sums with the backward or not (default: as `train` chooses).")
    var overlapAllReduce: Bool?

    @Option(help: ArgumentHelp("Also train the same model with PyTorch (eager and torch.compile, float32 and bf16 autocast) using this python, in the same run.", valueName: "python"))
    var pytorch: String?

    @Option(help: ArgumentHelp("The reference script run by --pytorch.", valueName: "file"))
    var pytorchScript = "scripts/reference/torch_train_bench.py"

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard Gemma3Config.preset(named: preset) != nil else {
            throw ValidationError("unknown preset \(preset); choose one of \(Gemma3Config.presetNames.joined(separator: ", "))")
        }
        if batch < 1 || seq < 2 { throw ValidationError("--batch must be ≥ 1 and --seq ≥ 2") }
        if steps < 1 || warmup < 0 { throw ValidationError("--steps must be ≥ 1 and --warmup ≥ 0") }
    }

    func run() throws {
        let config = Gemma3Config.preset(named: preset)!
        // Under mpirun: data parallel, one micro-batch of --batch × --seq per rank and step.
        let group: MPIGroup? = MPIGroup.isLaunchedByMPI(environment: CLIEnvironment.variables) ? try MPIGroup(overlapAllReduce: CLIEnvironment.overlapsAllReduce(flag: overlapAllReduce)) : nil
        defer { group?.finish() }
        let ranks = group?.size ?? 1
        if let group, let perRank = CLIEnvironment.threadsPerLocalRank(overlapping: group.overlapsAllReduce) {
            var settings = RuntimeSettings.current
            settings.threads = perRank
            RuntimeSettings.configure(settings)
        }
        let model = try Gemma3TrainingModel(config: config, batchSize: batch, sequenceLength: seq, productPrecision: dtype.productPrecision)
        if dtype == .bf16 { writeStderr(ProductPrecision.bfloat16ExecutionNote) }
        model.parameters.initializeForTraining(config: config, seed: 1234)
        // The optimizer step `gemma3 train` runs (one micro-batch per step), so this times exactly that.
        let optimizer = OptimizerState(layout: model.parameters.layout, hyper: AdamWHyperparameters())

        let sgemmReference = Self.sgemmReferenceGFLOPs(hidden: config.hiddenSize, ffn: config.intermediateSize, rows: batch * seq)
        let cpuStart = Self.processCPUSeconds()
        var rng = SplitMix64(seed: 99)
        let tokensPerStep = batch * seq
        let inputs = UnsafeMutableBufferPointer<Int32>.allocate(capacity: tokensPerStep)
        let targets = UnsafeMutableBufferPointer<Int32>.allocate(capacity: tokensPerStep)
        defer { inputs.deallocate(); targets.deallocate() }
        var stepTimes: [Double] = []
        var optimizerSeconds = 0.0
        var allReduceSeconds = 0.0, allReduceBusySeconds = 0.0
        var losses: [Float] = []
        for step in 0..<(warmup + steps) {
            // Random windows of seq + 1 tokens, drawn before the clock starts.
            let window = (0..<(tokensPerStep + batch)).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
            for b in 0..<batch {
                for t in 0..<seq {
                    inputs[b * seq + t] = window[b * (seq + 1) + t]
                    targets[b * seq + t] = window[b * (seq + 1) + t + 1]
                }
            }
            let timed = step >= warmup
            if step == warmup { model.resetProfile(); if gemms { model.gemmProfile = [:] } }
            model.profiling = timed
            let start = DispatchTime.now().uptimeNanoseconds
            let outcome = try trainingStep(model: model, optimizer: optimizer, learningRate: 1e-4, gradClip: 1.0, accumulation: ranks,
                                           inputs: inputs, targets: targets, group: group) { _ in }
            let end = DispatchTime.now().uptimeNanoseconds
            if timed {
                stepTimes.append(Double(end - start) * 1e-9)
                optimizerSeconds += outcome.optimizerSeconds
                allReduceSeconds += outcome.allReduceSeconds
                allReduceBusySeconds += outcome.allReduceBusySeconds
                losses.append(Float(outcome.loss))
            }
        }

        let flopsPerStep = model.flopsPerStep

        let cpuSeconds = Self.processCPUSeconds() - cpuStart
        let medianStep = median(stepTimes)
        let total = stepTimes.reduce(0, +)
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let peakBytes = Int(usage.ru_maxrss) * 1024
        var shares: [String: Double] = [:]
        for phase in StepPhase.allCases { shares[phase.name] = model.phaseSeconds[phase.rawValue] / total }
        shares["optimizer"] = optimizerSeconds / total
        if group != nil { shares["all_reduce"] = allReduceSeconds / total }
        shares["other"] = max(0, 1 - shares.values.reduce(0, +))

        struct Output: Encodable {
            let preset: String
            let batch: Int
            let seq: Int
            let steps: Int
            let threads: Int
            let ranks: Int
            let all_reduce_overlapped: Bool?
            /// Seconds per step the all-reduce ran (overlapped or not); its exposed part is time_share.all_reduce.
            let all_reduce_busy_seconds: Double?
            let dtype: String
            let build: String
            let host_cpu: String
            let products: String
            let parameters: Int
            let tokens_per_second: Double
            let median_step_seconds: Double
            let gflop_per_step: Double
            let gflops: Double
            let sgemm_reference_gflops: Double
            let fraction_of_sgemm: Double
            let cpu_cores_used: Double
            let peak_memory_bytes: Int
            let time_share: [String: Double]
            let losses: [Float]
            let pytorch: [String: [String: Double]]?
            let gemms: [String: [String: Double]]?
        }
        // PyTorch after our steps, so neither measurement overlaps the other.
        var references: [String: [String: Double]]? = nil
        if let group, group.rank != 0 { return }  // rank 0 reports
        if let pytorch, ranks == 1 {
            references = [:]
            for reference in PyTorchConfiguration.allCases {
                let r = runPyTorch(python: pytorch, config: config, reference: reference)
                references![reference.rawValue] = r.values
                if let error = r.error { writeStderr("bench train: PyTorch \(reference.rawValue) not measured: \(error)") }
            }
        }
        let output = Output(preset: preset, batch: batch, seq: seq, steps: steps, threads: Parallel.threadCount, ranks: ranks,
                            all_reduce_overlapped: group.map(\.overlapsAllReduce),
                            all_reduce_busy_seconds: group.map { _ in allReduceBusySeconds / Double(steps) }, dtype: dtype.rawValue, build: BuildInfo.description,
                            host_cpu: BuildInfo.hostCPU, products: RuntimeSettings.current.resolvedProductBackend.kernelDescription,
                            parameters: config.parameterCount, tokens_per_second: Double(tokensPerStep * ranks) / medianStep,
                            median_step_seconds: medianStep, gflop_per_step: flopsPerStep / 1e9, gflops: flopsPerStep / medianStep / 1e9,
                            sgemm_reference_gflops: sgemmReference, fraction_of_sgemm: flopsPerStep / medianStep / 1e9 / sgemmReference,
                            cpu_cores_used: cpuSeconds / (stepTimes.reduce(0, +) + Double(warmup) * medianStep),
                            peak_memory_bytes: peakBytes, time_share: shares, losses: losses,
                            pytorch: references,
                            gemms: model.gemmProfile.map { $0.mapValues { ["seconds_per_step": $0.seconds / Double(steps), "gflops": $0.flops / $0.seconds / 1e9] } })
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(output), as: UTF8.self))
        } else {
            print("bench train: \(preset) (\(config.parameterCount) parameters), batch \(batch) × \(seq), \(steps) steps, \(dtype) products, \(ranks > 1 ? "\(ranks) MPI ranks × " : "")\(Parallel.threadCount) threads, \(BuildInfo.description)")
            print("  CPU: \(BuildInfo.hostCPU); products: \(RuntimeSettings.current.resolvedProductBackend.kernelDescription)")
            print(String(format: "  %.1f tokens/s  (median step %.3f s, %.1f GFLOP/step, %.1f GFLOP/s)",
                         output.tokens_per_second, medianStep, output.gflop_per_step, output.gflops))
            print(String(format: "  sgemm on this machine now: %.1f GFLOP/s ([%d×%d]·[%d×%d]ᵀ) → step at %.0f%% of it; %.2f cores busy on average",
                         sgemmReference, batch * seq, config.hiddenSize, config.intermediateSize, config.hiddenSize,
                         output.fraction_of_sgemm * 100, output.cpu_cores_used))
            print(String(format: "  peak memory %.2f GiB", Double(peakBytes) / Double(1 << 30)))
            if let group {
                print(String(format: "  all-reduce: %.3f s per step busy, %.3f s exposed (%.1f%% of the step), %@", allReduceBusySeconds / Double(steps),
                             allReduceSeconds / Double(steps), 100 * allReduceSeconds / total,
                             group.overlapsAllReduce ? "overlapped with the backward" : "after the backward"))
            }
            print("  time share: " + shares.sorted { $0.value > $1.value }
                .map { $0.key + " " + String(format: "%.1f%%", $0.value * 100) }.joined(separator: ", "))
            print("  per phase (wall s / CPU s per step): " + StepPhase.allCases.map {
                $0.name + String(format: " %.2f/%.2f", model.phaseSeconds[$0.rawValue] / Double(steps), model.phaseCPUSeconds[$0.rawValue] / Double(steps))
            }.joined(separator: ", ") + String(format: ", optimizer %.2f", optimizerSeconds / Double(steps)))
            for name in PyTorchConfiguration.allCases.map(\.rawValue) {
                guard let r = references?[name], let tps = r["tokens_per_second"] else { continue }
                print(String(format: "  PyTorch %@ (same run): %.1f tokens/s, peak %.2f GiB → ours %.2fx", name, tps,
                             (r["peak_rss_bytes"] ?? 0) / Double(1 << 30), output.tokens_per_second / tps))
            }
            if let profile = model.gemmProfile {
                let total = profile.values.reduce(0) { $0 + $1.seconds } / Double(steps)
                print(String(format: "  matrix products: %.3f s per step of %.3f (%.0f%%); by shape:", total, medianStep, 100 * total / medianStep))
                for (shape, t) in profile.sorted(by: { $0.value.seconds > $1.value.seconds }) {
                    print(String(format: "    %7.3f s  %6.1f GFLOP/s  %3.0f%% of sgemm  ", t.seconds / Double(steps), t.flops / t.seconds / 1e9,
                                 100 * t.flops / t.seconds / 1e9 / sgemmReference) + shape)
                }
            }
        }
    }

    /// Runs the PyTorch reference for `config`; its numeric fields, or an error.
    /// The PyTorch runs of `--pytorch`: float32 and bf16 autocast (the original project's `dtype: bfloat16`),
    /// each eager and with `torch.compile`.
    enum PyTorchConfiguration: String, CaseIterable {
        case eager, compile
        case eagerAutocastBF16 = "eager_autocast_bf16"
        case compileAutocastBF16 = "compile_autocast_bf16"
        var arguments: [String] {
            switch self {
            case .eager: return []
            case .compile: return ["--compile"]
            case .eagerAutocastBF16: return ["--autocast-bf16"]
            case .compileAutocastBF16: return ["--compile", "--autocast-bf16"]
            }
        }
    }

    func runPyTorch(python: String, config: Gemma3Config, reference: PyTorchConfiguration) -> (values: [String: Double], error: String?) {
        let arguments = ["--hidden", "\(config.hiddenSize)", "--layers", "\(config.numHiddenLayers)",
                         "--heads", "\(config.numAttentionHeads)", "--kv-heads", "\(config.numKeyValueHeads)",
                         "--head-dim", "\(config.headDim)", "--ffn", "\(config.intermediateSize)", "--vocab", "\(config.vocabSize)",
                         "--window", "\(config.slidingWindow)", "--batch", "\(batch)", "--seq", "\(seq)", "--steps", "\(max(3, steps))",
                         "--threads", "\(Parallel.threadCount)"] + reference.arguments
        let object: [String: Any]
        switch runReferenceScript(python: python, script: pytorchScript, optionName: "--pytorch-script", arguments) {
        case .success(let o): object = o
        case .failure(let error): return ([:], error.message)
        }
        var values: [String: Double] = [:]
        for (k, v) in object { if let d = v as? Double { values[k] = d } else if let i = v as? Int { values[k] = Double(i) } }
        return (values, nil)
    }

    /// User + system CPU seconds of this process so far.
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6
    }

    /// GFLOP/s of a model-shaped product [rows × hidden]·[ffn × hidden]ᵀ through the same split sgemm the
    /// model uses, measured now (the machine is shared: this is the yardstick for the step's GFLOP/s).
    static func sgemmReferenceGFLOPs(hidden: Int, ffn: Int, rows: Int) -> Double {
        BLAS.setThreads(1)
        var rng = SplitMix64(seed: 5)
        var a = [Float](repeating: 0, count: rows * hidden), b = [Float](repeating: 0, count: ffn * hidden)
        var c = [Float](repeating: 0, count: rows * ffn)
        a.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
        b.withUnsafeMutableBufferPointer { rng.fillNormal($0, std: 1) }
        var best = Double.infinity
        let flops = 2.0 * Double(rows * hidden * ffn)
        var elapsed = 0.0
        var runs = 0
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    while runs < 3 || (elapsed < 1.0 && runs < 200) {
                        let start = DispatchTime.now().uptimeNanoseconds
                        ParallelGEMM.sgemm(transB: true, m: rows, n: ffn, k: hidden, a: ap.baseAddress!, b: bp.baseAddress!, c: cp.baseAddress!)
                        let t = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
                        best = min(best, t)
                        elapsed += t
                        runs += 1
                    }
                }
            }
        }
        return flops / best / 1e9
    }
}

extension TrainingDType: ExpressibleByArgument {}
