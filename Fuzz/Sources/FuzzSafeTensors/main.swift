// safetensors: the header length, the JSON header and every tensor's offsets (`SafeTensorsFile(bytes:)`),
// then reading each tensor back.
import FuzzSupport
import Gemma3Formats

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size), let file = try? SafeTensorsFile(bytes: bytes, name: "fuzz.safetensors") else { return 0 }
    for tensor in file.tensors {
        _ = file.info(tensor.name)
        _ = try? file.floats(tensor.name)
        _ = try? file.integers(tensor.name)
    }
    return 0
}
