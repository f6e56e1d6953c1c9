import Foundation
import Testing
import Gemma3Formats
import Gemma3Kernels
import Gemma3Model
import Gemma3Plots
@testable import Gemma3Training

/// A prepared-data directory with synthetic token files for a 1000-token vocabulary: a noisy
/// "grammar" (each token mostly determines the next) so that a tiny model's loss can fall.
func makeDataset(in dir: URL, trainTokens: Int = 20_000, valTokens: Int = 2_000, vocab: Int = 1000) throws {
    var rng = SplitMix64(seed: 99)
    func stream(_ n: Int) -> [UInt16] {
        var out: [UInt16] = []
        var t = 0
        for _ in 0..<n {
            let r = rng.next() % 10
            t = r < 7 ? (t * 31 + 7) % vocab : Int(rng.next() % UInt64(vocab))
            out.append(UInt16(t))
        }
        return out
    }
    try writeTokens(stream(trainTokens), to: dir.appendingPathComponent("train.bin"))
    try writeTokens(stream(valTokens), to: dir.appendingPathComponent("val.bin"))
    let meta: [String: Any] = [
        "format": "gemma3-tokens-v1", "dtype": "uint16", "byte_order": "little",
        "tokenizer": ["name": "gpt2", "directory": SharedData.gpt2.path, "files": [] as [Any]],
        "vocab_size": vocab, "eot_token": vocab - 1, "created_at": "2026-01-01T00:00:00Z",
        "train": ["file": "train.bin", "tokens": trainTokens, "documents": 1, "bytes": trainTokens * 4, "bytes_per_token": 4.0, "sources": [] as [Any]],
        "val": ["file": "val.bin", "tokens": valTokens, "documents": 1, "bytes": valTokens * 4, "bytes_per_token": 4.0, "sources": [] as [Any]],
    ]
    try JSONSerialization.data(withJSONObject: meta).write(to: dir.appendingPathComponent("meta.json"))
}

/// The train-tiny golden model config (vocabulary 1000, hidden 48, 3 layers): fast to train.
func tinyConfig() throws -> Gemma3Config {
    try Gemma3Config.load(from: SharedData.trainTiny.appendingPathComponent("config.json"))
}

let tinyRecipe = TrainingRecipe(
    learningRate: 3e-3, maxIters: 10, warmupSteps: 2, minLR: 3e-4, evalInterval: 4, evalIters: 2,
    batchSize: 2, blockSize: 16, gradientAccumulationSteps: 2, seed: 5, checkpointInterval: 3)

func fileBytes(_ url: URL) throws -> Data { try Data(contentsOf: url) }

@Suite(.serialized) struct TrainerTests {
    func train(data: URL, out: URL, recipe: TrainingRecipe = tinyRecipe, resume: Bool = false, stopAfter: Int? = nil,
               force: Bool = false) throws -> TrainingSummary {
        var o = TrainerOptions(dataDirectory: data, runDirectory: out, config: try tinyConfig(), modelName: "train-tiny", recipe: recipe, resume: resume)
        o.replaceExisting = force
        o.stopAfterStep = stopAfter
        return try Trainer(options: o).run()
    }

    /// In float32 and in bf16 mixed precision (whose rounded weight copy must be redone from the
    /// resumed float32 masters).
    @Test(arguments: TrainingDType.allCases)
    func twoNStepsEqualNPlusResumePlusN(dtype: TrainingDType) throws {
        let tmp = try TemporaryDirectory()
        let data = tmp.url.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try makeDataset(in: data)
        let a = tmp.url.appendingPathComponent("a"), b = tmp.url.appendingPathComponent("b")
        var recipe = tinyRecipe
        recipe.dtype = dtype
        let full = try train(data: data, out: a, recipe: recipe)
        #expect(full.step == 10 && full.interruptedBy == nil)
        // Stop after 5 (between checkpoints 3 and 6, and after the eval at 4), then resume.
        let first = try train(data: data, out: b, recipe: recipe, stopAfter: 5)
        #expect(first.step == 5 && first.interruptedBy == 0)
        let second = try train(data: data, out: b, recipe: recipe, resume: true)
        #expect(second.step == 10)
        for name in ["latest/model.safetensors", "latest/optimizer.safetensors", "best/model.safetensors"] {
            #expect(try fileBytes(a.appendingPathComponent(name)) == fileBytes(b.appendingPathComponent(name)), "\(name) differs")
        }
        let sa = try JSONDecoder().decode(TrainerState.self, from: fileBytes(a.appendingPathComponent("latest/trainer_state.json")))
        let sb = try JSONDecoder().decode(TrainerState.self, from: fileBytes(b.appendingPathComponent("latest/trainer_state.json")))
        #expect(sa.step == 10 && sa.adamStep == 10 && sa.samplerState == sb.samplerState && sa.bestValLoss == sb.bestValLoss && sa.adamStep == sb.adamStep)
        // The metrics tell the same story (one record per step, evals at 0, 4, 8, 10).
        let ra = try TrainingReport(runDirectory: a), rb = try TrainingReport(runDirectory: b)
        #expect(ra.steps.map(\.loss) == rb.steps.map(\.loss) && ra.steps.map(\.gradNorm) == rb.steps.map(\.gradNorm))
        #expect(ra.steps.map(\.step) == Array(1...10))
        #expect(ra.evals.map(\.step) == [0, 4, 8, 10] && rb.evals.map(\.step) == [0, 4, 8, 10])
        #expect(ra.evals.map(\.valLoss) == rb.evals.map(\.valLoss))
        // The checkpoint is a HF directory with the tokenizer.
        for f in ["config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json", "trainer_state.json"] {
            #expect(FileManager.default.fileExists(atPath: a.appendingPathComponent("latest/\(f)").path), "latest/\(f)")
        }
        let reloaded = try HFCheckpoint.load(directory: a.appendingPathComponent("latest"))
        #expect(reloaded.config == (try tinyConfig()))
    }

    @Test func lossFallsWellBelowTheUnigramEntropy() throws {
        let tmp = try TemporaryDirectory()
        let data = tmp.url.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try makeDataset(in: data)
        let recipe = TrainingRecipe(learningRate: 1e-2, maxIters: 150, warmupSteps: 10, minLR: 1e-3, evalInterval: 150, evalIters: 4,
                                    batchSize: 8, blockSize: 16, gradientAccumulationSteps: 1, seed: 3)
        let summary = try train(data: data, out: tmp.url.appendingPathComponent("run"), recipe: recipe)
        let valLoss = try #require(summary.lastEval?.valLoss)
        let unigramNats = summary.unigramEntropyBits * log(2.0)
        // The synthetic stream is 70% deterministic: a model that uses the previous token beats the
        // context-free baseline (≈ ln 1000 ≈ 6.9 nats) by far.
        #expect(valLoss < unigramNats - 1.5, "val loss \(valLoss), unigram \(unigramNats)")
    }

    @Test func resumeRefusesAnotherRecipeAndFreshRunRefusesAnExistingRun() throws {
        let tmp = try TemporaryDirectory()
        let data = tmp.url.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try makeDataset(in: data)
        let out = tmp.url.appendingPathComponent("run")
        _ = try train(data: data, out: out, stopAfter: 5)  // past the eval at 4: best/ exists too
        var other = tinyRecipe
        other.learningRate = 1e-3
        #expect(throws: TrainingError.self) { _ = try train(data: data, out: out, recipe: other, resume: true) }
        #expect(throws: TrainingError.self) { _ = try train(data: data, out: out) }
        // --force with data that cannot train this model: refused before the old run is touched.
        let latestBefore = try fileBytes(out.appendingPathComponent("latest/model.safetensors"))
        let metricsBefore = try fileBytes(out.appendingPathComponent("metrics.jsonl"))
        for (name, vocab) in [("big-vocab", 2000), ("bad-token", 1000)] {
            let bad = tmp.url.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: bad, withIntermediateDirectories: true)
            try makeDataset(in: bad, vocab: vocab)
            if name == "bad-token" {
                // One id past the vocabulary, where a sampled window may never look.
                var tokens = try Data(contentsOf: bad.appendingPathComponent("val.bin"))
                tokens[tokens.count - 2] = 0xE8; tokens[tokens.count - 1] = 0x03  // 1000
                try tokens.write(to: bad.appendingPathComponent("val.bin"))
            }
            #expect(throws: TrainingError.self) { _ = try train(data: bad, out: out, force: true) }
            #expect(try fileBytes(out.appendingPathComponent("latest/model.safetensors")) == latestBefore, "\(name): latest/ changed")
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("best/model.safetensors").path), "\(name): best/ gone")
            #expect(try fileBytes(out.appendingPathComponent("metrics.jsonl")) == metricsBefore, "\(name): metrics.jsonl changed")
        }
        // --force replaces it: a fresh run from step 0.
        let replaced = try train(data: data, out: out, stopAfter: 1, force: true)
        #expect(replaced.step == 1)
        // --resume without a checkpoint starts from scratch.
        let fresh = tmp.url.appendingPathComponent("fresh")
        let s = try train(data: data, out: fresh, resume: true, stopAfter: 1)
        #expect(s.step == 1)
    }

    @Test func interruptedCheckpointSwapIsRecovered() throws {
        let tmp = try TemporaryDirectory()
        let data = tmp.url.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try makeDataset(in: data)
        let out = tmp.url.appendingPathComponent("run")
        _ = try train(data: data, out: out, stopAfter: 3)
        let fm = FileManager.default
        let latest = out.appendingPathComponent("latest"), old = out.appendingPathComponent("latest.old")
        let before = try fileBytes(latest.appendingPathComponent("model.safetensors"))
        // A kill between "rename latest → latest.old" and "rename temp → latest", with a half-written temp dir.
        try fm.moveItem(at: latest, to: old)
        try fm.createDirectory(at: out.appendingPathComponent(".latest.tmp-1-2"), withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: out.appendingPathComponent(".latest.tmp-1-2/model.safetensors"))
        let r = try TrainingCheckpoint.loadLatest(runDirectory: out)
        #expect(r.state.step == 3)
        #expect(try fileBytes(latest.appendingPathComponent("model.safetensors")) == before)
        #expect(!fm.fileExists(atPath: old.path) && !fm.fileExists(atPath: out.appendingPathComponent(".latest.tmp-1-2").path))
        // A kill after the second rename: both exist; the new one wins and .old is removed.
        try fm.copyItem(at: latest, to: old)
        try TrainingCheckpoint.recover(runDirectory: out, name: "latest")
        #expect(!fm.fileExists(atPath: old.path) && fm.fileExists(atPath: latest.path))
    }

    @Test func nonFiniteStepsAreSkippedAndNeverCheckpointed() throws {
        let config = try tinyConfig()
        let parameters = ParameterStore(config: config)
        parameters.initializeForTraining(config: config, seed: 1)
        parameters.view(parameters.layout.tensors[1])[0] = .nan  // a norm weight
        let model = try Gemma3TrainingModel(config: config, batchSize: 1, sequenceLength: 8, parameters: parameters, training: true)
        let optimizer = OptimizerState(layout: parameters.layout, hyper: AdamWHyperparameters())
        let before = Array(parameters.buffer)
        var inputs = [Int32](repeating: 3, count: 8), targets = [Int32](repeating: 4, count: 8)
        let outcome = try inputs.withUnsafeMutableBufferPointer { i in try targets.withUnsafeMutableBufferPointer { t in
            try trainingStep(model: model, optimizer: optimizer, learningRate: 1e-3, gradClip: 0.5, accumulation: 1, inputs: i, targets: t) { _ in }
        } }
        #expect(!outcome.applied && !outcome.loss.isFinite)
        #expect(optimizer.adamStep == 0)
        let after = Array(parameters.buffer)
        #expect(zip(before, after).allSatisfy { $0.bitPattern == $1.bitPattern })
        let tmp = try TemporaryDirectory()
        #expect(throws: TrainingError.self) {
            try TrainingCheckpoint.write(runDirectory: tmp.url, name: "latest", config: config, parameters: parameters)
        }
        #expect(!FileManager.default.fileExists(atPath: tmp.url.appendingPathComponent("latest").path))
    }

    @Test func unigramEntropyMatchesACountByHand() throws {
        let tmp = try TemporaryDirectory()
        let url = tmp.url.appendingPathComponent("t.bin")
        try writeTokens([1, 1, 2, 3, 1, 2, 3, 3], to: url)  // p = 3/8, 2/8, 3/8
        let h = unigramEntropyBits(try TokenFile(url: url))
        let expected = -(2 * 0.375 * log2(0.375) + 0.25 * log2(0.25))
        #expect(abs(h - expected) < 1e-12)
    }
}
