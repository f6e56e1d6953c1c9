import ArgumentParser
import Foundation
import Gemma3Model
import Gemma3Tokenizers

/// A one-line error of the model verbs (generate, eval).
struct ModelCommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Loads a Hugging Face model directory (`config.json` + `model.safetensors`) as written by the
/// trainer, with a clear error when the directory or its files are missing.
func loadModelDirectory(_ path: String) throws -> (config: Gemma3Config, parameters: ParameterStore) {
    let url = URL(fileURLWithPath: path, isDirectory: true)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
        throw ModelCommandError("model directory \(path) does not exist")
    }
    guard isDirectory.boolValue else {
        throw ModelCommandError("\(path) is not a directory (expected config.json + model.safetensors)")
    }
    guard FileManager.default.fileExists(atPath: url.appendingPathComponent("config.json").path) else {
        throw ModelCommandError("\(path) has no config.json")
    }
    return try HFCheckpoint.load(directory: url)
}

/// The GPT-2 tokenizer of a model: `--tokenizer DIR` when given, else the model directory's own
/// `vocab.json` + `merges.txt` (or `tokenizer.json`, as the trainer writes them), else the default
/// download location.
func loadGenerationTokenizer(modelDirectory: String, override: String?) throws -> GPT2Tokenizer {
    if let override { return try loadGPT2Tokenizer(override) }
    let dir = URL(fileURLWithPath: modelDirectory, isDirectory: true)
    let fm = FileManager.default
    let hasFiles = (fm.fileExists(atPath: dir.appendingPathComponent("vocab.json").path)
        && fm.fileExists(atPath: dir.appendingPathComponent("merges.txt").path))
        || fm.fileExists(atPath: dir.appendingPathComponent("tokenizer.json").path)
    return try loadGPT2Tokenizer(hasFiles ? modelDirectory : nil)
}

/// Writes text to stdout immediately (no buffering), for streaming.
func writeStdout(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Writes a line to stderr.
func writeStderr(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// One JSON object on one line.
func jsonLine(_ object: [String: Any]) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
}
