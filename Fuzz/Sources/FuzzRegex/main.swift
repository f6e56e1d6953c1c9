// Regular expressions for constrained output (`ByteGrammar.regex`), compiled to a grammar.
import FuzzSupport
import Gemma3StructuredOutput

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size) else { return 0 }
    if let grammar = try? ByteGrammar.regex(String(decoding: bytes, as: UTF8.self)) { _ = grammar.shortestValueBytes }
    return 0
}
