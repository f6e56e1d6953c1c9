import Foundation
import Testing
@testable import Gemma3Formats
import Gemma3Kernels

/// Metadata with every value type, nested and empty arrays, and non-ASCII strings.
func sampleMetadata() -> [(String, GGUFValue)] {
    [
        ("general.architecture", .string("gemma3")),
        ("t.u8", .uint8(250)), ("t.i8", .int8(-7)), ("t.u16", .uint16(65000)), ("t.i16", .int16(-30000)),
        ("t.u32", .uint32(4_000_000_000)), ("t.i32", .int32(-2_000_000_000)),
        ("t.u64", .uint64(18_000_000_000_000_000_000)), ("t.i64", .int64(-9_000_000_000_000_000_000)),
        ("t.f32", .float32(-1.5e-7)), ("t.f64", .float64(3.141592653589793)),
        ("t.bool.true", .bool(true)), ("t.bool.false", .bool(false)),
        ("t.string", .string("héllo ▁ wörld 世界 🙂")), ("t.empty.string", .string("")),
        ("t.arr.str", .array(.string, [.string("<bos>"), .string(""), .string("▁the"), .string("\n\n")])),
        ("t.arr.f32", .array(.float32, [.float32(0), .float32(-1000), .float32(.infinity)])),
        ("t.arr.i32", .array(.int32, [.int32(1), .int32(-3)])),
        ("t.arr.bool", .array(.bool, [.bool(true), .bool(false)])),
        ("t.arr.u8", .array(.uint8, [.uint8(1), .uint8(255)])),
        ("t.arr.empty", .array(.uint64, [])),
        ("t.arr.nested", .array(.array, [.array(.int16, [.int16(1), .int16(2)]), .array(.int16, [])])),
    ]
}

/// Every type with kernels, with a row length valid for it.
let sampleTensorTypes: [(GGMLType, [Int])] = [
    (.f32, [64, 3]), (.f16, [40, 5]), (.bf16, [33, 2]), (.q8_0, [64, 7]), (.q4_0, [96, 3]),
    (.q5_0, [32, 9]), (.q4_K, [512, 3]), (.q6_K, [256, 5]), (.f32, [7]),
]

func sampleWriter(alignment: Int) throws -> GGUFWriter {
    var w = GGUFWriter(alignment: alignment)
    for (k, v) in sampleMetadata() { w.set(k, v) }
    for (i, (type, dims)) in sampleTensorTypes.enumerated() {
        let n = dims.reduce(1, *)
        try w.addTensor("tensor.\(i).\(type.name)", type: type, dimensions: dims, values: randomFloats(n, seed: UInt64(i + 1)))
    }
    return w
}

@Suite("GGUF reader and writer")
struct GGUFFormatTests {
    @Test("write then read: every metadata type, alignments 32 and 64, every tensor type", arguments: [32, 64])
    func roundTrip(alignment: Int) throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let w = try sampleWriter(alignment: alignment)
        let url = dir.appendingPathComponent("sample.gguf")
        try w.write(to: url)
        let f = try GGUFFile(url: url)
        #expect(f.version == 3)
        #expect(f.alignment == alignment)
        #expect(f.dataOffset % alignment == 0)
        // Metadata: same keys, order and values (alignment is written only when not the default).
        let expected = (alignment == 32 ? [] : [("general.alignment", GGUFValue.uint32(UInt32(alignment)))]) + sampleMetadata()
        #expect(f.metadata.map(\.key) == expected.map(\.0))
        for (k, v) in expected { #expect(f[k] == v, "\(k)") }
        #expect(try f.int("t.u32") == 4_000_000_000)
        #expect(try f.double("t.f64") == 3.141592653589793)
        #expect(try f.strings("t.arr.str") == ["<bos>", "", "▁the", "\n\n"])
        #expect(throws: FormatError.self) { try f.string("t.u8") }
        #expect(throws: FormatError.self) { try f.int("missing.key") }
        // Tensors: names, dimensions, types, aligned offsets and identical bytes.
        #expect(f.tensors.count == w.tensors.count)
        for (info, t) in zip(f.tensors, w.tensors) {
            #expect(info.name == t.name)
            #expect(info.dimensions == t.dimensions)
            #expect(info.type == t.type)
            #expect(info.offset % alignment == 0)
            let data = try f.data(of: info)
            #expect(Array(data) == t.data, "\(t.name)")
        }
    }

    @Test("llama.cpp's gguf-py reads our files: metadata, shapes, and dequantized values")
    func readByGGUFPy() throws {
        guard ggufPyDirectory != nil else {
            notice("gguf-py (LLAMA_CPP_DIR/gguf-py with numpy) not found: skipped the cross-check of our GGUF writer against llama.cpp's Python reader")
            return
        }
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("sample.gguf")
        let w = try sampleWriter(alignment: 64)
        try w.write(to: url)
        let script = """
        import sys, json, numpy as np
        from gguf import GGUFReader
        from gguf.quants import dequantize
        r = GGUFReader(sys.argv[1])
        out = {"kv": {}, "tensors": {}}
        for k, f in r.fields.items():
            if not k.startswith("t.") or k in ("t.arr.nested", "t.arr.f32"): continue  # JSON has no infinity
            vals = []
            for i in f.data:
                p = f.parts[i]
                vals.append(bytes(p).decode() if f.types[-1].name == "STRING" else p.tolist()[0])
            out["kv"][k] = vals
        for t in r.tensors:
            out["tensors"][t.name] = {"shape": [int(x) for x in t.shape], "type": t.tensor_type.name,
                                      "values": dequantize(t.data, t.tensor_type).astype(np.float64).ravel().tolist()}
        print(json.dumps(out))
        """
        let json = try JSONSerialization.jsonObject(with: Data(try python(script, [url.path]).utf8)) as! [String: Any]
        let kv = json["kv"] as! [String: [Any]]
        #expect((kv["t.u64"]?.first as? NSNumber)?.uint64Value == 18_000_000_000_000_000_000)
        #expect((kv["t.i64"]?.first as? NSNumber)?.int64Value == -9_000_000_000_000_000_000)
        #expect((kv["t.string"]?.first as? String) == "héllo ▁ wörld 世界 🙂")
        #expect((kv["t.arr.str"] as? [String]) == ["<bos>", "", "▁the", "\n\n"])
        #expect((kv["t.bool.true"]?.first as? NSNumber)?.boolValue == true)
        #expect(abs(((kv["t.f32"]?.first as? NSNumber)?.doubleValue ?? 0) - Double(Float(-1.5e-7))) < 1e-15)
        let tensors = json["tensors"] as! [String: [String: Any]]
        let f = try GGUFFile(url: url)
        for t in w.tensors {
            let theirs = try #require(tensors[t.name])
            #expect((theirs["type"] as? String) == t.type.name)
            #expect((theirs["shape"] as? [Int]) == t.dimensions)
            let ours = try f.floats(tensor: t.name)
            let values = (theirs["values"] as! [NSNumber]).map(\.floatValue)
            #expect(values.count == ours.count)
            var maxDiff: Float = 0, scale: Float = 0
            for (a, b) in zip(ours, values) { maxDiff = max(maxDiff, abs(a - b)); scale = max(scale, abs(b)) }
            // Same decoding rules; at most float rounding differences from a different evaluation order.
            #expect(maxDiff <= scale * 1e-6, "\(t.name): max difference \(maxDiff)")
        }
    }

    @Test("truncated and corrupt files give one-line errors")
    func corruptFiles() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bytes = try sampleWriter(alignment: 32).serialized()
        let url = dir.appendingPathComponent("bad.gguf")
        func check(_ data: [UInt8], contains fragment: String) throws {
            try Data(data).write(to: url)
            do {
                _ = try GGUFFile(url: url)
                Issue.record("no error for a file expected to fail with \"\(fragment)\"")
            } catch let e as FormatError {
                #expect(!e.message.contains("\n"))
                #expect(e.message.contains(fragment), "\(e.message)")
            }
        }
        // Truncation at many points: inside the header, the tensor infos and the data.
        let info = try { () throws -> GGUFFile in try Data(bytes).write(to: url); return try GGUFFile(url: url) }()
        let lastNeeded = info.dataOffset + info.tensors.last!.offset + info.tensors.last!.byteCount!
        for cut in [3, 10, 23, 30, 100, 700, info.dataOffset - 5, info.dataOffset + 10, lastNeeded - 1] {
            try check(Array(bytes.prefix(cut)), contains: cut < 24 ? "GGUF" : "truncated")
        }
        var bad = bytes
        bad[0] = UInt8(ascii: "X")
        try check(bad, contains: "bad magic")
        bad = bytes
        bad[4] = 1
        try check(bad, contains: "version 1")
        bad = bytes
        bad[4] = 0; bad[7] = 3   // byte-swapped version 3
        try check(bad, contains: "big-endian")
        bad = bytes
        for i in 8..<16 { bad[i] = 0xff }   // absurd tensor count
        try check(bad, contains: "corrupt GGUF header: tensor count")
        // First metadata value type (after magic, version, counts, key length and key) set to 99.
        bad = bytes
        let keyLength = Int(bytes[24])
        bad[32 + keyLength] = 99
        try check(bad, contains: "unknown value type")
        try check([], contains: "not a GGUF file")
        // A tensor whose bytes overflow (issue 18's probe: F32 [2^40 − 1, 2^21] trapped): one line, no trap.
        try check(oneTensorFile(type: 0, dimensions: [(1 << 40) - 1, 1 << 21]), contains: "needs more bytes than the file")
        try check(oneTensorFile(type: 0, dimensions: [1 << 30, 1 << 30]), contains: "needs more bytes than the file")
        // A real block-size mismatch keeps its own message.
        try check(oneTensorFile(type: 8, dimensions: [33, 2]), contains: "not a multiple of the block size")
        #expect(throws: FormatError.self) { try GGUFFile(path: dir.appendingPathComponent("missing.gguf").path) }
    }

    /// A GGUF v3 file with no metadata and one tensor named "t" of raw `type` and `dimensions` at offset 0,
    /// followed by 64 bytes of data.
    func oneTensorFile(type: UInt32, dimensions: [UInt64]) -> [UInt8] {
        var b: [UInt8] = Array("GGUF".utf8)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        put(UInt32(3)); put(UInt64(1)); put(UInt64(0))
        put(UInt64(1)); b.append(UInt8(ascii: "t"))
        put(UInt32(dimensions.count)); dimensions.forEach { put($0) }
        put(type); put(UInt64(0))
        while b.count % 32 != 0 { b.append(0) }
        return b + [UInt8](repeating: 0, count: 64)
    }

    @Test("writer rejects inconsistent tensors")
    func writerValidation() throws {
        var w = GGUFWriter()
        #expect(throws: FormatError.self) { try w.addTensor("a", type: .q8_0, dimensions: [33, 2], values: randomFloats(66, seed: 1)) }
        #expect(throws: FormatError.self) { try w.addTensor("b", type: .q4_K, dimensions: [640, 1], values: randomFloats(640, seed: 1)) }
        #expect(throws: FormatError.self) { try w.addTensor("c", type: .f32, dimensions: [4, 2], data: [UInt8](repeating: 0, count: 31)) }
        try w.addTensor("d", type: .f32, dimensions: [4], values: [1, 2, 3, 4])
        #expect(throws: FormatError.self) { try w.addTensor("d", type: .f32, dimensions: [4], values: [1, 2, 3, 4]) }
    }
}
