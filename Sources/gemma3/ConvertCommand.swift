import ArgumentParser
import Foundation
import Gemma3Formats
import Gemma3Kernels
import Gemma3Model

/// `gemma3 convert`: GGUF file ⇄ Hugging Face model directory.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a Gemma 3 GGUF file into a Hugging Face directory, or a Hugging Face directory into GGUF.",
        discussion: """
        The direction follows the input. A GGUF file becomes a directory with config.json, \
        model.safetensors (every tensor dequantized, HF names, norms without GGUF's +1; --type \
        bf16, f16 or f32), tokenizer.json and tokenizer_config.json, loadable by transformers' \
        Gemma3ForCausalLM and AutoTokenizer. A directory (config.json + model.safetensors) becomes \
        a GGUF file with matrices in --type f32, f16, bf16 or q8_0 and norms in F32 with +1; its \
        tokenizer is included: Gemma's tokenizer.json, or the GPT-2 files of a checkpoint trained \
        here (as llama.cpp's gpt2 tokenizer model, so llama.cpp's tools run it). Every file is \
        written atomically. A PEFT LoRA adapter directory (adapter_config.json) becomes llama.cpp's LoRA \
        GGUF (for `--lora`).
        """
    )

    @Argument(help: ArgumentHelp("A Gemma 3 GGUF file, or a Hugging Face model directory.", valueName: "input"))
    var input: String

    @Argument(help: ArgumentHelp("The directory (from GGUF) or the .gguf file (from a directory) to write.", valueName: "output"))
    var output: String

    @Option(help: ArgumentHelp("Weight type of the output: bf16 (default for a directory, as google/gemma-3-270m), f16, f32 (exact), or q8_0 (GGUF only; GGUF default f32).", valueName: "type"))
    var type: String?

    @Option(help: ArgumentHelp("For a LoRA adapter directory without config.json: its base model (GGUF or directory).", valueName: "path"))
    var base: String?

    @Flag(help: "Replace an existing output file, or write into a non-empty output directory.")
    var force = false

    @Flag(help: "Print one JSON object describing what was written.")
    var json = false

    func run() throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: input, isDirectory: &isDirectory) else { throw ModelCommandError("\(input) does not exist") }
        let start = Date()
        var object: [String: Any] = ["input": input, "output": output]
        let summary: GemmaConversion.Summary
        if isDirectory.boolValue && fm.fileExists(atPath: URL(fileURLWithPath: input).appendingPathComponent("adapter_config.json").path) {
            // A PEFT LoRA adapter → llama.cpp's LoRA GGUF; the shapes come from the base model's config.
            guard output.lowercased().hasSuffix(".gguf") else { throw ModelCommandError("an adapter converts to a .gguf file; give one as the output") }
            if fm.fileExists(atPath: output) && !force { throw ModelCommandError("\(output) exists (use --force to replace it)") }
            let own = URL(fileURLWithPath: input).appendingPathComponent("config.json")
            let config: Gemma3Config
            if let base { config = try LanguageModel.loadTrainableConfig(base) } else if fm.fileExists(atPath: own.path) {
                config = try Gemma3Config.load(from: own)
            } else {
                throw ModelCommandError("\(input) is a LoRA adapter without config.json: give its base model with --base")
            }
            let adapter = try LoRAAdapter.loadPEFT(directory: URL(fileURLWithPath: input, isDirectory: true), for: config)
            try adapter.ggufWriter(config: config).write(to: URL(fileURLWithPath: output))
            object["direction"] = "lora-to-gguf"
            object["tensors"] = adapter.pairs.count * 2
            object["seconds"] = Date().timeIntervalSince(start)
            if json { print(try jsonLine(object)) } else { print("wrote \(output) (LoRA adapter, \(adapter.pairs.count) projections, rank \(adapter.rank))") }
            return
        }
        if isDirectory.boolValue {
            let matrixType = try ggufMatrixType(type ?? "f32", flag: "--type")
            guard !output.hasSuffix("/"), !fm.fileExists(atPath: output, isDirectory: &isDirectory) || !isDirectory.boolValue else {
                throw ModelCommandError("\(output) is a directory; give the .gguf file to write")
            }
            if fm.fileExists(atPath: output) && !force { throw ModelCommandError("\(output) exists (use --force to replace it)") }
            guard fm.fileExists(atPath: URL(fileURLWithPath: input).appendingPathComponent("config.json").path) else {
                throw ModelCommandError("\(input) has no config.json (expected a Hugging Face model directory)")
            }
            let (writer, s) = try GemmaConversion.ggufWriter(huggingFaceDirectory: URL(fileURLWithPath: input, isDirectory: true),
                                                             matrixType: matrixType)
            try writer.write(to: URL(fileURLWithPath: output))
            summary = s
            object["direction"] = "hf-to-gguf"
            object["type"] = matrixType.name
        } else {
            guard LanguageModel.isGGUF(input) else { throw ModelCommandError("\(input) is neither a GGUF file nor a directory") }
            let dtype: SafeTensorsDType
            switch (type ?? "bf16").lowercased() {
            case "bf16": dtype = .bf16
            case "f16": dtype = .f16
            case "f32": dtype = .f32
            default: throw ModelCommandError("--type for a Hugging Face output must be bf16, f16 or f32, got \"\(type!)\"")
            }
            let url = URL(fileURLWithPath: output, isDirectory: true)
            if fm.fileExists(atPath: output, isDirectory: &isDirectory) {
                guard isDirectory.boolValue else { throw ModelCommandError("\(output) exists and is not a directory") }
                let entries = (try? fm.contentsOfDirectory(atPath: output)) ?? []
                if !entries.isEmpty && !force { throw ModelCommandError("\(output) is not empty (use --force to write into it)") }
            }
            summary = try GemmaConversion.convertGGUFToHuggingFace(try GGUFFile(path: input), directory: url, dtype: dtype)
            object["direction"] = "gguf-to-hf"
            object["type"] = dtype.rawValue
            if !summary.tokenizerExact {
                writeStderr("warning: the tokenizer's piece scores do not decrease with the id; tokenizer.json ranks pieces by id, so some texts may tokenize differently")
            }
        }
        object["parameters"] = summary.parameterCount
        object["tokenizer"] = summary.tokenizerWritten
        object["tokenizer_exact"] = summary.tokenizerExact
        object["seconds"] = Date().timeIntervalSince(start)
        if json {
            print(try jsonLine(object))
        } else {
            let millions = String(format: "%.1f", Double(summary.parameterCount) / 1e6)
            let seconds = String(format: "%.1f", Date().timeIntervalSince(start))
            print("wrote \(output) (\(object["type"]!), \(millions)M parameters, \(summary.tokenizerWritten ? "with" : "no") tokenizer) in \(seconds) s")
        }
    }
}
