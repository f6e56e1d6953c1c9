import ArgumentParser
import Foundation
import Gemma3Distributed
import Gemma3Kernels
import Gemma3Model
import Gemma3Training

/// `gemma3 train`: pre-train a Gemma 3 model on prepared token files.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Pre-train a Gemma 3 model on token files made by `gemma3 prepare`.",
        discussion: """
        Hyper-parameters come from a recipe (--recipe NAME or FILE; named: \(TrainingRecipe.named.keys.sorted().joined(separator: ", ")); \
        default cpu-small); explicit flags override it. Counts are optimizer steps; one step is \
        gradient-accumulation-steps micro-batches of batch-size × block-size tokens.

        RUN_DIR receives metrics.jsonl, best/ (lowest validation loss) and latest/ (Hugging Face model \
        directories; latest/ also holds the optimizer state). SIGINT/SIGTERM finish the current step, save \
        latest/ and exit with status 130/143. The same command with --resume continues the run exactly \
        (bit-identical weights); with --resume, the model and recipe default to the saved ones.

        Under `mpirun -np N` (or `srun`), the N processes train one model data parallel: each step's         gradient-accumulation-steps micro-batches are dealt to the ranks (the count must be a multiple of N),         the gradients are summed with MPI_Allreduce, and rank 0 alone writes RUN_DIR. Open MPI's libmpi is         loaded at run time, so plain runs need no MPI.
        """
    )

    @Option(help: ArgumentHelp("Directory with train.bin, val.bin and meta.json (from `gemma3 prepare`).", valueName: "dir"))
    var data: String

    @Option(help: ArgumentHelp("Model preset: \(Gemma3Config.presetNames.joined(separator: ", ")).", valueName: "name"))
    var preset: String?

    @Option(help: ArgumentHelp("Hugging Face config.json of the model to train.", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("Run directory (checkpoints, metrics).", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("Named recipe or recipe JSON file (default: cpu-small, or the saved one with --resume).", valueName: "name|file"))
    var recipe: String?

    @OptionGroup var recipeFlags: RecipeFlags

    @Flag(help: "Continue the run found in --out (starts from scratch if it has no checkpoint yet).")
    var resume = false

    @Flag(help: "Replace a run already in --out (deletes its best/ and latest/) instead of refusing to start.")
    var force = false

    @Option(help: ArgumentHelp("GPT-2 tokenizer files copied into checkpoints (default: the directory recorded in meta.json).", valueName: "dir"))
    var tokenizer: String?

    @Flag(help: "Print one JSON object with the final figures on stdout.")
    var json = false

    @Flag(help: "No progress line or log lines.")
    var quiet = false

    @Option(help: "Worker threads (default: the machine's cores, divided by the MPI ranks placed on it, less one when the sums overlap).")
    var threads: Int?

    @Flag(inversion: .prefixedNo, help: "Under mpirun: sum each layer's gradients on a communication thread while the backward computes the layers below, or once after the backward (default: overlap where each rank has ≥ 4 cores, leaving one to that thread).")
    var overlapAllReduce: Bool?

    @Option(help: .hidden)  // tests: stop as if interrupted once this step is done (latest/ saved, status 0)
    var stopAfterStep: Int?

    func validate() throws {
        if preset != nil && config != nil { throw ValidationError("give --preset or --config, not both") }
        if let preset, Gemma3Config.preset(named: preset) == nil {
            throw ValidationError("unknown preset \"\(preset)\" (known: \(Gemma3Config.presetNames.joined(separator: ", ")))")
        }
        if force && resume { throw ValidationError("--force starts afresh and --resume continues: give one of them") }
    }

    func run() throws {
        let runDir = URL(fileURLWithPath: out, isDirectory: true)
        let dataDir = URL(fileURLWithPath: data, isDirectory: true)
        // With --resume and a checkpoint, the saved model and recipe are the defaults.
        let saved = resume ? try TrainingCheckpoint.latestSummary(runDirectory: runDir) : nil
        let modelConfig: Gemma3Config
        let modelName: String
        if let preset {
            modelConfig = Gemma3Config.preset(named: preset)!
            modelName = preset
        } else if let config {
            modelConfig = try Gemma3Config.load(from: URL(fileURLWithPath: config))
            modelName = config
        } else if let saved {
            modelConfig = saved.config
            modelName = saved.state.model
        } else {
            throw ValidationError("give the model with --preset NAME or --config FILE")
        }
        var r: TrainingRecipe
        if let recipe { r = try TrainingRecipe.load(recipe) } else { r = saved?.state.recipe ?? .cpuSmall }
        recipeFlags.apply(to: &r)
        // The saved recipe always carries an explicit checkpoint interval; compare like with like.
        if r.checkpointInterval == nil { r.checkpointInterval = r.effectiveCheckpointInterval }
        try r.validate()
        guard r.blockSize <= modelConfig.maxPositionEmbeddings else {
            throw ModelCommandError("--block-size \(r.blockSize) exceeds the model's max_position_embeddings \(modelConfig.maxPositionEmbeddings)")
        }

        var options = TrainerOptions(dataDirectory: dataDir, runDirectory: runDir, config: modelConfig, modelName: modelName,
                                     recipe: r, resume: resume, tokenizerDirectory: tokenizer.map { URL(fileURLWithPath: $0, isDirectory: true) })
        options.replaceExisting = force
        let environment = CLIEnvironment.variables
        let group: MPIGroup? = MPIGroup.isLaunchedByMPI(environment: environment) ? try MPIGroup(overlapAllReduce: CLIEnvironment.overlapsAllReduce(flag: overlapAllReduce)) : nil
        var settings = RuntimeSettings.current
        if let threads {
            guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
            settings.threads = threads
        } else if let group, let perRank = CLIEnvironment.threadsPerLocalRank(overlapping: group.overlapsAllReduce) {
            settings.threads = perRank
        }
        RuntimeSettings.configure(settings)
        options.group = group
        options.stopAfterStep = stopAfterStep
        let stop = StopFlag()
        InterruptHandler.install(stopping: stop)
        let printer = quiet ? nil : TrainingProgressPrinter()
        let summary: TrainingSummary
        do {
            let trainer = try Trainer(options: options, stopFlag: stop, observer: printer)
            summary = try trainer.run()
        } catch {
            // One rank's error must not leave the others waiting in a sum: end the whole job.
            if let group, group.size > 1 {
                FileHandle.standardError.write(Data("error: rank \(group.rank): \(error)\n".utf8))
                group.abortAll(code: 1)
            }
            throw error
        }
        group?.finish()
        if let group, group.rank != 0 { return }  // rank 0 reports
        if json {
            FileHandle.standardOutput.write(Data(trainingSummaryJSON(summary).utf8))
        }
        if let sig = summary.interruptedBy, sig != 0 {
            throw ExitCode(128 + sig)
        }
    }
}
