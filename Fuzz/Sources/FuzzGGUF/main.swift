// GGUF: header, metadata and tensor table (`GGUFFile(bytes:)`), then what loading a model reads
// from them: tensor data, the Gemma 3 configuration and the tokenizer.
import FuzzSupport
import Gemma3Formats
import Gemma3Model
import Gemma3Tokenizers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size), let file = try? GGUFFile(bytes: bytes, name: "fuzz.gguf") else { return 0 }
    for (key, _) in file.metadata {
        _ = try? file.strings(key)
        _ = try? file.ints(key)
        _ = try? file.floats(key)
    }
    for tensor in file.tensors where tensor.elementCount <= 1 << 16 {
        _ = try? file.floats(tensor: tensor.name)
        if tensor.dimensions.count == 2 { _ = try? file.linear(named: tensor.name) }
    }
    _ = try? GGUFGemma3.config(from: file)
    if let tokenizer = try? GGUFGemma3.textTokenizer(from: file) {
        let ids = tokenizer.encode("Hello, world! <start_of_turn>user\n\u{00e9}\u{1F600}")
        _ = try? tokenizer.text(of: ids)
    }
    return 0
}
