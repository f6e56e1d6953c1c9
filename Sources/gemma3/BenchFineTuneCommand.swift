import ArgumentParser
import Dispatch
import Foundation
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Model
import Gemma3Training

#if canImport(Glibc)
import Glibc
#endif

/// `gemma3 bench finetune`: fine-tuning step throughput (LoRA or full) of a model's architecture,
/// beside PyTorch + PEFT in the same run.
struct BenchFineTuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Measure fine-tuning steps (LoRA or full) on a model's architecture: tokens/s and peak memory, beside PyTorch + PEFT.",
        discussion: """
        Reads only the config of --model (its weights do not change the speed: the store is initialised \
        at random), then runs --warmup untimed and --steps timed optimizer steps of --batch × --seq random \
        tokens (LoRA: rank --lora-rank on q,k,v,o,gate,up,down, the base frozen; full: every weight). \
        With --pytorch PYTHON, the same model (HF Gemma3ForCausalLM, PEFT's LoRA for --method lora), \
        eager in float32 and under bf16 autocast, with the same threads, in child processes of the same \
        run (scripts/reference/torch_train_bench.py). Peak memory is each process's getrusage maximum.
        """
    )

    @Option(help: ArgumentHelp("The model whose architecture is timed (GGUF, Hugging Face directory, checkpoint).", valueName: "path"))
    var model: String
    @Option(help: "lora or full.") var method: String = "lora"
    @Option(name: .customLong("lora-rank"), help: "LoRA rank (alpha = 2 × rank).") var loraRank: Int = 16
    @Option(help: "Sequences per step.") var batch = 4
    @Option(help: "Tokens per sequence.") var seq = 256
    @Option(help: "Timed steps.") var steps = 3
    @Option(help: "Untimed warm-up steps.") var warmup = 1
    @Option(help: ArgumentHelp("Our precision: f32 or bf16 (autocast-style mixed precision).", valueName: "f32|bf16")) var dtype: TrainingDType = .f32
    @Option(help: ArgumentHelp("Also run PyTorch (+ PEFT) with this python, in the same run.", valueName: "python")) var pytorch: String?
    @Option(help: ArgumentHelp("The reference script run by --pytorch.", valueName: "file")) var pytorchScript = "scripts/reference/torch_train_bench.py"
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        guard ["lora", "full"].contains(method) else { throw ValidationError("--method must be lora or full") }
        if batch < 1 || seq < 2 || steps < 1 || warmup < 0 { throw ValidationError("--batch ≥ 1, --seq ≥ 2, --steps ≥ 1 and --warmup ≥ 0") }
    }

    func run() throws {
        let config = try LanguageModel.loadTrainableConfig(model)
        let store = ParameterStore(config: config)
        store.initializeForTraining(config: config, seed: 1234)
        let lora = method == "lora" ? LoRAWeights(config: config, settings: try LoRASettings(rank: loraRank, alpha: Double(2 * loraRank))) : nil
        lora?.initialize(seed: 1)
        let training = try Gemma3TrainingModel(config: config, batchSize: batch, sequenceLength: seq, parameters: store, training: true,
                                                productPrecision: dtype.productPrecision, lora: lora)
        let optimizer = lora.map { OptimizerState(count: $0.count, hyper: AdamWHyperparameters()) }
            ?? OptimizerState(layout: store.layout, hyper: AdamWHyperparameters())
        var rng = SplitMix64(seed: 99)
        let n = batch * seq
        let inputs = UnsafeMutableBufferPointer<Int32>.allocate(capacity: n), targets = UnsafeMutableBufferPointer<Int32>.allocate(capacity: n)
        defer { inputs.deallocate(); targets.deallocate() }
        var times: [Double] = []
        for step in 0..<(warmup + steps) {
            for i in 0..<n { inputs[i] = Int32(rng.next() % UInt64(config.vocabSize)); targets[i] = Int32(rng.next() % UInt64(config.vocabSize)) }
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try trainingStep(model: training, optimizer: optimizer, learningRate: 1e-4, gradClip: 1.0, accumulation: 1,
                                 inputs: inputs, targets: targets) { _ in }
            if step >= warmup { times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9) }
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let peak = Double(usage.ru_maxrss) * 1024
        let ours = Double(n) / median(times)
        var references: [String: [String: Double]] = [:]
        var errors: [String: String] = [:]
        if let pytorch {
            for (name, extra) in [("eager", [String]()), ("eager_autocast_bf16", ["--autocast-bf16"])] {
                let arguments = ["--hidden", "\(config.hiddenSize)", "--layers", "\(config.numHiddenLayers)",
                                 "--heads", "\(config.numAttentionHeads)", "--kv-heads", "\(config.numKeyValueHeads)",
                                 "--head-dim", "\(config.headDim)", "--ffn", "\(config.intermediateSize)", "--vocab", "\(config.vocabSize)",
                                 "--window", "\(config.slidingWindow)", "--batch", "\(batch)", "--seq", "\(seq)", "--steps", "\(steps)",
                                 "--warmup", "\(max(1, warmup))", "--threads", "\(Parallel.threadCount)"]
                    + (lora != nil ? ["--lora", "\(loraRank)"] : []) + extra
                switch runReferenceScript(python: pytorch, script: pytorchScript, optionName: "--pytorch-script", arguments) {
                case .success(let o):
                    var values: [String: Double] = [:]
                    for (k, v) in o { if let d = v as? Double { values[k] = d } else if let i = v as? Int { values[k] = Double(i) } }
                    references[name] = values
                case .failure(let e): errors[name] = e.message
                }
            }
        }
        let cpu = BuildInfo.hostCPU
        if json {
            var object: [String: Any] = ["model": model, "method": method, "dtype": dtype.rawValue, "batch": batch, "seq": seq,
                                         "threads": Parallel.threadCount, "cpu": cpu, "trainable_parameters": training.trainableParameters.count,
                                         "tokens_per_second": ours, "step_seconds": times, "peak_memory_bytes": peak]
            if lora != nil { object["lora_rank"] = loraRank }
            if !references.isEmpty { object["pytorch"] = references }
            if !errors.isEmpty { object["pytorch_errors"] = errors }
            print(try jsonLine(object))
        } else {
            print("\(method) fine-tuning of \(model) on \(cpu), \(Parallel.threadCount) threads, \(batch) × \(seq) tokens, \(dtype.rawValue):")
            print(String(format: "  ours: %.1f tokens/s (median of %d steps), peak %.2f GiB, %d trainable parameters", ours, steps, peak / 1073741824, training.trainableParameters.count))
            for (name, r) in references.sorted(by: { $0.key < $1.key }) {
                let tps = r["tokens_per_second"] ?? .nan
                print(String(format: "  PyTorch%@ %@: %.1f tokens/s, peak %.2f GiB → ours %.2f×", lora != nil ? " + PEFT" : "", name, tps,
                             (r["peak_rss_bytes"] ?? 0) / 1073741824, ours / tps))
            }
            for (name, e) in errors { print("  PyTorch \(name): not measured (\(e))") }
        }
    }
}
