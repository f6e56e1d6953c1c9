import Foundation
import Testing
import Gemma3Formats
import Gemma3Kernels
@testable import Gemma3Model
import Gemma3Tokenizers

/// A small Gemma 3 with every structural feature (GQA, sliding and full layers) over `vocab` tokens.
func tinyConfig(vocab: Int) -> Gemma3Config {
    var c = Gemma3Config(vocabSize: vocab, hiddenSize: 64, intermediateSize: 96, numHiddenLayers: 3,
                         numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 32, slidingWindow: 4,
                         layerTypes: [.slidingAttention, .fullAttention, .slidingAttention], maxPositionEmbeddings: 128)
    c.bosTokenId = 2
    return c
}

/// Random parameters; norm weights small and non-zero so that a wrong ±1 shows.
func tinyStore(_ config: Gemma3Config, seed: UInt64) -> ParameterStore {
    let store = ParameterStore(config: config)
    for (i, t) in store.layout.tensors.enumerated() {
        let v = randomFloats(t.count, seed: seed &+ UInt64(i), scale: t.isMatrix ? 0.3 : 0.2)
        let dst = store.view(t)
        for k in 0..<t.count { dst[k] = v[k] }
    }
    return store
}

@Suite("Gemma 3 models in GGUF files")
struct GGUFModelTests {
    @Test("export → GGUF → load: F32 gives the same logits as the parameter store; Q8_0 close; the config round-trips")
    func exportAndLoad() throws {
        let config = tinyConfig(vocab: 96)
        let store = tinyStore(config, seed: 42)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokens: [TokenID] = [2, 17, 5, 88, 40, 40, 3, 61, 9]
        let reference = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: store), maxContext: 32)
        _ = try reference.prefill(Array(tokens.dropLast()))
        let expected = Array(try reference.decode(tokens.last!))
        for (type, tolerance) in [(GGMLType.f32, Float(1e-5)), (.f16, 2e-2), (.q8_0, 5e-2)] {
            let url = dir.appendingPathComponent("tiny-\(type.name).gguf")
            try GGUFGemma3.writer(config: config, parameters: store, matrixType: type).write(to: url)
            let file = try GGUFFile(url: url)
            let loaded = try GGUFGemma3.config(from: file)
            #expect(loaded.layerTypes == config.layerTypes && loaded.slidingWindow == 4 && loaded.numKeyValueHeads == 2)
            #expect(loaded.ropeThetaSliding == 10_000 && loaded.ropeThetaFull == 1_000_000 && loaded.rmsNormEps == 1e-6)
            // Norms are stored with Gemma's +1.
            let stored = try file.floats(tensor: "blk.1.post_ffw_norm.weight")
            let original = store["model.layers.1.post_feedforward_layernorm.weight"]!
            #expect(zip(stored, original).allSatisfy { $0 == $1 + 1 })
            // Round trip to the float store: exact for F32 matrices; norms only lose the rounding of (w + 1) − 1.
            if type == .f32 {
                let back = try GGUFGemma3.parameters(from: file, config: loaded)
                for t in store.layout.tensors {
                    let d = zip(back.view(t), store.view(t)).map { abs($0 - $1) }.max()!
                    #expect(t.isMatrix ? d == 0 : d <= 1e-7, "\(t.name): \(d)")
                }
            }
            for widen in [false, true] {
                let engine = try InferenceEngine(weights: try GGUFGemma3.inferenceWeights(from: file, config: loaded, widenSmallBlocks: widen), maxContext: 32)
                _ = try engine.prefill(Array(tokens.dropLast()))
                let got = try engine.decode(tokens.last!)
                let err = zip(got, expected).map { abs($0 - $1) }.max()!
                #expect(err <= tolerance, "\(type.name): max |Δlogit| \(err)")
            }
        }
    }

    @Test("a hostile block_count (2^32 − 1, −1, 0) is a one-line error before any per-layer list is built")
    func hostileBlockCount() throws {
        let config = tinyConfig(vocab: 96)
        let store = tinyStore(config, seed: 1)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for value in [GGUFValue.uint32(.max), .int32(-1), .uint32(0), .uint64(1 << 40)] {
            var w = try GGUFGemma3.writer(config: config, parameters: store, matrixType: .f32)
            w.set("gemma3.block_count", value)
            let url = dir.appendingPathComponent("hostile.gguf")
            try w.write(to: url)
            do {
                _ = try GGUFGemma3.config(from: try GGUFFile(url: url))
                Issue.record("block_count \(value) accepted")
            } catch let e as FormatError {
                #expect(e.message.contains("block_count") && !e.message.contains("\n"), "\(e.message)")
            }
        }
    }

    @Test("Q4_0/Q5_0 widened to Q8_0 hold exactly the same values")
    func widening() throws {
        for type in [GGMLType.q4_0, .q5_0, .q4_K] {
            let rows = 9, cols = 256
            let v = randomFloats(rows * cols, seed: 77, scale: 1)
            let m = try v.withUnsafeBufferPointer { try QuantizedLinear(quantizing: $0, type: type, outFeatures: rows, inFeatures: cols) }
            let w = m.widenedToQ8_0()
            #expect(w.type == (type == .q4_K ? .q4_K : .q8_0))
            var a = [Float](repeating: 0, count: rows * cols), b = a
            a.withUnsafeMutableBufferPointer { m.dequantize(rows: 0..<rows, into: $0.baseAddress!) }
            b.withUnsafeMutableBufferPointer { w.dequantize(rows: 0..<rows, into: $0.baseAddress!) }
            #expect(a == b, "\(type.name)")
        }
    }

    @Test("Q8_0/Q5_0/Q4_0/Q4_K/Q6_K unpacked for decoding hold exactly the packed values and give the same products")
    func unpackedBlocks() throws {
        for type in [GGMLType.q8_0, .q5_0, .q4_0, .q4_K, .q6_K] {
            let rows = 7, cols = 512
            let v = randomFloats(rows * cols, seed: 91, scale: 2)
            let m = try v.withUnsafeBufferPointer { try QuantizedLinear(quantizing: $0, type: type, outFeatures: rows, inFeatures: cols) }
            let u = try #require(UnpackedBlockLinear(m))
            #expect(u.bytesPerBlock == (type == .q4_K || type == .q6_K ? 40 : 36))
            #expect(m.widenedForDecode() is UnpackedBlockLinear || ProcessInfo.processInfo.environment["GEMMA3_UNPACK"] == "0")
            var packedRow = [Float](repeating: 0, count: cols), unpackedRow = packedRow
            for r in 0..<rows {
                packedRow.withUnsafeMutableBufferPointer { m.dequantize(rows: r..<(r + 1), into: $0.baseAddress!) }
                unpackedRow.withUnsafeMutableBufferPointer { u.unpackedRow(r, into: $0.baseAddress!) }
                #expect(packedRow == unpackedRow, "\(type.name) row \(r)")
            }
            let x = randomFloats(cols, seed: 5, scale: 1)
            var exact = [Float](repeating: 0, count: rows), fused = exact, packedFused = exact
            x.withUnsafeBufferPointer { xb in
                m.with(activations: .float).gemv(rows: 0..<rows, x: xb.baseAddress!, y: &exact)
                u.gemv(rows: 0..<rows, x: xb.baseAddress!, y: &fused)
                m.gemv(rows: 0..<rows, x: xb.baseAddress!, y: &packedFused)
            }
            let scale = exact.map(abs).max()!
            for r in 0..<rows {
                #expect(abs(fused[r] - exact[r]) <= 1e-4 * scale, "\(type.name) row \(r): \(fused[r]) vs \(exact[r])")
                #expect(abs(fused[r] - packedFused[r]) <= 1e-4 * scale, "\(type.name) row \(r): unpacked \(fused[r]) vs packed kernel \(packedFused[r])")
            }
        }
        // The high-byte kernel's worst case: weights −128 (scale 1) against activations at −8191 after
        // quantization: 8 products of 32768 · 8191 per Int32 lane, just below 2³¹. Σ = 32 · 128 = 4096.
        var extreme: [UInt8] = [0x00, 0x3C] + [UInt8](repeating: 0x80, count: 32)
        extreme += extreme
        let worst = try #require(UnpackedBlockLinear(try QuantizedLinear(type: .q8_0, bytes: extreme, outFeatures: 1, inFeatures: 64)))
        var worstY: Float = 0
        [Float](repeating: -1, count: 64).withUnsafeBufferPointer { worst.gemv(rows: 0..<1, x: $0.baseAddress!, y: &worstY) }
        #expect(abs(worstY - 8192) <= 1e-3 * 8192, "\(worstY)")
        let f16 = try QuantizedLinear(type: .f16, bytes: [UInt8](repeating: 0, count: 64), outFeatures: 1, inFeatures: 32)
        #expect(UnpackedBlockLinear(f16) == nil)
        #expect(f16.widenedForDecode() is QuantizedLinear)
    }

    @Test("chat: Gemma's turn format, BOS once, the KV cache kept across turns")
    func chatTurns() throws {
        let vocabulary = SmallVocabulary()
        let tokenizer = try vocabulary.tokenizer()
        let config = tinyConfig(vocab: vocabulary.pieces.count)
        let engine = try InferenceEngine(weights: try InferenceWeights(config: config, parameters: tinyStore(config, seed: 3)), maxContext: 128)
        let chat = try GemmaChatSession(engine: engine, tokenizer: tokenizer)
        let sot = vocabulary["<start_of_turn>"], eot = vocabulary["<end_of_turn>"], nl = vocabulary["\n"]
        let first = chat.turnTokens("ab")
        let expectedFirst = [2, sot] + tokenizer.encode("user", addBOS: false) + [nl, vocabulary["ab"], eot, nl, sot]
            + tokenizer.encode("model", addBOS: false) + [nl]
        #expect(first == expectedFirst)
        let options = GenerationOptions(maxNewTokens: 3, sampling: .greedy)
        let r1 = try chat.reply(to: "ab", options: options)
        #expect(r1.promptIds == first)
        // Each generated token that is not a stop token is in the cache.
        let kept = r1.generatedIds.filter { $0 != eot && $0 != 1 }
        #expect(engine.position == first.count + kept.count)
        #expect(chat.history == first + kept)
        // The next turn closes the previous one; no second BOS.
        let second = chat.turnTokens("c")
        #expect(second.first == eot)
        #expect(!second.contains(2))
        let before = engine.position
        _ = try chat.reply(to: "c", options: options)
        #expect(engine.position > before + second.count - 1)
    }
}
