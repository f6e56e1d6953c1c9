import Foundation
import Testing
import Gemma3Model
import Gemma3Training

// The README's library examples, compiled and run as written (only the paths differ). If one of
// these stops compiling, the README is wrong.

/// README example 1: load any supported model and generate 50 tokens.
func readmeGenerate(path: String) throws -> GenerationResult {
    let model = try LanguageModel.load(path)
    let story = try model.generate("Once upon a time", maxNewTokens: 50)
    print(story.text)
    return story
}

/// README example 2: tokenize with the tokenizer that belongs to a model (no weights loaded).
func readmeTokenize(path: String) throws -> [TokenID] {
    let tokenizer = try LanguageModel.loadTokenizer(path)
    let ids = tokenizer.encode("Once upon a time")
    print(ids, try tokenizer.text(of: ids))
    return ids
}

/// README example 3: train the smallest preset for 20 steps, an observer collecting the losses.
final class LossCollector: TrainingObserver {
    var losses: [Double] = []
    func trainingDidStep(_ step: StepMetrics) { losses.append(step.loss) }
}

func readmeTrain(data: String, run: String) throws -> [Double] {
    let options = TrainerOptions(
        dataDirectory: URL(fileURLWithPath: data), runDirectory: URL(fileURLWithPath: run),
        config: Gemma3Config.preset(named: "tinystories-5m")!, modelName: "tinystories-5m",
        recipe: .smoke)                                    // 20 steps of 2 micro-batches of 4 × 32 tokens
    let collector = LossCollector()
    let summary = try Trainer(options: options, observer: collector).run()
    print(collector.losses, summary.bestValLoss ?? .nan)
    return collector.losses
}

/// A token directory as `gemma3 prepare` writes one, from the first documents of the shared
/// TinyStories sample (enough for 20 small steps, quick to tokenize).
func makeTokenDirectory(in dir: URL) throws -> URL {
    func head(of name: String, bytes: Int) throws -> URL {
        let text = try String(contentsOf: sharedTinyStories.appendingPathComponent(name), encoding: .utf8)
        let start = String(decoding: text.utf8.prefix(bytes), as: UTF8.self)
        let end = start.range(of: "\n<|endoftext|>\n", options: .backwards)!.upperBound  // whole documents only
        let url = dir.appendingPathComponent(name)
        try String(start[..<end]).write(to: url, atomically: true, encoding: .utf8)
        return url
    }
    let options = PrepareOptions(trainFiles: [try head(of: "train.txt", bytes: 100_000)],
                                 validation: .files([try head(of: "valid.txt", bytes: 20_000)]),
                                 outputDirectory: dir.appendingPathComponent("tokens", isDirectory: true))
    _ = try DataPreparation.run(options, tokenizer: try GPT2Tokenizer(directory: sharedGPT2),
                                tokenizerRecord: try TokenizerRecord.gpt2(directory: sharedGPT2))
    return options.outputDirectory
}

/// A small GPT-2-vocabulary checkpoint directory, as `gemma3 train` writes one (random weights),
/// with the GPT-2 tokenizer files from ../shared.
func makeCheckpointDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-examples-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let config = Gemma3Config.preset(named: "tinystories-5m")!
    let store = ParameterStore(config: config)
    store.initializeForTraining(config: config, seed: 7)
    try HFCheckpoint.save(config: config, parameters: store, directory: dir)
    for file in ["vocab.json", "merges.txt"] {
        try FileManager.default.copyItem(at: sharedGPT2.appendingPathComponent(file), to: dir.appendingPathComponent(file))
    }
    return dir
}

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let sharedGPT2 = repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared/data/gpt2")
let sharedTinyStories = repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared/data/tinystories")

/// The real Gemma 3 270M GGUF where CI (scripts/fetch-test-artefacts.sh) or `gemma3 download` put it.
let realModelPath: String? = {
    let candidates: [String?] = [ProcessInfo.processInfo.environment["GEMMA3_GGUF"],
                      FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/gemma3/gemma-3-270m-q4_k_m.gguf").path]
    return candidates.compactMap { $0 }.first { FileManager.default.fileExists(atPath: $0) }
}()

@Suite struct ReadmeExampleTests {
    @Test func generateFromATrainingCheckpoint() throws {
        let dir = try makeCheckpointDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let story = try readmeGenerate(path: dir.path)
        // Greedy decoding: 50 new tokens unless a stop token came first; the prompt as tiktoken encodes it.
        #expect(story.generatedIds.count == 50 || story.stopReason == .stopToken)
        let ids = try readmeTokenize(path: dir.path)
        #expect(ids == [7454, 2402, 257, 640])  // tiktoken's gpt2 ids of "Once upon a time"
        #expect(story.promptIds == ids)
    }

    @Test func trainTheSmallestPresetWithALossObserver() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-examples-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokens = try makeTokenDirectory(in: dir)
        let losses = try readmeTrain(data: tokens.path, run: dir.appendingPathComponent("run").path)
        // One loss per step, all finite, and training lowered it: the last five steps average below the first.
        #expect(losses.count == 20)
        #expect(losses.allSatisfy { $0.isFinite }, "\(losses)")
        if let first = losses.first, losses.count >= 5 {
            #expect(losses.suffix(5).reduce(0, +) / 5 < first, "\(losses)")
        }
    }

    @Test func generateFromTheRealGemmaModel() throws {
        guard let path = realModelPath else {
            print("NOTICE: the real Gemma 3 270M GGUF is absent (`gemma3 download gemma3-270m`): the README example ran on a checkpoint only")
            return
        }
        let story = try readmeGenerate(path: path)
        #expect(!story.text.isEmpty && story.generatedIds.count > 0)
        let ids = try readmeTokenize(path: path)
        #expect(ids.first == 2)  // <bos>
        #expect(story.promptIds == ids)
    }
}
