import ArgumentParser
import Foundation
import Gemma3Formats
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Model

/// `gemma3 merge-adapter`: base model + LoRA adapter → one model (Hugging Face directory, and GGUF).
struct MergeAdapterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge-adapter",
        abstract: "Merge a LoRA adapter (PEFT directory) into its base model: a Hugging Face directory, and optionally a GGUF file.",
        discussion: """
        W + s·B·A for every adapted projection, as PEFT's merge_and_unload. OUT receives config.json, \
        model.safetensors (--type) and the base model's tokenizer; --gguf FILE also writes that \
        directory as GGUF (matrices in --gguf-type), which llama.cpp runs.
        """
    )

    @Option(help: ArgumentHelp("The base model: a GGUF file, a Hugging Face Gemma directory, or a checkpoint.", valueName: "path"))
    var model: String

    @Option(help: ArgumentHelp("The PEFT adapter directory (adapter_config.json + adapter_model.safetensors).", valueName: "dir"))
    var adapter: String

    @Option(help: ArgumentHelp("The merged Hugging Face directory to write.", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("Also write the merged model as this GGUF file.", valueName: "file"))
    var gguf: String?

    @Option(help: "Weight type of model.safetensors: f32 (default, exact) or bf16.") var type: String = "f32"
    @Option(name: .customLong("gguf-type"), help: "Matrix type of the GGUF: f32 (default), f16, bf16 or q8_0.") var ggufType: String = "f32"
    @Flag(help: "Write into a non-empty --out, replace an existing --gguf.") var force = false
    @Flag(help: "Print one JSON object describing what was written.") var json = false

    func run() throws {
        let fm = FileManager.default
        let dtype: SafeTensorsDType
        switch type.lowercased() {
        case "f32": dtype = .f32
        case "bf16": dtype = .bf16
        default: throw ModelCommandError("--type must be f32 or bf16, got \"\(type)\"")
        }
        let matrixType = try ggufMatrixType(ggufType, flag: "--gguf-type")
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: out, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw ModelCommandError("\(out) exists and is not a directory") }
            if !((try? fm.contentsOfDirectory(atPath: out)) ?? []).isEmpty && !force { throw ModelCommandError("\(out) is not empty (use --force to write into it)") }
        }
        if let gguf, fm.fileExists(atPath: gguf), !force { throw ModelCommandError("\(gguf) exists (use --force to replace it)") }
        let start = Date()
        let merged = try LanguageModel.loadTrainable(model, options: LoadOptions(adapter: URL(fileURLWithPath: adapter, isDirectory: true)))
        let directory = URL(fileURLWithPath: out, isDirectory: true)
        try HFCheckpoint.save(config: merged.config, parameters: merged.parameters, directory: directory, dtype: dtype)
        if let gemma = merged.tokenizer as? GemmaTokenizer {
            _ = try GemmaConversion.writeTokenizer(gemma, directory: directory, maxLength: merged.config.maxPositionEmbeddings)
        } else {
            for name in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
                let source = URL(fileURLWithPath: model).appendingPathComponent(name)
                if fm.fileExists(atPath: source.path) {
                    try AtomicFileWriter.write(try Data(contentsOf: source), to: directory.appendingPathComponent(name))
                }
            }
        }
        if let gguf {
            let (writer, _) = try GemmaConversion.ggufWriter(huggingFaceDirectory: directory, matrixType: matrixType)
            try writer.write(to: URL(fileURLWithPath: gguf))
        }
        let seconds = Date().timeIntervalSince(start)
        if json {
            var object: [String: Any] = ["model": model, "adapter": adapter, "out": out, "type": dtype.rawValue, "seconds": seconds,
                                         "parameters": merged.parameters.count]
            if let gguf { object["gguf"] = gguf; object["gguf_type"] = matrixType.name }
            print(try jsonLine(object))
        } else {
            print("wrote \(out)\(gguf.map { " and \($0)" } ?? "") in \(String(format: "%.1f", seconds)) s")
        }
    }
}
