import Foundation
import Testing
import Gemma3Formats
import Gemma3Kernels
@testable import Gemma3Model

@Suite("Real Gemma 3 270M GGUF (when present)")
struct RealModelTests {
    @Test("metadata maps to the Gemma 3 270M configuration; every tensor is present with its type")
    func configuration() throws {
        guard let path = realModelPath else {
            notice("real model not found (GEMMA3_GGUF or ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf): skipped the real-file configuration test")
            return
        }
        let file = try GGUFFile(path: path)
        #expect(file.version == 3)
        #expect(file.tensors.count == 236)
        let c = try GGUFGemma3.config(from: file)
        #expect(c.vocabSize == 262_144 && c.hiddenSize == 640 && c.intermediateSize == 2048)
        #expect(c.numHiddenLayers == 18 && c.numAttentionHeads == 4 && c.numKeyValueHeads == 1 && c.headDim == 256)
        #expect(c.slidingWindow == 512 && c.maxPositionEmbeddings == 32768)
        #expect(c.layerTypes.enumerated().filter { $0.element == .fullAttention }.map(\.offset) == [5, 11, 17])
        #expect(c.ropeThetaFull == 1_000_000 && c.ropeThetaSliding == 10_000)
        #expect(c.rmsNormEps == 1e-6 && c.queryPreAttnScalar == 256 && c.tieWordEmbeddings)
        #expect(c.bosTokenId == 2 && c.eosTokenIds == [1, 106])
        #expect(GGUFGemma3.formatName(of: file) == "Q4_K_M")
        // Every parameter of the HF layout has a GGUF tensor of the transposed shape, and back.
        for t in ParameterLayout(config: c).tensors {
            let name = try #require(GGUFGemma3.ggufName(forHuggingFace: t.name))
            #expect(GGUFGemma3.huggingFaceName(forGGUF: name) == t.name)
            let info = try #require(file.tensor(named: name))
            #expect(info.dimensions == Array(t.shape.reversed()), "\(name)")
            #expect(info.type?.hasKernels == true, "\(name): \(info.typeName)")
        }
        // Stored norms include Gemma's +1: the loader's (1 + w) weights are the stored values − 1.
        let weights = try GGUFGemma3.inferenceWeights(from: file, config: c)
        let stored = try file.floats(tensor: "blk.3.ffn_norm.weight")
        #expect(zip(weights.layers[3].preFeedforwardNorm, stored).allSatisfy { $0 + 1 == $1 })
    }

    @Test("dequantized real tensors (Q8_0, Q5_0, Q4_K, Q6_K, F32) equal gguf-py's; quantized GEMV matches float")
    func dequantizeAgainstGGUFPy() throws {
        guard let path = realModelPath else {
            notice("real model not found: skipped the real-tensor dequantization comparison")
            return
        }
        let file = try GGUFFile(path: path)
        let names = ["blk.0.attn_v.weight", "blk.0.attn_q.weight", "blk.0.attn_output.weight", "blk.0.ffn_down.weight",
                     "blk.5.ffn_down.weight", "blk.0.attn_norm.weight"]
        var seen = Set<String>()
        for name in names { seen.insert(file.tensor(named: name)!.typeName) }
        #expect(seen == ["Q8_0", "Q5_0", "Q4_K", "Q6_K", "F32"])
        // Quantized products on real weights agree with float arithmetic on the same weights.
        let x = randomFloats(2048, seed: 21, scale: 3)
        for name in names.dropLast() {
            let w = try file.linear(named: name)
            var ref = [Float](repeating: 0, count: w.outFeatures), y = ref
            x.withUnsafeBufferPointer { xb in
                ref.withUnsafeMutableBufferPointer { Linear.gemv(w.with(activations: .float), x: xb.baseAddress!, y: $0.baseAddress!) }
                y.withUnsafeMutableBufferPointer { Linear.gemv(w, x: xb.baseAddress!, y: $0.baseAddress!) }
            }
            let scale = ref.map { abs($0) }.max()!
            let err = zip(y, ref).map { abs($0 - $1) }.max()!
            #expect(err <= 1e-4 * scale, "\(name): \(err) of \(scale)")
            // The unpacked decode form: 14-bit activations, a 4× coarser step than the packed kernels' 16 bits.
            let unpacked = try #require(UnpackedBlockLinear(w))
            x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { Linear.gemv(unpacked, x: xb.baseAddress!, y: $0.baseAddress!) } }
            let unpackedErr = zip(y, ref).map { abs($0 - $1) }.max()!
            #expect(unpackedErr <= 4e-4 * scale, "\(name) unpacked: \(unpackedErr) of \(scale)")
        }
        guard ggufPyDirectory != nil else {
            notice("gguf-py not found (LLAMA_CPP_DIR): skipped the comparison of real-tensor dequantization with llama.cpp's Python implementation")
            return
        }
        // gguf-py's GGUFReader takes ~30 s on the 262144-entry vocabulary, so the script is given each
        // tensor's byte range (our reader's offsets; gguf-py reading our own files is tested elsewhere)
        // and only its dequantizer runs.
        let script = """
        import sys, numpy as np
        from gguf.quants import dequantize
        from gguf.constants import GGMLQuantizationType as T
        for spec in sys.argv[2:]:
            offset, count, type_name, rows, cols = spec.split(":")
            raw = np.fromfile(sys.argv[1], dtype=np.uint8, count=int(count), offset=int(offset))
            if type_name == "F32":
                v = raw.view(np.float32)
            else:
                v = dequantize(raw.reshape(int(rows), -1), T[type_name])
            sys.stdout.buffer.write(v.astype(np.float32).ravel().tobytes())
        """
        let ordered = names
        let specs = try ordered.map { name -> String in
            let info = file.tensor(named: name)!
            return "\(file.dataOffset + info.offset):\(try file.data(of: info).count):\(info.typeName):\(info.rows):\(info.columns)"
        }
        let r = try run("/usr/bin/env", ["python3", "-c", script, path] + specs, environment: ["PYTHONPATH": ggufPyDirectory!])
        #expect(r.status == 0, "\(String(decoding: r.stderr, as: UTF8.self).suffix(1000))")
        var theirs = [Float](repeating: 0, count: r.stdout.count / 4)
        _ = theirs.withUnsafeMutableBytes { r.stdout.copyBytes(to: $0) }
        var offset = 0
        for name in ordered {
            let ours = try file.floats(tensor: name)
            let slice = theirs[offset..<(offset + ours.count)]
            offset += ours.count
            var maxDiff: Float = 0, scale: Float = 0
            for (a, b) in zip(ours, slice) { maxDiff = max(maxDiff, abs(a - b)); scale = max(scale, abs(b)) }
            #expect(maxDiff <= scale * 1e-6, "\(name): max difference \(maxDiff) (scale \(scale))")
        }
        #expect(offset == theirs.count)
    }
}
