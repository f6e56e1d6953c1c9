import Foundation
import Gemma3TestSupport
import Testing
import Gemma3Formats
import Gemma3Kernels
@testable import Gemma3Model
import Gemma3Tokenizers

/// Runs `executable args…` with stdout and stderr sent to files, through a small Python parent that
/// forks it and reports its wait status and peak resident memory. (Spawned straight from this test
/// process, a child's ru_maxrss starts at this process's own high-water mark, which Linux carries
/// across exec: 2.5 GB after the suites before it.)
private func runMeasured(_ executable: String, _ args: [String], in dir: URL)
    throws -> (exited: Bool, status: Int32, signal: Int32, stderr: String, peakKB: Int) {
    let outPath = dir.appendingPathComponent("stdout").path, errPath = dir.appendingPathComponent("stderr").path
    let reportPath = dir.appendingPathComponent("rusage").path
    let parent = """
    import os, resource, sys
    report, out, err = sys.argv[1:4]
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        os.execv(sys.argv[4], sys.argv[4:])
    _, status, usage = os.wait4(pid, 0)
    open(report, "w").write(f"{status} {usage.ru_maxrss}")
    """
    let r = try run("/usr/bin/env", ["python3", "-c", parent, reportPath, outPath, errPath, executable] + args)
    guard r.status == 0, let fields = try? String(contentsOfFile: reportPath, encoding: .utf8).split(separator: " "),
          fields.count == 2, let status = Int32(fields[0]), let peak = Int(fields[1]) else {
        throw TestFailure("the measuring parent failed: \(String(decoding: r.stderr, as: UTF8.self).suffix(500))")
    }
    let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "<stderr not UTF-8>"
    let exited = status & 0x7f == 0
    return (exited, exited ? (status >> 8) & 0xff : 0, exited ? 0 : status & 0x7f, stderr, peak)
}

/// One hostile variant of a valid file: what was done to it, and its bytes.
private struct HostileFile {
    let what: String
    let bytes: [UInt8]
    /// A legal but extreme value (a long context): loading may succeed, but within the same limits.
    var mayLoad = false
    /// The edit breaks what the tokenizer commands read too (a GGUF's header and metadata).
    var breaksTokenizer = false
}

private func littleEndian<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

private func replacing(_ bytes: [UInt8], at offset: Int, with new: [UInt8]) -> [UInt8] {
    var b = bytes
    b.replaceSubrange(offset..<(offset + new.count), with: new)
    return b
}

private func offset(of needle: [UInt8], in haystack: [UInt8], after start: Int = 0) -> Int? {
    guard needle.count <= haystack.count else { return nil }
    var i = start
    while i + needle.count <= haystack.count {
        if haystack[i] == needle[0] && Array(haystack[i..<(i + needle.count)]) == needle { return i }
        i += 1
    }
    return nil
}

/// Hostile GGUF files made from a valid one: truncated at every section boundary, counts and
/// lengths at their type's maximum, offsets past the end, overlapping and misaligned tensors, and
/// NaN/Inf in float metadata.
private func hostileGGUFs(from valid: [UInt8]) throws -> [HostileFile] {
    let file = try GGUFFile(bytes: valid)
    var out: [HostileFile] = []
    // Sections: magic, version, tensor count, key-value count, metadata, tensor infos, data.
    let firstTensor = file.tensors[0], secondTensor = file.tensors[1]
    let firstName = offset(of: Array(firstTensor.name.utf8), in: valid, after: 24)!
    let tensorInfoStart = firstName - 8
    // The tensor-info entry: name length, name, n_dims (u32), dims (u64 each), type (u32), offset (u64).
    func infoOffsetField(_ info: GGUFTensorInfo) -> Int {
        let name = offset(of: littleEndian(UInt64(info.name.utf8.count)) + Array(info.name.utf8), in: valid, after: tensorInfoStart)!
        return name + 8 + info.name.utf8.count + 4 + 8 * info.dimensions.count + 4
    }
    let firstOffsetField = infoOffsetField(firstTensor), secondOffsetField = infoOffsetField(secondTensor)
    for cut in [0, 3, 4, 8, 16, 24, 30, tensorInfoStart - 1, tensorInfoStart, tensorInfoStart + 5, firstOffsetField,
                file.dataOffset - 1, file.dataOffset, file.dataOffset + 100, valid.count - 1] {
        out.append(HostileFile(what: "truncated at byte \(cut) of \(valid.count)", bytes: Array(valid.prefix(cut)), breaksTokenizer: cut <= tensorInfoStart))
    }
    out.append(HostileFile(what: "version 0xFFFFFFFF", bytes: replacing(valid, at: 4, with: littleEndian(UInt32.max)), breaksTokenizer: true))
    out.append(HostileFile(what: "tensor count 2^64−1", bytes: replacing(valid, at: 8, with: littleEndian(UInt64.max)), breaksTokenizer: true))
    out.append(HostileFile(what: "tensor count 2^63", bytes: replacing(valid, at: 8, with: littleEndian(UInt64(1) << 63)), breaksTokenizer: true))
    out.append(HostileFile(what: "key-value count 2^64−1", bytes: replacing(valid, at: 16, with: littleEndian(UInt64.max)), breaksTokenizer: true))
    out.append(HostileFile(what: "first key length 2^64−1", bytes: replacing(valid, at: 24, with: littleEndian(UInt64.max)), breaksTokenizer: true))
    out.append(HostileFile(what: "first key length 2^62", bytes: replacing(valid, at: 24, with: littleEndian(UInt64(1) << 62)), breaksTokenizer: true))
    out.append(HostileFile(what: "first tensor name length 2^64−1", bytes: replacing(valid, at: tensorInfoStart, with: littleEndian(UInt64.max))))
    let dimsField = firstName + firstTensor.name.utf8.count
    out.append(HostileFile(what: "first tensor n_dims 0xFFFFFFFF", bytes: replacing(valid, at: dimsField, with: littleEndian(UInt32.max))))
    out.append(HostileFile(what: "first tensor dimension 2^63−1", bytes: replacing(valid, at: dimsField + 4, with: littleEndian(UInt64(Int64.max)))))
    out.append(HostileFile(what: "first tensor dimension 2^40−1 (byte range overflows)", bytes: replacing(valid, at: dimsField + 4, with: littleEndian(UInt64(1 << 40) - 1))))
    out.append(HostileFile(what: "first tensor type 0xFFFFFFFF", bytes: replacing(valid, at: firstOffsetField - 4, with: littleEndian(UInt32.max))))
    out.append(HostileFile(what: "first tensor offset 2^64−1", bytes: replacing(valid, at: firstOffsetField, with: littleEndian(UInt64.max))))
    out.append(HostileFile(what: "first tensor offset past the end", bytes: replacing(valid, at: firstOffsetField, with: littleEndian(UInt64(valid.count)))))
    out.append(HostileFile(what: "second tensor overlapping the first",
                           bytes: replacing(valid, at: secondOffsetField, with: littleEndian(UInt64(firstTensor.offset)))))
    out.append(HostileFile(what: "first tensor misaligned (offset + 1)",
                           bytes: replacing(valid, at: firstOffsetField, with: littleEndian(UInt64(firstTensor.offset + 1)))))
    // Float metadata: the key, its type (f32 = 6), then the value.
    for key in ["gemma3.attention.layer_norm_rms_epsilon", "gemma3.rope.freq_base"] {
        guard let k = offset(of: littleEndian(UInt64(key.utf8.count)) + Array(key.utf8), in: valid) else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "\(key) not in the test GGUF"])
        }
        let valueAt = k + 8 + key.utf8.count + 4
        #expect(Array(valid[(valueAt - 4)..<valueAt]) == littleEndian(UInt32(6)), "\(key) is not f32")
        for (name, v) in [("NaN", Float.nan), ("+Inf", Float.infinity), ("−Inf", -Float.infinity)] {
            out.append(HostileFile(what: "\(key) = \(name)", bytes: replacing(valid, at: valueAt, with: littleEndian(v.bitPattern))))
        }
    }
    return out
}

/// Hostile model.safetensors files made from a valid one.
private func hostileSafeTensors(from valid: [UInt8]) throws -> [HostileFile] {
    let headerLength = Int(valid[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
    let header = String(decoding: valid[8..<(8 + headerLength)], as: UTF8.self)
    let data = Array(valid[(8 + headerLength)...])
    /// The file with `edit` applied to the header JSON (re-encoded with its new length).
    func withHeader(_ edit: (String) -> String) -> [UInt8] {
        let h = Array(edit(header).utf8)
        return littleEndian(UInt64(h.count)) + h + data
    }
    var out: [HostileFile] = []
    for cut in [0, 7, 8, 9, 8 + headerLength / 2, 8 + headerLength - 1, 8 + headerLength, 8 + headerLength + data.count / 2, valid.count - 1] {
        out.append(HostileFile(what: "truncated at byte \(cut) of \(valid.count)", bytes: Array(valid.prefix(cut))))
    }
    out.append(HostileFile(what: "header length 2^64−1", bytes: replacing(valid, at: 0, with: littleEndian(UInt64.max))))
    out.append(HostileFile(what: "header length 2^63", bytes: replacing(valid, at: 0, with: littleEndian(UInt64(1) << 63))))
    out.append(HostileFile(what: "header length past the end", bytes: replacing(valid, at: 0, with: littleEndian(UInt64(valid.count)))))
    // The first data_offsets pair and the first shape in the header.
    let offsets = try #require(header.range(of: #""data_offsets":\[[0-9]+,[0-9]+\]"#, options: .regularExpression))
    let shape = try #require(header.range(of: #""shape":\[[0-9]+"#, options: .regularExpression))
    func replaceOffsets(_ s: String) -> (String) -> String { { h in h.replacingCharacters(in: offsets, with: #""data_offsets":"# + s) } }
    func replaceShape(_ s: String) -> (String) -> String { { h in h.replacingCharacters(in: shape, with: #""shape":["# + s) } }
    out.append(HostileFile(what: "offsets past the end", bytes: withHeader(replaceOffsets("[\(data.count),\(data.count + 256)]"))))
    out.append(HostileFile(what: "offsets at 2^64−1", bytes: withHeader(replaceOffsets("[18446744073709551615,18446744073709551615]"))))
    out.append(HostileFile(what: "offsets reversed", bytes: withHeader(replaceOffsets("[256,0]"))))
    out.append(HostileFile(what: "offsets overlapping the next tensor", bytes: withHeader(replaceOffsets("[4,\(4 + 256)]"))))
    out.append(HostileFile(what: "shape 2^61 (element bytes overflow)", bytes: withHeader(replaceShape("2305843009213693952"))))
    out.append(HostileFile(what: "shape 2^64 (not an Int)", bytes: withHeader(replaceShape("18446744073709551616"))))
    out.append(HostileFile(what: "shape -1", bytes: withHeader(replaceShape("-1"))))
    out.append(HostileFile(what: "shape 50257.9", bytes: withHeader(replaceShape("50257.9"))))
    out.append(HostileFile(what: "shape 1e300", bytes: withHeader(replaceShape("1e300"))))
    out.append(HostileFile(what: "dtype unknown", bytes: withHeader { $0.replacingOccurrences(of: #""dtype":"F32""#, with: #""dtype":"F7""#) }))
    out.append(HostileFile(what: "header nested 100000 deep", bytes: withHeader { _ in String(repeating: "[", count: 100_000) }))
    out.append(HostileFile(what: "header not JSON", bytes: withHeader { String($0.dropLast()) }))
    return out
}

/// Hostile config.json files made from a valid one (each sets one key).
private func hostileConfigs(from valid: [UInt8]) throws -> [HostileFile] {
    let object = try #require(try JSONSerialization.jsonObject(with: Data(valid)) as? [String: Any])
    var out: [HostileFile] = []
    for (key, value) in [("num_hidden_layers", "1000000000"), ("num_hidden_layers", "-1"), ("hidden_size", "1e15"), ("hidden_size", "1000000000"),
                         ("hidden_size", "10000"), ("vocab_size", "9223372036854775807"), ("sliding_window", "16777216"),
                         ("max_position_embeddings", "2097152"), ("num_attention_heads", "0"), ("head_dim", "-4"),
                         ("rms_norm_eps", "1e999"), ("rope_theta", "\"fast\""), ("layer_types", "[\"sliding_attention\"]"),
                         ("intermediate_size", "1.5")] {
        var edited = object
        edited.removeValue(forKey: key)
        var text = String(decoding: try JSONSerialization.data(withJSONObject: edited, options: [.sortedKeys]), as: UTF8.self)
        text.removeLast()
        text += ",\"\(key)\":\(value)}"
        if key == "num_hidden_layers" { text = text.replacingOccurrences(of: #""layer_types":\[[^\]]*\],"#, with: "", options: .regularExpression) }
        // A long context or window is legal: it must not allocate for positions never used.
        let legal = key == "max_position_embeddings" || key == "sliding_window"
        out.append(HostileFile(what: "\(key): \(value)", bytes: Array(text.utf8), mayLoad: legal))
    }
    out.append(HostileFile(what: "truncated", bytes: Array(valid.prefix(valid.count / 2))))
    out.append(HostileFile(what: "invalid UTF-8", bytes: [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]))
    return out
}

/// Hostile tokenizer.json files made from a valid one.
private func hostileTokenizers(from valid: [UInt8]) -> [HostileFile] {
    let text = String(decoding: valid, as: UTF8.self)
    return [
        HostileFile(what: "truncated", bytes: Array(valid.prefix(valid.count / 2))),
        HostileFile(what: "empty", bytes: []),
        HostileFile(what: "vocab replaced by a number", bytes: Array(text.replacingOccurrences(of: #""vocab":"#, with: #""vocab":1,"x":"#).utf8)),
        HostileFile(what: "arrays nested 100000 deep", bytes: Array((String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)).utf8)),
        HostileFile(what: "invalid UTF-8", bytes: Array(valid.prefix(40)) + [0xC3, 0x28] + Array(valid.dropFirst(40))),
    ]
}

@Suite("hostile model files through every loader of the command line (issue 18)", .serialized)
struct HostileFilesCommandLineTests {
    /// The commands that load a whole model (weights, config, tokenizer), `MODEL` standing for its path.
    static let modelLoaders: [[String]] = [
        ["generate", "--model", "MODEL", "--prompt", "Once", "--max-new-tokens", "2"],
        ["eval", "--model", "MODEL", "--text", "TEXT", "--context", "8"],
        ["convert", "MODEL", "OUT"],
    ]
    /// And those that load only a tokenizer (of a GGUF's metadata or a directory's tokenizer.json).
    static let tokenizerLoaders: [[String]] = [
        ["tokenize", "--model", "MODEL", "Once upon a time"],
        ["detokenize", "--model", "MODEL", "2", "10", "11"],
    ]

    /// Runs each of `loaders` on `file`: a failure must exit 1 or 2 with one line on stderr (never a
    /// signal), and every run stays under 200 MB. Returns the largest peak, in KB.
    private func expectCleanFailures(_ file: HostileFile, model: String, what: String, loaders: [[String]], dir: URL, text: String) throws -> Int {
        let executable = try gemma3Executable().path
        var maxPeak = 0
        for loader in loaders {
            // Convert goes the other way from what the model is (GGUF → directory, directory → GGUF).
            let out = dir.appendingPathComponent("out-\(UUID().uuidString)").path
            let target = model.hasSuffix(".gguf") ? out : out + ".gguf"
            let args = loader.map { $0 == "MODEL" ? model : $0 == "TEXT" ? text : $0 == "OUT" ? target : $0 }
            let r = try runMeasured(executable, args, in: dir)
            let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
            let loaded = r.exited && r.status == 0 && file.mayLoad
            #expect(loaded || (r.exited && (r.status == 1 || r.status == 2)),
                    "\(what) — gemma3 \(loader[0]): \(r.exited ? "exit \(r.status)" : "signal \(r.signal)"): \(r.stderr.prefix(600))")
            #expect(loaded || lines.count == 1, "\(what) — gemma3 \(loader[0]): \(lines.count) stderr lines: \(r.stderr.prefix(600))")
            #expect(r.peakKB < 200 * 1024, "\(what) — gemma3 \(loader[0]): peak \(r.peakKB / 1024) MB")
            maxPeak = max(maxPeak, r.peakKB)
            try? FileManager.default.removeItem(atPath: target)
        }
        return maxPeak
    }

    @Test("hostile GGUF files, safetensors, config.json and tokenizer.json: exit 1–2, one stderr line, under 200 MB")
    func hostileModelFiles() throws {
        let vocabulary = OrderedGemmaVocabulary()
        let tokenizer = try vocabulary.tokenizer()
        let config = tinyConfig(vocab: vocabulary.pieces.count)
        let store = tinyStore(config, seed: 11)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let validGGUF = dir.appendingPathComponent("valid.gguf")
        try GGUFGemma3.writer(config: config, parameters: store, matrixType: .f32, tokenizer: tokenizer).write(to: validGGUF)
        let text = dir.appendingPathComponent("text.txt")
        try Data("Once upon a time there was a cat.".utf8).write(to: text)
        let hf = dir.appendingPathComponent("hf")
        let executable = try gemma3Executable().path
        let converted = try runMeasured(executable, ["convert", validGGUF.path, hf.path, "--type", "f32"], in: dir)
        try #require(converted.exited && converted.status == 0, "\(converted.stderr)")
        // The valid files load: the failures below are the edits'.
        for model in [validGGUF.path, hf.path] {
            let r = try runMeasured(executable, ["generate", "--model", model, "--prompt", "Once", "--max-new-tokens", "2"], in: dir)
            try #require(r.exited && r.status == 0, "\(model): \(r.stderr)")
        }

        var cases = 0, maxPeak = 0
        let gguf = try [UInt8](Data(contentsOf: validGGUF))
        for hostile in try hostileGGUFs(from: gguf) {
            let path = dir.appendingPathComponent("hostile.gguf")
            try Data(hostile.bytes).write(to: path)
            // The tokenizer commands read only the metadata: the tensor-table and data edits are not theirs.
            let loaders = Self.modelLoaders + (hostile.breaksTokenizer ? Self.tokenizerLoaders : [])
            maxPeak = max(maxPeak, try expectCleanFailures(hostile, model: path.path, what: "GGUF \(hostile.what)", loaders: loaders,
                                                           dir: dir, text: text.path))
            cases += 1
        }
        // Directory cases: a copy of the valid directory with one file replaced.
        for (file, variants) in [("model.safetensors", try hostileSafeTensors(from: try [UInt8](Data(contentsOf: hf.appendingPathComponent("model.safetensors"))))),
                                 ("config.json", try hostileConfigs(from: try [UInt8](Data(contentsOf: hf.appendingPathComponent("config.json"))))),
                                 ("tokenizer.json", hostileTokenizers(from: try [UInt8](Data(contentsOf: hf.appendingPathComponent("tokenizer.json")))))] {
            for hostile in variants {
                let copy = dir.appendingPathComponent("hostile-dir")
                try? FileManager.default.removeItem(at: copy)
                try FileManager.default.copyItem(at: hf, to: copy)
                try Data(hostile.bytes).write(to: copy.appendingPathComponent(file))
                let loaders = file == "tokenizer.json" ? Self.modelLoaders + Self.tokenizerLoaders : Self.modelLoaders
                maxPeak = max(maxPeak, try expectCleanFailures(hostile, model: copy.path, what: "\(file) \(hostile.what)", loaders: loaders,
                                                               dir: dir, text: text.path))
                cases += 1
            }
        }
        // A directory without its weights or config.
        for missing in ["model.safetensors", "config.json"] {
            let copy = dir.appendingPathComponent("hostile-dir")
            try? FileManager.default.removeItem(at: copy)
            try FileManager.default.copyItem(at: hf, to: copy)
            try FileManager.default.removeItem(at: copy.appendingPathComponent(missing))
            maxPeak = max(maxPeak, try expectCleanFailures(HostileFile(what: "", bytes: []), model: copy.path, what: "directory without \(missing)",
                                                           loaders: Self.modelLoaders, dir: dir, text: text.path))
            cases += 1
        }
        print("hostile model files: \(cases) files through \(Self.modelLoaders.count + Self.tokenizerLoaders.count) commands, peak memory at most \(maxPeak / 1024) MB")
        #expect(cases > 80)
    }
}
