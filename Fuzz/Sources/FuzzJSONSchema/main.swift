// JSON Schemas for constrained output (`ByteGrammar.jsonSchema`), compiled to a grammar.
import FuzzSupport
import Gemma3StructuredOutput

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size) else { return 0 }
    if let grammar = try? ByteGrammar.jsonSchema(String(decoding: bytes, as: UTF8.self)) { _ = grammar.shortestValueBytes }
    return 0
}
