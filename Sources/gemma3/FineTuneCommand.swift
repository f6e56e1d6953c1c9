import ArgumentParser
import Foundation
import Gemma3Kernels
import Gemma3Model
import Gemma3Training

/// `gemma3 finetune`: LoRA or full fine-tuning of any model the library loads, on JSON Lines examples.
struct FineTuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune a model (GGUF, Hugging Face directory or checkpoint) on JSON Lines examples, with LoRA or in full.",
        discussion: """
        Each line of --data is {"messages": [{"role": "system"|"user"|"assistant", "content": …}, …]} \
        (Gemma's chat template), {"prompt": …, "completion": …}, or {"text": …}. The loss covers the \
        assistant turns / the completion (--train-on all: every token). One example per row, padded to \
        --block-size (longer ones are cut). Without --val-data, a tenth of the lines (by a stable hash) \
        is held out; validation loss is measured before the first step and every --eval-interval.

        The training loop, schedule, clipping, checkpoints, exact --resume, SIGINT/SIGTERM handling and \
        metrics.jsonl are `gemma3 train`'s (recipe "finetune" by default). With --method lora, OUT/best \
        and OUT/latest are PEFT adapter directories (load them with --adapter, PeftModel.from_pretrained, \
        or turn them into a model with `gemma3 merge-adapter`); with --method full, Hugging Face model \
        directories. GGUF models are dequantized to float32 for training.
        """
    )

    @Option(help: ArgumentHelp("The model to fine-tune: a GGUF file, a Hugging Face Gemma directory, or a checkpoint.", valueName: "path"))
    var model: String

    @Option(help: ArgumentHelp("Training examples, JSON Lines.", valueName: "file"))
    var data: String

    @Option(name: .customLong("val-data"), help: ArgumentHelp("Validation examples (default: a held-out tenth of --data).", valueName: "file"))
    var valData: String?

    @Option(help: ArgumentHelp("Run directory (best/, latest/, metrics.jsonl).", valueName: "dir"))
    var out: String

    @Option(help: "lora (only adapter factors are trained; the base stays frozen) or full.")
    var method: String = "lora"

    @Option(name: .customLong("lora-rank"), help: "LoRA rank r.") var loraRank: Int = 16
    @Option(name: .customLong("lora-alpha"), help: "LoRA alpha (the update is scaled by alpha / r).") var loraAlpha: Double = 32
    @Option(name: .customLong("lora-dropout"), help: "Dropout on the adapters' inputs while training.") var loraDropout: Double = 0
    @Option(name: .customLong("lora-targets"), help: "Adapted projections, comma-separated: q,k,v,o,gate,up,down.")
    var loraTargets: String = LoRASettings.allTargets.joined(separator: ",")
    @Flag(name: .customLong("rslora"), help: "Rank-stabilised LoRA: scale by alpha / √r.") var rsLoRA = false

    @Option(name: .customLong("train-on"), help: "completions (assistant turns / completion) or all.")
    var trainOn: String = LossScope.completions.rawValue

    @Option(help: ArgumentHelp("Named recipe or recipe JSON file (default: finetune).", valueName: "name|file"))
    var recipe: String?

    @OptionGroup var recipeFlags: RecipeFlags

    @Flag(help: "Continue the run found in --out.") var resume = false
    @Flag(help: "Replace a run already in --out instead of refusing to start.") var force = false
    @Flag(help: "Print one JSON object with the final figures on stdout.") var json = false
    @Flag(help: "No progress line or log lines.") var quiet = false
    @Option(help: "Worker threads (default: the machine's cores).") var threads: Int?
    @Option(help: .hidden) var stopAfterStep: Int?

    func validate() throws {
        guard ["lora", "full"].contains(method) else { throw ValidationError("--method must be lora or full, got \"\(method)\"") }
        guard LossScope(rawValue: trainOn) != nil else { throw ValidationError("--train-on must be completions or all, got \"\(trainOn)\"") }
        if force && resume { throw ValidationError("--force starts afresh and --resume continues: give one of them") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        var settings = RuntimeSettings.current
        if let threads { settings.threads = threads }
        RuntimeSettings.configure(settings)
        let lora: LoRASettings? = method == "lora"
            ? try LoRASettings(rank: loraRank, alpha: loraAlpha, dropout: loraDropout,
                               targets: loraTargets.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }, usesRSLoRA: rsLoRA)
            : nil
        var r: TrainingRecipe
        if let recipe { r = try TrainingRecipe.load(recipe) } else {
            r = .fineTune
            if lora == nil { r.learningRate = 2e-5; r.minLR = 2e-6 }
        }
        recipeFlags.apply(to: &r)
        if r.checkpointInterval == nil { r.checkpointInterval = r.effectiveCheckpointInterval }
        try r.validate()

        let base = try LanguageModel.loadTrainable(model)
        if recipeFlags.blockSize == nil && recipe == nil { r.blockSize = min(r.blockSize, base.config.maxPositionEmbeddings) }
        guard r.blockSize <= base.config.maxPositionEmbeddings else {
            throw ModelCommandError("--block-size \(r.blockSize) exceeds the model's max_position_embeddings \(base.config.maxPositionEmbeddings)")
        }
        let corpus = try FineTuneDataset(data: URL(fileURLWithPath: data), validationData: valData.map { URL(fileURLWithPath: $0) },
                                         tokenizer: base.tokenizer, blockSize: r.blockSize, lossScope: LossScope(rawValue: trainOn)!)
        let printer = quiet ? nil : TrainingProgressPrinter()
        if !quiet {
            writeStderr("fine-tuning \(model) (\(method == "lora" ? "LoRA r=\(loraRank), alpha \(loraAlpha), on \(lora!.targets.joined(separator: ","))" : "all weights")): "
                        + "\(corpus.train.count) training and \(corpus.validation.count) validation examples, "
                        + "\(corpus.trainTokenCount) learned tokens\(corpus.truncated > 0 ? "; \(corpus.truncated) examples cut at \(r.blockSize) tokens" : "")")
        }
        var options = TrainerOptions(fineTuning: corpus, data: URL(fileURLWithPath: data), runDirectory: URL(fileURLWithPath: out, isDirectory: true),
                                     config: base.config, parameters: base.parameters, modelName: model, recipe: r, lora: lora, resume: resume)
        options.replaceExisting = force
        options.stopAfterStep = stopAfterStep
        if let gemma = base.tokenizer as? GemmaTokenizer {
            let maxLength = base.config.maxPositionEmbeddings
            options.tokenizerWriter = { directory in _ = try GemmaConversion.writeTokenizer(gemma, directory: directory, maxLength: maxLength) }
        } else if base.format == .gpt2Checkpoint {
            options.tokenizerDirectory = URL(fileURLWithPath: model, isDirectory: true)
        }
        let stop = StopFlag()
        InterruptHandler.install(stopping: stop)
        let summary = try Trainer(options: options, stopFlag: stop, observer: printer).run()
        if json {
            let extra = "\"method\":\"\(method)\",\"train_examples\":\(corpus.train.count),\"val_examples\":\(corpus.validation.count),"
            FileHandle.standardOutput.write(Data(trainingSummaryJSON(summary, extra: extra).utf8))
        }
        if let sig = summary.interruptedBy, sig != 0 { throw ExitCode(128 + sig) }
    }
}
