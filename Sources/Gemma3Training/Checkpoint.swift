import Foundation
import Gemma3Formats
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Model

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Everything besides weights and moments that a resumed run needs to continue bit-exactly.
/// Saved as `latest/trainer_state.json`.
public struct TrainerState: Codable, Sendable, Equatable {
    /// Format tag.
    public var format = "gemma3-trainer-state-v1"
    /// Optimizer steps completed (the next step to run has this 0-based index).
    public var step: Int
    /// AdamW updates applied (steps skipped for non-finite values do not count): torch's `state["step"]`.
    public var adamStep: Int
    /// The batch sampler's SplitMix64 state: the "data position" of random-window sampling.
    public var samplerState: UInt64
    /// Lowest validation loss so far (nil before the first evaluation after step 0).
    public var bestValLoss: Double?
    /// Non-finite steps in a row at the time of saving.
    public var consecutiveNonFinite: Int
    /// True when the evaluation due at `step` was interrupted and must run first on resume.
    public var pendingEval: Bool
    /// Seconds of training wall time before this checkpoint (across resumes).
    public var elapsedSeconds: Double
    /// The recipe in force; `--resume` refuses a different one (it would not be the same run).
    public var recipe: TrainingRecipe
    /// Token count of the train split the run was started on (a cheap guard against resuming on other data).
    public var trainTokens: Int
    /// The model, e.g. a preset name or a config path.
    public var model: String
    /// Processes that trained the last stretch (data parallel; 1 alone). Informational: a run resumes
    /// with any number, since the data position and the global batch do not depend on it.
    public var worldSize = 1
    /// A LoRA fine-tune's adapter shape (nil when every weight is trained).
    public var lora: LoRASettings?

    enum CodingKeys: String, CodingKey {
        case format, step, recipe, model, lora
        case worldSize = "world_size"
        case adamStep = "adam_step"
        case samplerState = "sampler_state"
        case bestValLoss = "best_val_loss"
        case consecutiveNonFinite = "consecutive_non_finite"
        case pendingEval = "pending_eval"
        case elapsedSeconds = "elapsed_s"
        case trainTokens = "train_tokens"
    }

    public init(step: Int, adamStep: Int, samplerState: UInt64, bestValLoss: Double?, consecutiveNonFinite: Int,
                pendingEval: Bool, elapsedSeconds: Double, recipe: TrainingRecipe, trainTokens: Int, model: String) {
        self.step = step; self.adamStep = adamStep; self.samplerState = samplerState; self.bestValLoss = bestValLoss
        self.consecutiveNonFinite = consecutiveNonFinite; self.pendingEval = pendingEval
        self.elapsedSeconds = elapsedSeconds; self.recipe = recipe; self.trainTokens = trainTokens; self.model = model
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        format = try c.decode(String.self, forKey: .format)
        guard format == "gemma3-trainer-state-v1" else { throw TrainingError.checkpoint("unknown trainer_state format \"\(format)\"") }
        step = try c.decode(Int.self, forKey: .step)
        adamStep = try c.decode(Int.self, forKey: .adamStep)
        // A 64-bit word does not survive every JSON reader as a number: stored as 16 hex digits.
        let hex = try c.decode(String.self, forKey: .samplerState)
        guard let s = UInt64(hex, radix: 16) else { throw TrainingError.checkpoint("bad sampler_state \"\(hex)\"") }
        samplerState = s
        bestValLoss = try c.decodeIfPresent(Double.self, forKey: .bestValLoss)
        consecutiveNonFinite = try c.decode(Int.self, forKey: .consecutiveNonFinite)
        pendingEval = try c.decode(Bool.self, forKey: .pendingEval)
        elapsedSeconds = try c.decode(Double.self, forKey: .elapsedSeconds)
        recipe = try c.decode(TrainingRecipe.self, forKey: .recipe)
        trainTokens = try c.decode(Int.self, forKey: .trainTokens)
        model = try c.decode(String.self, forKey: .model)
        worldSize = try c.decodeIfPresent(Int.self, forKey: .worldSize) ?? 1
        lora = try c.decodeIfPresent(LoRASettings.self, forKey: .lora)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(format, forKey: .format)
        try c.encode(step, forKey: .step)
        try c.encode(adamStep, forKey: .adamStep)
        try c.encode(String(samplerState, radix: 16), forKey: .samplerState)
        try c.encode(bestValLoss, forKey: .bestValLoss)
        try c.encode(consecutiveNonFinite, forKey: .consecutiveNonFinite)
        try c.encode(pendingEval, forKey: .pendingEval)
        try c.encode(elapsedSeconds, forKey: .elapsedSeconds)
        try c.encode(recipe, forKey: .recipe)
        try c.encode(trainTokens, forKey: .trainTokens)
        try c.encode(model, forKey: .model)
        try c.encode(worldSize, forKey: .worldSize)
        try c.encodeIfPresent(lora, forKey: .lora)
    }
}

/// `best/` and `latest/` checkpoint directories of a run.
///
/// Each is a Hugging Face model directory (`config.json`, `model.safetensors`, GPT-2 tokenizer files
/// `vocab.json` + `merges.txt` + `tokenizer_config.json`), loadable by `from_pretrained`. `latest/`
/// adds `optimizer.safetensors` (AdamW moments `m.<name>`, `v.<name>`) and `trainer_state.json`.
///
/// Writes are atomic at the directory level: everything goes to a hidden temporary directory
/// (each file fsynced, then the directory), the old checkpoint is renamed to `<name>.old`, the new
/// one renamed into place, and `<name>.old` deleted. A kill at any instant leaves either the old or
/// the new checkpoint; `recover` (run before every load and save) finishes or undoes the swap.
public enum TrainingCheckpoint {
    public static let latest = "latest"
    public static let best = "best"
    /// The llama.cpp LoRA GGUF beside the PEFT files of a LoRA run's `best/`.
    public static let adapterGGUFName = "adapter_model.gguf"

    /// Optimizer moments to save with `latest/`.
    public struct Moments {
        public let m: ParameterStore
        public let v: ParameterStore
        public init(m: ParameterStore, v: ParameterStore) { self.m = m; self.v = v }
    }

    /// Repairs the state a kill may have left: `<name>.old` without `<name>` is renamed back;
    /// `<name>.old` beside a complete `<name>` is deleted; stale temporary directories are removed.
    public static func recover(runDirectory: URL, name: String) throws {
        let fm = FileManager.default
        let final = runDirectory.appendingPathComponent(name)
        let old = runDirectory.appendingPathComponent(name + ".old")
        if fm.fileExists(atPath: old.path) {
            if fm.fileExists(atPath: final.path) {
                try fm.removeItem(at: old)
            } else if rename(old.path, final.path) != 0 {
                throw TrainingError.checkpoint("cannot restore \(old.path): \(String(cString: strerror(errno)))")
            }
            syncDirectory(runDirectory)
        }
        let prefix = ".\(name).tmp-"
        for entry in (try? fm.contentsOfDirectory(atPath: runDirectory.path)) ?? [] where entry.hasPrefix(prefix) {
            try? fm.removeItem(at: runDirectory.appendingPathComponent(entry))
        }
    }

    /// Whether a complete checkpoint `name` exists (after recovery).
    public static func exists(runDirectory: URL, name: String) -> Bool {
        let dir = runDirectory.appendingPathComponent(name)
        return ["model.safetensors", "adapter_model.safetensors"].contains {
            FileManager.default.fileExists(atPath: dir.appendingPathComponent($0).path)
        }
    }

    /// Writes checkpoint `name` atomically. Refuses (throws) if any weight or moment is not finite.
    ///
    /// - Parameters:
    ///   - weightsDType: storage type of `model.safetensors` (F32 for `latest/`, which must be exact).
    ///   - tokenizerDirectory: GPT-2 files to copy (`vocab.json`/`merges.txt`, or OpenAI's
    ///     `encoder.json`/`vocab.bpe` under the HF names); nil skips the tokenizer.
    public static func write(
        runDirectory: URL, name: String, config: Gemma3Config, parameters: ParameterStore,
        weightsDType: SafeTensorsDType = .f32, moments: Moments? = nil, state: TrainerState? = nil,
        tokenizerDirectory: URL? = nil, tokenizerWriter: ((URL) throws -> Void)? = nil
    ) throws {
        guard allFinite(parameters) else { throw TrainingError.nonFinite("refusing to write \(name)/: the weights contain NaN or infinity") }
        try writeDirectory(runDirectory: runDirectory, name: name, moments: moments) { temp in
            try HFCheckpoint.save(config: config, parameters: parameters, directory: temp, dtype: weightsDType)
            if let tokenizerDirectory { try copyTokenizer(from: tokenizerDirectory, to: temp) }
            try tokenizerWriter?(temp)
            if let moments { try writeMoments(moments, tensors: moments.m.layout.tensors, to: temp) }
            if let state { try writeState(state, to: temp) }
        }
    }

    /// Writes checkpoint `name` of a LoRA run atomically: the PEFT adapter directory (plus the base
    /// model's `config.json`), and for `latest/` the moments (`m`, `v` over the factor block) and state.
    public static func writeAdapter(
        runDirectory: URL, name: String, config: Gemma3Config, lora: LoRAWeights, baseModel: String,
        moments: Moments? = nil, state: TrainerState? = nil
    ) throws {
        guard allFinite(lora.parameters) else { throw TrainingError.nonFinite("refusing to write \(name)/: the adapter contains NaN or infinity") }
        try writeDirectory(runDirectory: runDirectory, name: name, moments: moments) { temp in
            try lora.writePEFT(to: temp, baseModel: baseModel)
            try AtomicFileWriter.write(try config.jsonData(), to: temp.appendingPathComponent("config.json"))
            // best/ also as llama.cpp's adapter (`--lora`); latest/ only needs what a resume reads.
            if state == nil { try lora.adapter(path: name).ggufWriter(config: config).write(to: temp.appendingPathComponent(adapterGGUFName)) }
            if let moments {
                var w = SafeTensorsWriter()
                w.metadata = ["format": "gemma3-adamw-moments"]
                try w.add("m", shape: [moments.m.count], floats: UnsafeBufferPointer(moments.m.buffer))
                try w.add("v", shape: [moments.v.count], floats: UnsafeBufferPointer(moments.v.buffer))
                try w.write(to: temp.appendingPathComponent("optimizer.safetensors"))
            }
            if let state { try writeState(state, to: temp) }
        }
    }

    /// Loads a LoRA run's `latest/`: fills `lora` and returns the moments and state.
    public static func loadLatestAdapter(runDirectory: URL, config: Gemma3Config, into lora: LoRAWeights) throws -> (moments: Moments, state: TrainerState) {
        try recover(runDirectory: runDirectory, name: latest)
        let dir = runDirectory.appendingPathComponent(latest)
        try lora.load(LoRAAdapter.loadPEFT(directory: dir, for: config))
        let state = try readState(dir)
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("optimizer.safetensors"))
        let m = ParameterStore(layout: .flat(count: lora.count)), v = ParameterStore(layout: .flat(count: lora.count))
        for (name, store) in [("m", m), ("v", v)] {
            guard let info = file.info(name), info.shape == [lora.count], info.dtype == .f32 else {
                throw TrainingError.checkpoint("\(file.path): missing or mis-shaped \(name) (another LoRA rank or target set?)")
            }
            try file.copyFloats(name, into: store.buffer)
        }
        return (Moments(m: m, v: v), state)
    }

    private static func writeMoments(_ moments: Moments, tensors: [ParameterTensor], to directory: URL) throws {
        var w = SafeTensorsWriter()
        w.metadata = ["format": "gemma3-adamw-moments"]
        for t in tensors {
            try w.add("m." + t.name, shape: t.shape, floats: UnsafeBufferPointer(moments.m.view(t)))
            try w.add("v." + t.name, shape: t.shape, floats: UnsafeBufferPointer(moments.v.view(t)))
        }
        try w.write(to: directory.appendingPathComponent("optimizer.safetensors"))
    }

    private static func writeState(_ state: TrainerState, to directory: URL) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFileWriter.write(try e.encode(state) + Data("\n".utf8), to: directory.appendingPathComponent("trainer_state.json"))
    }

    private static func readState(_ directory: URL) throws -> TrainerState {
        let stateURL = directory.appendingPathComponent("trainer_state.json")
        do { return try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: stateURL)) } catch {
            throw TrainingError.checkpoint("cannot read \(stateURL.path): \(error)")
        }
    }

    /// The temporary-directory-and-swap write every checkpoint goes through.
    private static func writeDirectory(runDirectory: URL, name: String, moments: Moments?, fill: (URL) throws -> Void) throws {
        if let moments, !(allFinite(moments.m) && allFinite(moments.v)) {
            throw TrainingError.nonFinite("refusing to write \(name)/: the AdamW moments contain NaN or infinity")
        }
        let fm = FileManager.default
        try fm.createDirectory(at: runDirectory, withIntermediateDirectories: true)
        try recover(runDirectory: runDirectory, name: name)
        let temp = runDirectory.appendingPathComponent(".\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try fm.createDirectory(at: temp, withIntermediateDirectories: false)
        do {
            try fill(temp)
            syncDirectory(temp)
        } catch {
            try? fm.removeItem(at: temp)
            throw error
        }
        // The swap. Between the two renames only `<name>.old` exists; `recover` handles that.
        let final = runDirectory.appendingPathComponent(name)
        let old = runDirectory.appendingPathComponent(name + ".old")
        if fm.fileExists(atPath: final.path) {
            guard rename(final.path, old.path) == 0 else {
                let e = errno
                try? fm.removeItem(at: temp)
                throw TrainingError.checkpoint("cannot move \(final.path) aside: \(String(cString: strerror(e)))")
            }
        }
        guard rename(temp.path, final.path) == 0 else {
            let e = errno
            throw TrainingError.checkpoint("cannot rename \(temp.path) to \(final.path): \(String(cString: strerror(e)))")
        }
        syncDirectory(runDirectory)
        if fm.fileExists(atPath: old.path) { try fm.removeItem(at: old) }
    }

    /// Files that make the checkpoint a Hugging Face tokenizer directory (GPT-2 byte-level BPE).
    static func copyTokenizer(from source: URL, to destination: URL) throws {
        let fm = FileManager.default
        func pick(_ names: [String]) -> URL? {
            names.map { source.appendingPathComponent($0) }.first { fm.fileExists(atPath: $0.path) }
        }
        // OpenAI's encoder.json / vocab.bpe are byte-identical in content to HF's vocab.json / merges.txt.
        guard let vocab = pick(["vocab.json", "encoder.json"]), let merges = pick(["merges.txt", "vocab.bpe"]) else {
            throw TrainingError.checkpoint("\(source.path) has no GPT-2 tokenizer files (vocab.json + merges.txt)")
        }
        try AtomicFileWriter.write(try Data(contentsOf: vocab), to: destination.appendingPathComponent("vocab.json"))
        try AtomicFileWriter.write(try Data(contentsOf: merges), to: destination.appendingPathComponent("merges.txt"))
        // Without this, AutoTokenizer would pick Gemma's SentencePiece tokenizer from model_type.
        let config = """
        {
          "tokenizer_class": "GPT2Tokenizer",
          "add_prefix_space": false,
          "bos_token": "<|endoftext|>",
          "eos_token": "<|endoftext|>",
          "unk_token": "<|endoftext|>",
          "model_max_length": 1024
        }

        """
        try AtomicFileWriter.write(Data(config.utf8), to: destination.appendingPathComponent("tokenizer_config.json"))
    }

    /// Loaded contents of `latest/`.
    public struct Resumable {
        public let config: Gemma3Config
        public let parameters: ParameterStore
        public let moments: Moments
        public let state: TrainerState
    }

    /// Reads only `latest/config.json` and `latest/trainer_state.json`, or nil
    /// when the run has no `latest/` yet: what `--resume` needs to know before loading weights.
    /// Read-only (it may run beside a trainer that is writing the directory; recovery is the trainer's,
    /// under its lock): reads `latest/`, or the `latest.old/` an interrupted swap left.
    public static func latestSummary(runDirectory: URL) throws -> (config: Gemma3Config, state: TrainerState)? {
        let name = exists(runDirectory: runDirectory, name: latest) ? latest
            : exists(runDirectory: runDirectory, name: latest + ".old") ? latest + ".old" : nil
        guard let name else { return nil }
        let dir = runDirectory.appendingPathComponent(name)
        let config = try Gemma3Config.load(from: dir.appendingPathComponent("config.json"))
        let stateURL = dir.appendingPathComponent("trainer_state.json")
        do { return (config, try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: stateURL))) } catch {
            throw TrainingError.checkpoint("cannot read \(stateURL.path): \(error)")
        }
    }

    /// Loads `latest/` with its optimizer moments and trainer state, after `recover`.
    public static func loadLatest(runDirectory: URL) throws -> Resumable {
        try recover(runDirectory: runDirectory, name: latest)
        let dir = runDirectory.appendingPathComponent(latest)
        let (config, parameters) = try HFCheckpoint.load(directory: dir)
        let stateURL = dir.appendingPathComponent("trainer_state.json")
        let state: TrainerState
        do { state = try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: stateURL)) } catch {
            throw TrainingError.checkpoint("cannot read \(stateURL.path): \(error)")
        }
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("optimizer.safetensors"))
        let m = ParameterStore(layout: parameters.layout), v = ParameterStore(layout: parameters.layout)
        for t in parameters.layout.tensors {
            for (prefix, store) in [("m.", m), ("v.", v)] {
                guard let info = file.info(prefix + t.name), info.shape == t.shape, info.dtype == .f32 else {
                    throw TrainingError.checkpoint("\(file.path): missing or mis-shaped \(prefix + t.name)")
                }
                try file.copyFloats(prefix + t.name, into: store.view(t))
            }
        }
        return Resumable(config: config, parameters: parameters, moments: Moments(m: m, v: v), state: state)
    }

    static func allFinite(_ store: ParameterStore) -> Bool {
        let p = UncheckedSendable(store.pointer)
        let workers = max(1, min(Parallel.threadCount, 16))
        let n = store.count
        return withUnsafeTemporaryAllocation(of: Bool.self, capacity: workers) { ok in
            let o = UncheckedSendable(ok.baseAddress!)
            Parallel.forEach(workers) { w in
                var bad = false
                for i in (n * w / workers)..<(n * (w + 1) / workers) { bad = bad || !p.value[i].isFinite }
                o.value[w] = !bad
            }
            return (0..<workers).allSatisfy { ok[$0] }
        }
    }
}
