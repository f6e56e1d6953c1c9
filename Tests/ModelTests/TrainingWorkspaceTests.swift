import Testing
import Gemma3Kernels
import Gemma3Model

/// The training model's workspace: one block whose size is the sum of its regions, each rounded up
/// to 16 floats, recomputed here from the shapes (training keeps every layer, evaluation one).
@Suite struct TrainingWorkspaceTests {
    @Test(arguments: [true, false])
    func workspaceSizeIsTheSumOfItsRegions(training: Bool) throws {
        let c = tinyConfig(kvHeads: 2, layers: 3)
        let (B, T) = (2, 7)
        let N = B * T, H = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize, L = c.numHiddenLayers
        let nh = c.numAttentionHeads, nkv = c.numKeyValueHeads, hd = c.headDim
        let q = nh * hd, qkv = q + 2 * nkv * hd, qk = q + nkv * hd
        let workers = max(1, Parallel.threadCount)
        func padded(_ sizes: [Int]) -> Int { sizes.map { ($0 + 15) & ~15 }.reduce(0, +) }
        let layer = padded([N * H, N, N * qkv, N * (nh + nkv), N * qk, B * nh * T * T, N * q, N * H, N]
                           + (training ? [N * H] : []) + [N * H, N, N * 2 * I, N * I, N * H, N])
        let resid = padded(Array(repeating: N * H, count: training ? L + 1 : 1))
        let head = padded([N * H, N, N * V, N, N]) + padded(Array(repeating: T * hd / 2, count: 4))
        let backward = training
            ? padded([N * H, N * H, N * H, N * I, N * 2 * I, N * q, N * qkv, N * qk, B * nh * T * T, B * nh * T * hd,
                      B * nh * T * hd, 4 * workers * ((max(H, hd) + 15) & ~15)])
            : 0
        let floats = (training ? L : 1) * layer + resid + head + backward
        let model = try Gemma3TrainingModel(config: c, batchSize: B, sequenceLength: T, training: training)
        #expect(model.workspaceBytes == 4 * max(16, floats) + 8 * N)
    }
}
