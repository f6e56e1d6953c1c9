// config.json → Gemma3Config, validated (`Gemma3Config.decode(json:)`), then the sizes a model
// built from it derives.
import Foundation
import FuzzSupport
import Gemma3Model

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size), let config = try? Gemma3Config.decode(json: Data(bytes), source: "fuzz.json") else { return 0 }
    _ = config.parameterCount
    _ = config.queryScale
    _ = config.queriesPerKeyValueHead
    for layer in 0..<config.numHiddenLayers { _ = config.ropeTheta(layer: layer) }
    _ = try? config.jsonData()
    return 0
}
