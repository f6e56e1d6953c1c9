import Foundation
import Testing
import Gemma3Formats
import Gemma3Kernels
import Gemma3Model

func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-model-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Runs python3 with a script and arguments; returns stdout (throws on a non-zero exit).
func runPython(_ script: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script] + arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw FormatError("python3 failed: \(String(decoding: errors, as: UTF8.self))")
    }
    return String(decoding: data, as: UTF8.self)
}

/// A safetensors file assembled by hand: header JSON + data bytes.
func rawSafetensors(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> Data {
    var bytes = Data()
    var n = (declaredLength ?? UInt64(header.utf8.count)).littleEndian
    withUnsafeBytes(of: &n) { bytes.append(contentsOf: $0) }
    bytes.append(contentsOf: Array(header.utf8))
    bytes.append(contentsOf: data)
    return bytes
}

@Suite struct SafeTensorsTests {
    let values: [Float] = (0..<24).map { Float($0) * 0.37 - 3.1 } + [1e-8, 65504, -0.0, 3.0e38]

    @Test(arguments: [SafeTensorsDType.f32, .f16, .bf16])
    func writeThenReadRoundTrips(_ dtype: SafeTensorsDType) throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("t.safetensors")
        var writer = SafeTensorsWriter()
        writer.metadata = ["format": "pt", "note": "round trip"]
        try values.withUnsafeBufferPointer { try writer.add("a.weight", shape: [4, 7], floats: $0, dtype: dtype) }
        try writer.add("ids", shape: [2, 3], int64: [0, 1, -5, 50256, 7, 1 << 40])
        try writer.write(to: url)

        let file = try SafeTensorsFile(url: url)
        #expect(file.metadata == ["format": "pt", "note": "round trip"])
        #expect(file.info("a.weight")?.dtype == dtype && file.info("a.weight")?.shape == [4, 7])
        let back = try file.floats("a.weight")
        let expected: [Float] = values.map {
            switch dtype {
            case .f16: NumberFormats.f16ToFloat(NumberFormats.floatToF16($0))
            case .bf16: NumberFormats.bf16ToFloat(NumberFormats.floatToBF16($0))
            default: $0
            }
        }
        #expect(back.map(\.bitPattern) == expected.map(\.bitPattern))
        #expect(try file.integers("ids") == [0, 1, -5, 50256, 7, 1 << 40])
        #expect(throws: FormatError.self) { try file.floats("ids") }
        #expect(throws: FormatError.self) { try file.floats("missing") }
    }

    /// Files written here are read by the reference `safetensors` Python package (BF16 decoded by hand,
    /// as numpy has no bfloat16), with the same values and metadata.
    @Test func pythonSafetensorsReadsOurFiles() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var expectedJSON: [String: [Double]] = [:]
        for dtype in [SafeTensorsDType.f32, .f16, .bf16] {
            let url = dir.appendingPathComponent("\(dtype.rawValue).safetensors")
            var writer = SafeTensorsWriter()
            writer.metadata = ["format": "pt"]
            try values.withUnsafeBufferPointer { try writer.add("w", shape: [2, 14], floats: $0, dtype: dtype) }
            try writer.add("n", shape: [3], int64: [3, -1, 1 << 33])
            try writer.write(to: url)
            expectedJSON[dtype.rawValue] = try SafeTensorsFile(url: url).floats("w").map(Double.init)
        }
        let script = """
        import json, sys, struct, numpy as np
        from safetensors import safe_open
        from safetensors.numpy import load_file
        out = {}
        for dt in ["F32", "F16", "BF16"]:
            path = sys.argv[1] + "/" + dt + ".safetensors"
            with safe_open(path, framework="numpy") as f:
                assert f.metadata() == {"format": "pt"}, f.metadata()
                assert sorted(f.keys()) == ["n", "w"]
                assert f.get_tensor("n").tolist() == [3, -1, 1 << 33]
            if dt == "BF16":
                raw = open(path, "rb").read()
                n = struct.unpack("<Q", raw[:8])[0]
                h = json.loads(raw[8:8 + n])
                assert h["w"]["dtype"] == "BF16" and h["w"]["shape"] == [2, 14]
                b, e = h["w"]["data_offsets"]
                bits = np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<u2").astype(np.uint32) << 16
                w = bits.view(np.float32)
            else:
                t = load_file(path)["w"]
                assert t.shape == (2, 14) and t.dtype == {"F32": np.float32, "F16": np.float16}[dt]
                w = t.astype(np.float32)
            out[dt] = [repr(float(x)) for x in w.reshape(-1)]  # repr keeps inf (F16 overflow) out of JSON
        print(json.dumps(out))
        """
        let output = try runPython(script, [dir.path])
        let decoded = try JSONDecoder().decode([String: [String]].self, from: Data(output.utf8))
        #expect(decoded.mapValues { $0.map { Double($0) } } == expectedJSON.mapValues { $0.map { Optional($0) } })
        #expect(expectedJSON["F16"]?.last == .infinity)
    }

    /// Files written by the reference Python package read back here with the same values.
    @Test func weReadPythonFiles() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = """
        import json, sys, numpy as np
        from safetensors.numpy import save_file
        a = (np.arange(30, dtype=np.float32).reshape(5, 6) * 0.731 - 9.5)
        save_file({"a32": a, "a16": a.astype(np.float16), "i": np.array([[1, -2], [3, 1 << 35]], dtype=np.int64),
                   "i32": np.array([7, -8], dtype=np.int32)}, sys.argv[1], metadata={"k": "v"})
        print(json.dumps({"a32": [float(x) for x in a.reshape(-1)],
                          "a16": [float(x) for x in a.astype(np.float16).astype(np.float32).reshape(-1)]}))
        """
        let url = dir.appendingPathComponent("py.safetensors")
        let output = try runPython(script, [url.path])
        let expected = try JSONDecoder().decode([String: [Double]].self, from: Data(output.utf8))
        let file = try SafeTensorsFile(url: url)
        #expect(file.metadata == ["k": "v"])
        #expect(file.info("a32")?.shape == [5, 6])
        #expect(try file.floats("a32").map(Double.init) == expected["a32"])
        #expect(try file.floats("a16").map(Double.init) == expected["a16"])
        #expect(try file.integers("i") == [1, -2, 3, 1 << 35])
        #expect(try file.integers("i32") == [7, -8])
    }

    @Test func corruptFilesGiveClearErrors() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let cases: [(String, Data, String)] = [
            ("short", Data([1, 2, 3]), "not a safetensors file"),
            ("header longer than file", rawSafetensors(header: good, data: [], declaredLength: 1 << 20), "header length"),
            ("truncated data", rawSafetensors(header: good, data: [0, 0, 0, 0]), "truncated"),
            ("size lie", rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "needs 12 bytes"),
            ("unknown dtype", rawSafetensors(header: #"{"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "unsupported dtype Q4"),
            ("not json", rawSafetensors(header: "{nope", data: []), "not valid JSON"),
            ("overlap", rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "overlaps"),
            ("trailing bytes", rawSafetensors(header: good, data: [UInt8](repeating: 0, count: 12)), "tensors cover 8"),
            ("bad offsets", rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: [UInt8](repeating: 0, count: 8)), "invalid data_offsets"),
            // Hostile sizes (issue 18's probe): no trap, no allocation, one line.
            ("header length 2^63", rawSafetensors(header: good, data: [UInt8](repeating: 0, count: 8), declaredLength: 1 << 63), "header length"),
            ("header length 2^64-1", rawSafetensors(header: good, data: [UInt8](repeating: 0, count: 8), declaredLength: .max), "header length"),
            ("element bytes overflow", rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "needs more bytes than"),
            ("fractional shape", rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[1.9],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 4)), "invalid shape"),
            ("huge shape", rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[1e300],"data_offsets":[0,4]}}"#, data: [UInt8](repeating: 0, count: 4)), "invalid shape"),
            ("fractional offset", rawSafetensors(header: #"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}"#, data: [UInt8](repeating: 0, count: 4)), "invalid data_offsets"),
        ]
        for (name, bytes, message) in cases {
            let url = dir.appendingPathComponent(name + ".safetensors")
            try bytes.write(to: url)
            do {
                _ = try SafeTensorsFile(url: url)
                Issue.record("\(name): accepted")
            } catch let error as FormatError {
                #expect(error.message.contains(message), "\(name): \(error.message)")
                #expect(!error.message.contains("\n"))
            }
        }
        #expect(throws: FormatError.self) { try SafeTensorsFile(url: dir.appendingPathComponent("absent.safetensors")) }
    }

    /// Parameters save and load with HF names; shapes are checked against the config.
    @Test(arguments: [SafeTensorsDType.f32, .f16, .bf16])
    func parameterStoreRoundTrip(_ dtype: SafeTensorsDType) throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = tinyConfig(kvHeads: 2, tied: false)
        let params = randomParameters(config, seed: 9)
        try HFCheckpoint.save(config: config, parameters: params, directory: dir, dtype: dtype)
        let (loadedConfig, loaded) = try HFCheckpoint.load(directory: dir)
        #expect(loadedConfig == config)
        let expected = params.buffer.map {
            dtype == .f32 ? $0 : dtype == .f16 ? NumberFormats.f16ToFloat(NumberFormats.floatToF16($0))
                : NumberFormats.bf16ToFloat(NumberFormats.floatToBF16($0))
        }
        #expect(Array(loaded.buffer) == expected)
        let file = try SafeTensorsFile(url: dir.appendingPathComponent("model.safetensors"))
        #expect(file.info("lm_head.weight")?.shape == [config.vocabSize, config.hiddenSize])
        #expect(file.info("model.layers.1.self_attn.k_proj.weight")?.shape == [2 * config.headDim, config.hiddenSize])
        #expect(file.tensors.count == params.layout.tensors.count)
    }

    @Test func loadingChecksNamesAndShapes() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = tinyConfig()
        let url = dir.appendingPathComponent("m.safetensors")
        try randomParameters(config, seed: 1).save(to: url)
        // Tied config: no lm_head.weight in the file.
        #expect(try SafeTensorsFile(url: url).info("lm_head.weight") == nil)

        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "accepted" } catch { return "\(error)" }
        }
        // Another config: wrong shapes.
        let wider = tinyConfig(hidden: 16)
        #expect(message { try ParameterStore(config: wider).load(contentsOf: url) }.contains("has shape [23, 12], the config needs [23, 16]"))
        // Untied config: lm_head.weight missing.
        #expect(message { try ParameterStore(config: tinyConfig(tied: false)).load(contentsOf: url) }.contains("missing 1 tensor(s): lm_head.weight"))
        // Fewer layers: unexpected tensors, unless allowed.
        let shallow = tinyConfig(layers: 2)
        #expect(message { try ParameterStore(config: shallow).load(contentsOf: url) }.contains("unexpected tensor(s)"))
        #expect(message { try ParameterStore(config: shallow).load(contentsOf: url, allowUnexpected: true) } == "accepted")
    }
}
