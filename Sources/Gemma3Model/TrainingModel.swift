import Foundation
import Gemma3Kernels
#if canImport(Glibc)
import Glibc
#endif

/// A usage error of the model API (wrong input length, token id out of range, …), one line.
public struct Gemma3ModelError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Where a training step spends its time (for `bench train`).
public enum StepPhase: Int, CaseIterable, Sendable {
    /// Token lookup and its gradient scatter.
    case embedding
    /// q/k/v/o projections, QK-norm, RoPE, scores, softmax, weighted values (forward and backward).
    case attention
    /// gate/up/down projections and GeGLU.
    case mlp
    /// The four per-block RMSNorms with their residual adds, and the final norm.
    case norms
    /// LM head matmuls and cross-entropy.
    case head
    /// Rounding the weights to bfloat16 for the products (bf16 only; once per optimizer step).
    case weightCast

    public var name: String {
        switch self {
        case .embedding: "embedding"
        case .attention: "attention"
        case .mlp: "mlp"
        case .norms: "norms"
        case .head: "lm_head_ce"
        case .weightCast: "bf16_weight_cast"
        }
    }
}

/// The Gemma 3 causal LM for a fixed batch shape [batchSize, sequenceLength], with an explicit,
/// llm.c-style forward and backward pass on the CPU, matching Hugging Face `Gemma3ForCausalLM` in float32.
///
/// All activations, per-layer saved tensors and backward scratch live in one workspace allocated at
/// init and reused by every step. A model made with `training: false` keeps one layer's activations
/// (enough for the loss/logits) and has no gradients.
///
/// Typical training step:
/// ```
/// model.zeroGradients()
/// let loss = try model.forward(inputs: x, targets: y)   // [B·T] token ids each; y uses ignoreIndex to skip
/// model.backward()                                       // accumulates d loss / d θ into model.gradients
/// ```
/// Threading: matrix products are split over `Parallel` workers with single-threaded OpenBLAS
/// (`forward`/`backward` set `BLAS.setThreads(1)`); everything else is split over rows, so only one thread
/// pool is ever busy. `RuntimeSettings.gemmThreading = .openBLAS` instead lets OpenBLAS thread each product itself (for A/B timing).
public final class Gemma3TrainingModel {
    public let config: Gemma3Config
    public let batchSize: Int
    public let sequenceLength: Int
    /// True when activations are kept for `backward`.
    public let isTraining: Bool
    /// Weights (HF names/order). May be shared with other models of the same config.
    public let parameters: ParameterStore
    /// d loss / d parameters, accumulated by `backward` until `zeroGradients`. nil for an evaluation model,
    /// and under LoRA (the base weights are frozen).
    public let gradients: ParameterStore?
    /// A LoRA adapter trained (or applied) on top of frozen base weights: each adapted projection adds
    /// s·(x·Aᵀ)·Bᵀ to its output. Shared, not copied.
    public let lora: LoRAWeights?
    /// d loss / d LoRA factors (training models with `lora`).
    public let loraGradients: ParameterStore?
    /// Seed of the LoRA dropout masks of the next forward (the trainer sets it per micro-batch, so a
    /// resumed run draws the same masks).
    public var loraDropoutSeed: UInt64 = 0
    /// What the optimizer updates: the LoRA factors under LoRA, else every weight.
    public var trainableParameters: ParameterStore { lora?.parameters ?? parameters }
    /// The gradients of `trainableParameters` (nil for an evaluation model).
    public var trainableGradients: ParameterStore? { lora == nil ? gradients : loraGradients }
    /// Target id that contributes no loss (HF: -100).
    public var ignoreIndex: Int32 = -100
    /// When true, `phaseSeconds` accumulates wall time per `StepPhase`.
    public var profiling = false
    /// Wall seconds per `StepPhase` since the last `resetProfile()` (indexed by `StepPhase.rawValue`).
    public private(set) var phaseSeconds = [Double](repeating: 0, count: StepPhase.allCases.count)
    /// Process CPU seconds (all threads) per `StepPhase`: on a shared machine, CPU / wall shows how many cores a phase got.
    public private(set) var phaseCPUSeconds = [Double](repeating: 0, count: StepPhase.allCases.count)
    private var cpuMark = 0.0
    /// Whether a training model keeps the logits readable after a forward with targets. When false (the
    /// default), that forward also turns each logits row into its cross-entropy gradient while the row is
    /// in cache (one exp per logit, one pass less over the B·T·V buffer), and `logits` then holds that
    /// gradient — of the targeted rows only, packed at the front, when some rows have no target (the head
    /// is then multiplied on those rows alone). Evaluation models and forwards without targets always keep
    /// the logits.
    public var keepsLogits = false
    private var gradientInLogits = false
    /// After a training forward that multiplied the head on the targeted rows only: those rows, in
    /// order (their logits and targets are packed at the front of the buffers); nil when all N were.
    private var headRows: [Int]?
    /// The loss of the last forward with targets.
    public private(set) var lastLoss: Float = .nan
    /// Number of targets that counted in the last loss (not `ignoreIndex`).
    public private(set) var lastTargetCount = 0

    // Shapes.
    let B: Int, T: Int, N: Int, H: Int, I: Int, V: Int, L: Int
    let nh: Int, nkv: Int, hd: Int, qDim: Int, kvDim: Int, qkvDim: Int, qkDim: Int, group: Int
    let eps: Float, attnScale: Float, embedScale: Float
    let workers: Int

    // Workspace.
    private let arena: UnsafeMutablePointer<Float>
    private let arenaCount: Int
    private let tokens: UnsafeMutablePointer<Int32>
    private let targets: UnsafeMutablePointer<Int32>
    private var hasTargets = false
    private var forwardDone = false
    /// The named regions of `arena`.
    private let workspace: TrainingWorkspace

    /// The precision of the products' inputs (`ProductPrecision`); everything else is float32.
    public let productPrecision: ProductPrecision
    private var roundsProductInputs: Bool { productPrecision == .bfloat16 }
    /// The weights the products read: the parameters, or under bfloat16 their rounded copy (set by `forward`).
    private var productWeights: UnsafePointer<Float>
    /// Whether the projection and LM-head products run natively in bfloat16 (`BFloat16Products`):
    /// bfloat16 precision where `RuntimeSettings` resolves so. The attention products stay float32 on
    /// rounded inputs (many small per-head products).
    public let nativeBFloat16Products: Bool
    /// Native bfloat16: `productWeights` as bfloat16 bits (set by `forward`), and the scratch the
    /// activation operands are converted into.
    private var productWeightBits: UnsafePointer<UInt16>?
    private var operandBits: UnsafeMutablePointer<UInt16>?
    private var operandBitsCount = 0
    /// bfloat16: per (sequence, head) task, one block of attention probabilities rounded for the products
    /// (softmax's backward needs them unrounded).
    private let roundedProbabilities: UnsafeMutablePointer<Float>?
    /// LoRA: saved u = x·Aᵀ [N × r] per entry (one when not training), du scratch [N × r], and the
    /// dropped-out input [N × in] under dropout.
    private let loraSaved: UnsafeMutablePointer<Float>?
    private let loraDU: UnsafeMutablePointer<Float>?
    private let loraScratch: UnsafeMutablePointer<Float>?
    private let loraScratchCount: Int

    /// Allocates the workspace for `batchSize` sequences of `sequenceLength` tokens.
    /// - Parameters:
    ///   - parameters: weights to use (shared, not copied); a zero-filled store when nil.
    ///   - training: keep activations and allocate gradients for `backward`.
    ///   - productPrecision: `.bfloat16` for mixed precision as PyTorch's CPU autocast: the inputs of every
    ///     matrix product (projections, LM head, attention scores and weighted values, forward and backward)
    ///     are rounded to bfloat16, the products accumulate in float32; weights are read from
    ///     `parameters.bfloat16Rounded()`, redone after each optimizer step.
    ///   - nativeBFloat16: under `.bfloat16`, run the projection and LM-head products natively
    ///     (`BFloat16Products`, needs AVX-512 BF16) or emulated; nil: as `RuntimeSettings` resolves.
    public init(config: Gemma3Config, batchSize: Int, sequenceLength: Int,
                parameters: ParameterStore? = nil, training: Bool = true,
                productPrecision: ProductPrecision = .float32, nativeBFloat16: Bool? = nil, lora: LoRAWeights? = nil) throws {
        try config.validate()
        guard batchSize > 0, sequenceLength > 0 else {
            throw Gemma3ModelError("batch size and sequence length must be positive, got \(batchSize) × \(sequenceLength)")
        }
        // Sizes below are products of the token count with the model's widths; bounded so none overflows.
        let (tokenCount, tooMany) = batchSize.multipliedReportingOverflow(by: sequenceLength)
        guard !tooMany, tokenCount <= 1 << 24 else {
            throw Gemma3ModelError("batch size × sequence length (\(batchSize) × \(sequenceLength)) is above the supported \(1 << 24) tokens per micro-batch")
        }
        if let parameters, parameters.layout != ParameterLayout(config: config) {
            throw Gemma3ModelError("parameter store layout does not match the config")
        }
        self.config = config
        self.batchSize = batchSize
        self.sequenceLength = sequenceLength
        self.isTraining = training
        self.parameters = parameters ?? ParameterStore(config: config)
        self.gradients = training && lora == nil ? ParameterStore(layout: self.parameters.layout) : nil
        self.lora = lora
        self.loraGradients = training ? lora.map { ParameterStore(layout: $0.parameters.layout) } : nil
        self.productPrecision = productPrecision
        self.productWeights = UnsafePointer(self.parameters.pointer)
        self.nativeBFloat16Products = productPrecision == .bfloat16 && PrefillPrecision.bfloat16Supported
            && (nativeBFloat16 ?? RuntimeSettings.current.resolvedNativeBFloat16Products)

        B = batchSize; T = sequenceLength; N = B * T
        H = config.hiddenSize; I = config.intermediateSize; V = config.vocabSize; L = config.numHiddenLayers
        nh = config.numAttentionHeads; nkv = config.numKeyValueHeads; hd = config.headDim
        qDim = nh * hd; kvDim = nkv * hd; qkvDim = qDim + 2 * kvDim; qkDim = qDim + kvDim; group = nh / nkv
        eps = Float(config.rmsNormEps)
        attnScale = config.queryScale
        embedScale = config.embeddingScale
        workers = max(1, Parallel.threadCount)

        // Carve the workspace twice: once to measure it, once in the allocated block.
        let shape = TrainingWorkspace.Shape(B: B, T: T, H: H, I: I, V: V, L: L, nh: nh, nkv: nkv, hd: hd, workers: workers)
        let placeholder = UnsafeMutablePointer<Float>.allocate(capacity: 1)
        defer { placeholder.deallocate() }
        var measure = RegionCarver(block: placeholder, measuring: true)
        _ = TrainingWorkspace(&measure, shape, training: training)
        arenaCount = max(16, measure.floats)
        // Refused before allocating: the workspace is touched at once, so a size past the machine's memory
        // would be killed by the kernel rather than fail.
        let workspaceBytes = UInt64(arenaCount) * 4
        guard workspaceBytes <= ProcessInfo.processInfo.physicalMemory else {
            throw Gemma3ModelError(String(format: "the workspace of %ld × %ld tokens needs %.1f GiB, more than this machine's %.1f GiB: use a smaller batch or sequence",
                                          batchSize, sequenceLength, Double(workspaceBytes) / 1073741824,
                                          Double(ProcessInfo.processInfo.physicalMemory) / 1073741824))
        }
        arena = UnsafeMutableRawPointer.allocate(byteCount: arenaCount * 4, alignment: 64).bindMemory(to: Float.self, capacity: arenaCount)
        arena.initialize(repeating: 0, count: arenaCount)
        var carver = RegionCarver(block: arena, measuring: false)
        workspace = TrainingWorkspace(&carver, shape, training: training)
        tokens = .allocate(capacity: N)
        tokens.initialize(repeating: 0, count: N)
        targets = .allocate(capacity: N)
        targets.initialize(repeating: -100, count: N)
        if productPrecision == .bfloat16 {
            let count = B * nh * Self.attentionBlockRows * T
            roundedProbabilities = .allocate(capacity: count)
            roundedProbabilities!.initialize(repeating: 0, count: count)
        } else {
            roundedProbabilities = nil
        }

        if let lora {
            // u = x·Aᵀ of every adapted projection (kept for the backward when training), du, and the
            // dropped-out input under dropout.
            let r = lora.settings.rank
            loraSaved = .allocate(capacity: N * r * (training ? lora.entries.count : 1))
            loraSaved!.initialize(repeating: 0, count: N * r * (training ? lora.entries.count : 1))
            loraDU = .allocate(capacity: N * r)
            let widest = lora.entries.map(\.inFeatures).max() ?? 0
            loraScratchCount = lora.settings.dropout > 0 ? N * widest : 0
            loraScratch = loraScratchCount > 0 ? .allocate(capacity: loraScratchCount) : nil
        } else {
            loraSaved = nil; loraDU = nil; loraScratch = nil; loraScratchCount = 0
        }

        let half = hd / 2, cos = workspace.ropeCos, sin = workspace.ropeSin
        for t in 0..<T {
            Kernels.ropeAngles(theta: config.ropeThetaSliding, headDim: hd, position: t, cos: cos[0] + t * half, sin: sin[0] + t * half)
            Kernels.ropeAngles(theta: config.ropeThetaFull, headDim: hd, position: t, cos: cos[1] + t * half, sin: sin[1] + t * half)
        }
    }

    deinit {
        arena.deallocate()
        tokens.deallocate()
        targets.deallocate()
        roundedProbabilities?.deallocate()
        operandBits?.deallocate()
        loraSaved?.deallocate(); loraDU?.deallocate(); loraScratch?.deallocate()
    }

    /// Bytes of the activation/scratch workspace (not counting parameters and gradients).
    public var workspaceBytes: Int { arenaCount * 4 + 8 * N }

    /// Sets every gradient to zero.
    public func zeroGradients() { gradients?.zero(); loraGradients?.zero() }

    /// Clears `phaseSeconds`.
    public func resetProfile() {
        phaseSeconds = [Double](repeating: 0, count: StepPhase.allCases.count)
        phaseCPUSeconds = phaseSeconds
    }

    /// Logits [batchSize, sequenceLength, vocab] of the last forward (see `keepsLogits`: a training forward with
    /// targets leaves their gradient here instead). `backward` overwrites them with their gradient.
    public var logits: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: workspace.logitsBuffer, count: N * V) }

    /// Intermediate activations of the last forward (training models), named as in the golden files:
    /// `embed` (scaled embedding), `layer.{l}` (residual stream after layer l), `final_norm`. [B, T, H] each.
    public func activation(_ name: String) -> UnsafeBufferPointer<Float>? {
        if name == "embed" { return UnsafeBufferPointer(start: workspace.resid[0], count: N * H) }
        if name == "final_norm" { return UnsafeBufferPointer(start: workspace.xnFinal, count: N * H) }
        if isTraining, name.hasPrefix("layer."), let l = Int(name.dropFirst(6)), l >= 0, l < L {
            return UnsafeBufferPointer(start: workspace.resid[l + 1], count: N * H)
        }
        return nil
    }

    /// Next-token targets for `inputs` [batch, seq]: targets[b, t] = inputs[b, t+1], the last position ignored.
    public static func nextTokenTargets(_ inputs: [Int32], batchSize: Int, sequenceLength: Int, ignoreIndex: Int32 = -100) -> [Int32] {
        var out = [Int32](repeating: ignoreIndex, count: inputs.count)
        for b in 0..<batchSize {
            for t in 0..<(sequenceLength - 1) { out[b * sequenceLength + t] = inputs[b * sequenceLength + t + 1] }
        }
        return out
    }

    // MARK: Timing

    @inline(__always) private func now() -> UInt64 {
        guard profiling else { return 0 }
        cpuMark = Self.processCPUSeconds()
        return DispatchTime.now().uptimeNanoseconds
    }

    @inline(__always) private func charge(_ phase: StepPhase, since start: UInt64) {
        guard profiling else { return }
        phaseSeconds[phase.rawValue] += Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        phaseCPUSeconds[phase.rawValue] += Self.processCPUSeconds() - cpuMark
    }

    private static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6
    }

    // MARK: Helpers

    /// C = op(A)·op(B) (+ beta·C) split over the workers.
    @inline(__always)
    private func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                      a: UnsafePointer<Float>, lda: Int? = nil, b: UnsafePointer<Float>, ldb: Int? = nil,
                      beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil) {
        var (a, b) = (a, b)
        if nativeBFloat16Products {
            if nativeProduct(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda ?? (transA ? m : k),
                             b: b, ldb: ldb ?? (transB ? k : n), beta: beta, c: c, ldc: ldc ?? n) {
                return
            }
            // No kernel for this shape: float32 on the rounded weights (the activations are rounded in place).
            if hasBits(a) { a = parameters.bfloat16Rounded() + (a - productWeights) }
            if hasBits(b) { b = parameters.bfloat16Rounded() + (b - productWeights) }
        }
        if openBLASThreading {
            BLAS.setThreads(workers)
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                       a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            BLAS.setThreads(1)
        } else {
            let t0 = gemmProfile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            ParallelGEMM.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                               a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            if gemmProfile != nil {
                let key = "\(transA ? "Aᵀ" : "A")[\(m)×\(k)]·\(transB ? "Bᵀ" : "B")[\(k)×\(n)]\(beta != 0 ? " + C" : "")"
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
                gemmProfile![key, default: (0, 0)].seconds += seconds
                gemmProfile![key, default: (0, 0)].flops += 2 * Double(m) * Double(n) * Double(k)
            }
        }
    }

    /// The product on bfloat16 operands through `BFloat16Products`: weights from `productWeightBits`,
    /// activations converted into `operandBits` (exact: they were rounded to bfloat16 values already, or
    /// are rounded now as autocast would). False when oneDNN refused a panel's shape (C untouched; the
    /// caller then computes it in float32).
    private func nativeProduct(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                               a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                               beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) -> Bool {
        let t0 = gemmProfile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        let (aRows, aColumns) = transA ? (k, m) : (m, k), (bRows, bColumns) = transB ? (n, k) : (k, n)
        let aCount = hasBits(a) ? 0 : aRows * aColumns, bCount = hasBits(b) ? 0 : bRows * bColumns
        if operandBits == nil || aCount + bCount > operandBitsCount {
            operandBits?.deallocate()
            operandBitsCount = max(1, aCount + bCount)
            operandBits = .allocate(capacity: operandBitsCount)
        }
        let scratch = operandBits!
        let (a16, lda16) = bits(of: a, rows: aRows, columns: aColumns, ld: lda, scratch: scratch)
        let (b16, ldb16) = bits(of: b, rows: bRows, columns: bColumns, ld: ldb, scratch: scratch + aCount)
        let ok = ParallelGEMM.bfloat16(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                                       a: a16, lda: lda16, b: b16, ldb: ldb16, beta: beta, c: c, ldc: ldc)
        if ok, gemmProfile != nil {
            let key = "bf16 \(transA ? "Aᵀ" : "A")[\(m)×\(k)]·\(transB ? "Bᵀ" : "B")[\(k)×\(n)]\(beta != 0 ? " + C" : "")"
            gemmProfile![key, default: (0, 0)].seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            gemmProfile![key, default: (0, 0)].flops += 2 * Double(m) * Double(n) * Double(k)
        }
        return ok
    }

    /// Whether `x` points into the product weights and their bfloat16 bits exist already.
    private func hasBits(_ x: UnsafePointer<Float>) -> Bool {
        productWeightBits != nil && x >= productWeights && x < productWeights + parameters.count
    }

    /// The bfloat16 bits of the stored operand `x` (`rows` × `columns`, `ld` apart) and their row stride:
    /// the weights' copy, or `x` converted into `scratch` (compact rows).
    private func bits(of x: UnsafePointer<Float>, rows: Int, columns: Int, ld: Int,
                      scratch: UnsafeMutablePointer<UInt16>) -> (UnsafePointer<UInt16>, Int) {
        if hasBits(x), let weights = productWeightBits { return (weights + (x - productWeights), ld) }
        let src = UncheckedSendable(x), dst = UncheckedSendable(scratch)
        parallelRows(rows) { _, r in
            for row in r { NumberFormats.convertToBFloat16(from: src.value + row * ld, into: dst.value + row * columns, count: columns) }
        }
        return (UnsafePointer(scratch), columns)
    }

    /// When non-nil, every matrix product adds its wall time and FLOPs here, keyed by shape
    /// (for `gemma3 bench train --gemms`: how close each product runs to the sgemm peak).
    public var gemmProfile: [String: (seconds: Double, flops: Double)]?

    /// Whether OpenBLAS threads each product itself (`RuntimeSettings.gemmThreading`), read once per model.
    private let openBLASThreading = RuntimeSettings.current.gemmThreading == .openBLAS

    /// Runs `body(worker, rows)` over `count` rows split into `workers` contiguous parts.
    @inline(__always)
    private func parallelRows(_ count: Int, _ body: (Int, Range<Int>) -> Void) {
        let w = workers
        if w == 1 || count < 2 { body(0, 0..<count); return }
        Parallel.forEach(w) { i in body(i, (count * i / w)..<(count * (i + 1) / w)) }
    }

    /// Under bfloat16 products, rounds `rows` rows of `columns` floats (`stride` apart) in place: for
    /// tensors whose only readers are products.
    private func roundForProducts(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int, stride: Int? = nil) {
        guard roundsProductInputs else { return }
        let p = UncheckedSendable(x), ld = stride ?? columns
        parallelRows(rows) { _, r in
            NumberFormats.roundToBFloat16(p.value + r.lowerBound * ld, rows: r.count, columns: columns, stride: ld)
        }
    }

    /// Under bfloat16 products, the block rows×keys of probabilities `p` (row stride T) rounded into task
    /// `task`'s scratch (row stride `keys`); otherwise `p` itself. Returns the operand and its stride.
    @inline(__always)
    private func probabilitiesForProducts(_ p: UnsafePointer<Float>, task: Int, rows: Int, keys: Int) -> (UnsafePointer<Float>, Int) {
        guard let scratch = roundedProbabilities else { return (p, T) }
        let dst = scratch + task * Self.attentionBlockRows * T
        for r in 0..<rows { NumberFormats.roundToBFloat16(from: p + r * T, into: dst + r * keys, count: keys) }
        return (UnsafePointer(dst), keys)
    }

    /// Per-worker accumulator `slot` (0..<4) of worker `w`.
    @inline(__always) private func partial(_ slot: Int, _ w: Int) -> UnsafeMutablePointer<Float> {
        workspace.partials + (slot * workers + w) * workspace.partialStride
    }

    private func clearPartials(_ slots: Int) {
        workspace.partials.update(repeating: 0, count: slots * workers * workspace.partialStride)
    }

    /// gradient[offset ..< offset+dim] += Σ_workers partial(slot, w).
    private func reducePartials(_ slot: Int, dim: Int, into gradient: UnsafeMutablePointer<Float>) {
        for w in 0..<workers {
            let p = partial(slot, w)
            for i in 0..<dim { gradient[i] += p[i] }
        }
    }

    // MARK: Forward

    /// Runs the forward pass on `inputs` [batchSize · sequenceLength] token ids.
    ///
    /// With `targets` (same length; `ignoreIndex` entries skipped) it returns the mean cross-entropy over the
    /// counted targets (0 when none count) and enables `backward`; without, it only computes `logits` and returns NaN.
    @discardableResult
    public func forward(inputs: UnsafeBufferPointer<Int32>, targets targetIds: UnsafeBufferPointer<Int32>?) throws -> Float {
        guard inputs.count == N else {
            throw Gemma3ModelError("expected \(N) input tokens (\(B) × \(T)), got \(inputs.count)")
        }
        for (i, id) in inputs.enumerated() where id < 0 || Int(id) >= V {
            throw Gemma3ModelError("input token \(id) at position \(i) is outside the vocabulary (size \(V))")
        }
        tokens.update(from: inputs.baseAddress!, count: N)
        if let targetIds {
            guard targetIds.count == N else {
                throw Gemma3ModelError("expected \(N) targets (\(B) × \(T)), got \(targetIds.count)")
            }
            for (i, id) in targetIds.enumerated() where id != ignoreIndex && (id < 0 || Int(id) >= V) {
                throw Gemma3ModelError("target \(id) at position \(i) is outside the vocabulary (size \(V)) and is not the ignore index \(ignoreIndex)")
            }
            targets.update(from: targetIds.baseAddress!, count: N)
            hasTargets = true
        } else {
            hasTargets = false
        }
        BLAS.setThreads(1)
        let P = parameters.pointer
        var t0 = now()
        if nativeBFloat16Products {
            // The bfloat16 bits only; a product oneDNN refuses reads `bfloat16Rounded()`, made then.
            productWeights = UnsafePointer(P)
            productWeightBits = parameters.bfloat16Copy()
        } else {
            productWeights = roundsProductInputs ? parameters.bfloat16Rounded() : UnsafePointer(P)
        }
        charge(.weightCast, since: t0)
        let layout = parameters.layout
        let (H, N) = (self.H, self.N)

        // Embedding: h0 = E[id] · √H (float32 scale, as HF).
        t0 = now()
        do {
            let e = UncheckedSendable(P + layout.embedding), out = UncheckedSendable(workspace.resid[0])
            let ids = UncheckedSendable(tokens), scale = embedScale
            parallelRows(N) { _, rows in
                for n in rows {
                    let src = e.value + Int(ids.value[n]) * H, dst = out.value + n * H
                    for i in 0..<H { dst[i] = src[i] * scale }
                }
            }
        }
        charge(.embedding, since: t0)

        t0 = now()
        do {
            let lb = buffer(0)
            let x = UncheckedSendable(workspace.resid[0]), w = UncheckedSendable(P + layout.layers[0].inputNorm)
            let y = UncheckedSendable(lb.xnAttn), r = UncheckedSendable(lb.rstdIn), eps = self.eps
            parallelRows(N) { _, rows in
                Kernels.rmsNorm(x: x.value, ldx: H, weight: w.value, y: y.value, ldy: H, rstd: r.value, dim: H, eps: eps, rows: rows)
            }
        }
        charge(.norms, since: t0)

        for l in 0..<L {
            let lb = buffer(l)
            let o = layout.layers[l]
            t0 = now()
            attentionForward(layer: l, lb, o)
            charge(.attention, since: t0)
            t0 = now()
            residualNormForward(branch: lb.attnProj, postWeight: P + o.postAttentionNorm, residIn: residIn(l), residOut: lb.residMid,
                                rstdPost: lb.rstdPostAttn, nextWeight: P + o.preFeedforwardNorm, xnNext: lb.xnFF, rstdNext: lb.rstdPreFF)
            charge(.norms, since: t0)
            t0 = now()
            mlpForward(layer: l, lb, o)
            charge(.mlp, since: t0)
            t0 = now()
            let last = l == L - 1
            let next = last ? nil : buffer(l + 1)
            residualNormForward(branch: lb.ffOut, postWeight: P + o.postFeedforwardNorm, residIn: lb.residMid, residOut: residOut(l),
                                rstdPost: lb.rstdPostFF, nextWeight: P + (last ? layout.finalNorm : layout.layers[l + 1].inputNorm),
                                xnNext: last ? workspace.xnFinal : next!.xnAttn, rstdNext: last ? workspace.rstdFinal : next!.rstdIn)
            charge(.norms, since: t0)
        }

        // LM head: logits = final_norm(x) · Wᵀ (W = embedding when tied).
        t0 = now()
        roundForProducts(workspace.xnFinal, rows: N, columns: H)
        var count = 0
        if hasTargets { for n in 0..<N where targets[n] != ignoreIndex { count += 1 } }
        // A training forward whose logits nobody reads needs the head only on the rows with a target (a
        // fine-tune's prompts and padding have none): those rows are gathered into `dResid` (backward
        // scratch, free until the head's backward) and multiplied alone; `headRows` maps them back.
        headRows = nil
        var headInput = UnsafePointer(workspace.xnFinal)
        if isTraining && !keepsLogits && count > 0 && count < N {
            var rows: [Int] = []
            rows.reserveCapacity(count)
            var packed = 0
            for n in 0..<N where targets[n] != ignoreIndex {
                (workspace.dResid + packed * H).update(from: workspace.xnFinal + n * H, count: H)
                targets[packed] = targets[n]
                rows.append(n)
                packed += 1
            }
            (targets + packed).update(repeating: ignoreIndex, count: N - packed)
            headRows = rows
            headInput = UnsafePointer(workspace.dResid)
        }
        let headRowCount = headRows?.count ?? N
        gemm(transB: true, m: headRowCount, n: V, k: H, a: headInput, b: productWeights + layout.outputProjection, c: workspace.logitsBuffer)
        var loss: Float = .nan
        gradientInLogits = false
        if hasTargets {
            let N = headRowCount
            // Fused classifier: while each row is in cache, turn it into d(mean loss)/d logits.
            let fuse = isTraining && !keepsLogits && count > 0
            let lg = UncheckedSendable(workspace.logitsBuffer), ls = UncheckedSendable(workspace.lse), rl = UncheckedSendable(workspace.rowLoss)
            let tg = UncheckedSendable(targets), ignore = ignoreIndex, V = self.V
            let invCount = 1 / Float(max(1, count))
            parallelRows(N) { _, rows in
                for n in rows {
                    let target = tg.value[n]
                    let row = lg.value + n * V
                    if target == ignore {
                        ls.value[n] = 0; rl.value[n] = 0
                        if fuse { row.update(repeating: 0, count: V) }
                        continue
                    }
                    if fuse {
                        let targetLogit = row[Int(target)]
                        let m = VectorMath.maximum(row, V)
                        let sum = VectorMath.expShiftStoreSum(row, V, shift: m)
                        let lse = m + Float(log(sum))
                        ls.value[n] = lse
                        rl.value[n] = lse - targetLogit
                        let scale = invCount / Float(sum)
                        VectorMath.scale(row, V, by: scale)
                        row[Int(target)] -= invCount
                    } else {
                        let m = Kernels.logSumExp(row, V)
                        ls.value[n] = m
                        rl.value[n] = m - row[Int(target)]
                    }
                }
            }
            gradientInLogits = fuse
            var sum: Double = 0
            for n in 0..<N where targets[n] != ignoreIndex { sum += Double(workspace.rowLoss[n]) }
            lastTargetCount = count
            loss = count > 0 ? Float(sum / Double(count)) : 0
            lastLoss = loss
        }
        charge(.head, since: t0)
        forwardDone = true
        return loss
    }

    /// `forward` on arrays.
    @discardableResult
    public func forward(inputs: [Int32], targets: [Int32]?) throws -> Float {
        try inputs.withUnsafeBufferPointer { ip in
            if let targets {
                return try targets.withUnsafeBufferPointer { tp in try forward(inputs: ip, targets: tp) }
            }
            return try forward(inputs: ip, targets: nil)
        }
    }

    @inline(__always) private func buffer(_ l: Int) -> TrainingWorkspace.LayerBuffers { workspace.layers[isTraining ? l : 0] }
    @inline(__always) private func residIn(_ l: Int) -> UnsafeMutablePointer<Float> { workspace.resid[isTraining ? l : 0] }
    @inline(__always) private func residOut(_ l: Int) -> UnsafeMutablePointer<Float> { workspace.resid[isTraining ? l + 1 : 0] }

    private func attentionForward(layer l: Int, _ lb: TrainingWorkspace.LayerBuffers, _ o: LayerOffsets) {
        let P = parameters.pointer
        let (N, H, T, nh, nkv, hd) = (self.N, self.H, self.T, self.nh, self.nkv, self.hd)
        let (qDim, kvDim, qkvDim, qkDim, group) = (self.qDim, self.kvDim, self.qkvDim, self.qkDim, self.group)
        // q, k, v in one product: the three weights are contiguous, [(nh + 2·nkv)·hd, H].
        roundForProducts(lb.xnAttn, rows: N, columns: H)
        gemm(transB: true, m: N, n: qkvDim, k: H, a: lb.xnAttn, b: productWeights + o.qProj, c: lb.qkv)
        if lora != nil {
            loraForward(layer: l, target: "q", x: lb.xnAttn, y: lb.qkv, ldy: qkvDim)
            loraForward(layer: l, target: "k", x: lb.xnAttn, y: lb.qkv + qDim, ldy: qkvDim)
            loraForward(layer: l, target: "v", x: lb.xnAttn, y: lb.qkv + qDim + kvDim, ldy: qkvDim)
        }

        // QK-norm (per head, shared weights) then RoPE, into qkRot [N, qDim + kvDim].
        let sliding = config.isSliding(layer: l)
        let cosT = UncheckedSendable(workspace.ropeCos[sliding ? 0 : 1]), sinT = UncheckedSendable(workspace.ropeSin[sliding ? 0 : 1])
        let qkv = UncheckedSendable(lb.qkv), rot = UncheckedSendable(lb.qkRot), rstd = UncheckedSendable(lb.qkRstd)
        let qw = UncheckedSendable(P + o.qNorm), kw = UncheckedSendable(P + o.kNorm), eps = self.eps
        let heads = nh + nkv, half = hd / 2, rounds = roundsProductInputs
        parallelRows(N) { _, rows in
            for n in rows {
                let t = n % T
                for j in 0..<heads {
                    let dst = rot.value + n * qkDim + j * hd
                    Kernels.rmsNorm(x: qkv.value + n * qkvDim + j * hd, ldx: hd, weight: j < nh ? qw.value : kw.value,
                                    y: dst, ldy: hd, rstd: rstd.value + n * heads + j, dim: hd, eps: eps, rows: 0..<1)
                    Kernels.ropeRotate(dst, headDim: hd, cos: cosT.value + t * half, sin: sinT.value + t * half)
                }
                if rounds {
                    // q and k after RoPE, and v, are read only by the attention products.
                    NumberFormats.roundToBFloat16(rot.value + n * qkDim, count: qkDim)
                    NumberFormats.roundToBFloat16(qkv.value + n * qkvDim + qDim + kvDim, count: kvDim)
                }
            }
        }

        // Scores, masked softmax and weighted values, one (sequence, head) per task, in blocks of query rows
        // that only touch the keys the mask lets them see (causal, and the window on sliding layers).
        let probs = UncheckedSendable(lb.probs), out = UncheckedSendable(lb.attnOut)
        let window = config.slidingWindow, scale = attnScale
        Parallel.forEach(B * nh) { task in
            let b = task / nh, h = task % nh, g = h / group
            let q = rot.value + b * T * qkDim + h * hd
            let k = rot.value + b * T * qkDim + qDim + g * hd
            let v = qkv.value + b * T * qkvDim + qDim + kvDim + g * hd
            let o = out.value + b * T * qDim + h * hd
            let s = probs.value + task * T * T
            for block in Self.attentionBlocks(T: T, window: sliding ? window : nil) {
                let (r0, r1, k0, k1) = (block.rows.lowerBound, block.rows.upperBound, block.keys.lowerBound, block.keys.upperBound)
                BLAS.sgemm(transB: true, m: r1 - r0, n: k1 - k0, k: hd, alpha: scale, a: q + r0 * qkDim, lda: qkDim,
                           b: k + k0 * qkDim, ldb: qkDim, c: s + r0 * T + k0, ldc: T)
                for i in r0..<r1 {
                    let row = s + i * T
                    let lo = sliding ? max(0, i - window + 1) : 0
                    if lo > k0 { (row + k0).update(repeating: 0, count: lo - k0) }
                    Kernels.softmax(row + lo, i - lo + 1)
                    if i + 1 < k1 { (row + i + 1).update(repeating: 0, count: k1 - i - 1) }
                }
                let (pb, ldp) = self.probabilitiesForProducts(s + r0 * T + k0, task: task, rows: r1 - r0, keys: k1 - k0)
                BLAS.sgemm(m: r1 - r0, n: hd, k: k1 - k0, a: pb, lda: ldp, b: v + k0 * qkvDim, ldb: qkvDim,
                           c: o + r0 * qDim, ldc: qDim)
            }
        }
        _ = nkv

        roundForProducts(lb.attnOut, rows: N, columns: qDim)
        gemm(transB: true, m: N, n: H, k: qDim, a: lb.attnOut, b: productWeights + o.oProj, c: lb.attnProj)
        if lora != nil { loraForward(layer: l, target: "o", x: lb.attnOut, y: lb.attnProj, ldy: H) }
    }

    /// Query-row blocks of one attention head and the key range each needs: keys [k0, k1) cover every
    /// j with i − W < j ≤ i for the block's rows i (all j ≤ i without a window).
    static let attentionBlockRows = 32

    static func attentionBlocks(T: Int, window: Int?) -> [(rows: Range<Int>, keys: Range<Int>)] {
        let size = attentionBlockRows
        return stride(from: 0, to: T, by: size).map { r0 in
            let r1 = min(T, r0 + size)
            let k0 = window.map { max(0, r0 - $0 + 1) } ?? 0
            return (r0..<r1, k0..<r1)
        }
    }

    /// FLOPs of one forward + backward step as computed: 6 per matmul weight per token (2 forward, 4 backward)
    /// for every projection and the LM head, plus 12 · rows · keys · head_dim per attention block and head.
    public var flopsPerStep: Double {
        let layout = parameters.layout
        let projections = layout.tensors.filter { $0.isMatrix && $0.tensor != .embedding }.map(\.count).reduce(0, +)
        let head = config.tieWordEmbeddings ? V * H : 0  // untied: lm_head.weight is already in `projections`
        var attention = 0.0
        for l in 0..<L {
            for block in Self.attentionBlocks(T: T, window: config.isSliding(layer: l) ? config.slidingWindow : nil) {
                attention += 12 * Double(block.rows.count * block.keys.count * hd)
            }
        }
        return 6 * Double((projections + head) * N) + attention * Double(B * nh)
    }

    private func mlpForward(layer l: Int, _ lb: TrainingWorkspace.LayerBuffers, _ o: LayerOffsets) {
        let (N, H, I) = (self.N, self.H, self.I)
        // gate and up in one product: [2I, H] contiguous weights.
        roundForProducts(lb.xnFF, rows: N, columns: H)
        gemm(transB: true, m: N, n: 2 * I, k: H, a: lb.xnFF, b: productWeights + o.gateProj, c: lb.gateUp)
        if lora != nil {
            loraForward(layer: l, target: "gate", x: lb.xnFF, y: lb.gateUp, ldy: 2 * I)
            loraForward(layer: l, target: "up", x: lb.xnFF, y: lb.gateUp + I, ldy: 2 * I)
        }
        let gu = UncheckedSendable(lb.gateUp), act = UncheckedSendable(lb.act), rounds = roundsProductInputs
        parallelRows(N) { _, rows in
            Kernels.geglu(gate: gu.value, up: gu.value + I, ldIn: 2 * I, out: act.value, ldOut: I, dim: I, rows: rows)
            if rounds { NumberFormats.roundToBFloat16(act.value + rows.lowerBound * I, count: rows.count * I) }
        }
        gemm(transB: true, m: N, n: H, k: I, a: lb.act, b: productWeights + o.downProj, c: lb.ffOut)
        if lora != nil { loraForward(layer: l, target: "down", x: lb.act, y: lb.ffOut, ldy: H) }
    }

    /// residOut = residIn + norm_post(branch); xnNext = norm_next(residOut), fused per row.
    private func residualNormForward(branch: UnsafeMutablePointer<Float>, postWeight: UnsafeMutablePointer<Float>,
                                     residIn: UnsafeMutablePointer<Float>, residOut: UnsafeMutablePointer<Float>,
                                     rstdPost: UnsafeMutablePointer<Float>, nextWeight: UnsafeMutablePointer<Float>,
                                     xnNext: UnsafeMutablePointer<Float>, rstdNext: UnsafeMutablePointer<Float>) {
        let y = UncheckedSendable(branch), wp = UncheckedSendable(postWeight), ri = UncheckedSendable(residIn)
        let ro = UncheckedSendable(residOut), rp = UncheckedSendable(rstdPost), wn = UncheckedSendable(nextWeight)
        let xn = UncheckedSendable(xnNext), rn = UncheckedSendable(rstdNext)
        let H = self.H, eps = self.eps
        parallelRows(N) { _, rows in
            for r in rows {
                let yr = y.value + r * H, ir = ri.value + r * H, or = ro.value + r * H, xr = xn.value + r * H
                let s1 = Kernels.rmsScale(yr, H, eps: eps)
                rp.value[r] = s1
                for i in 0..<H { or[i] = ir[i] + (yr[i] * s1) * (1 + wp.value[i]) }
                let s2 = Kernels.rmsScale(or, H, eps: eps)
                rn.value[r] = s2
                for i in 0..<H { xr[i] = (or[i] * s2) * (1 + wn.value[i]) }
            }
        }
    }

    // MARK: Backward

    /// Backpropagates the loss of the last `forward(inputs:targets:)`, adding d(lossScale · loss)/dθ into
    /// `gradients`. Use `lossScale` = 1/k to average k accumulated micro-batches. The logits buffer is
    /// reused for its gradient.
    ///
    /// - Parameter gradientsFinal: called (on this thread) with each range of `gradients` as soon as
    ///   this backward will not write it again — the final norm and untied head after the last layer,
    ///   each layer once the layer below it has run, the embedding and layer 0 at the end — so a
    ///   data-parallel group can start summing them while the backward goes on. The ranges cover the
    ///   whole store, each once, in the same order on every call.
    public func backward(lossScale: Float = 1, gradientsFinal: ((Range<Int>) -> Void)? = nil) {
        precondition(isTraining, "backward() needs a model created with training: true")
        precondition(forwardDone && hasTargets, "backward() needs a preceding forward(inputs:targets:) with targets")
        forwardDone = false
        guard lastTargetCount > 0, gradients != nil || loraGradients != nil else {
            parameters.layout.gradientBuckets.forEach { gradientsFinal?($0) }
            return
        }
        BLAS.setThreads(1)
        // nil under LoRA: the base weights are frozen, so their gradient products are skipped.
        let P = parameters.pointer, G = gradients?.pointer
        let layout = parameters.layout
        let (N, H, V) = (self.N, self.H, self.V)

        // Cross-entropy gradient, in place over the logits (already there after a fused forward).
        var t0 = now()
        if !gradientInLogits {
            let lg = UncheckedSendable(workspace.logitsBuffer), ls = UncheckedSendable(workspace.lse), tg = UncheckedSendable(targets)
            let ignore = ignoreIndex, scale = lossScale / Float(lastTargetCount)
            parallelRows(N) { _, rows in
                for n in rows {
                    let row = lg.value + n * V
                    let target = tg.value[n]
                    if target == ignore { row.update(repeating: 0, count: V); continue }
                    Kernels.crossEntropyBackward(row, V, logSumExp: ls.value[n], target: Int(target), scale: scale)
                }
            }
        }
        // LM head: dX = dlogits · W; dW += dlogitsᵀ · X (the fused gradient is for lossScale 1). With packed
        // head rows, X is the packed copy in dResid, and dX is unpacked into its rows (the others get 0).
        let headScale: Float = gradientInLogits ? lossScale : 1
        gradientInLogits = false
        let M = headRows?.count ?? N
        let headInput = headRows == nil ? workspace.xnFinal : workspace.dResid
        roundForProducts(workspace.logitsBuffer, rows: M, columns: V)
        gemm(m: M, n: H, k: V, alpha: headScale, a: workspace.logitsBuffer, b: productWeights + layout.outputProjection, c: workspace.dXn)
        if let G {
            gemm(transA: true, m: V, n: H, k: M, alpha: headScale, a: workspace.logitsBuffer, lda: V, b: headInput, ldb: H, beta: 1,
                 c: G + layout.outputProjection)
        }
        if let rows = headRows {
            // rows[i] ≥ i: moving from the last row down never overwrites a row still to be moved.
            var next = N
            for i in stride(from: rows.count - 1, through: 0, by: -1) {
                let n = rows[i]
                if n + 1 < next { (workspace.dXn + (n + 1) * H).update(repeating: 0, count: (next - n - 1) * H) }
                if n != i { (workspace.dXn + n * H).update(from: workspace.dXn + i * H, count: H) }
                next = n
            }
            if next > 0 { workspace.dXn.update(repeating: 0, count: next * H) }
            headRows = nil
        }
        charge(.head, since: t0)

        workspace.dResid.update(repeating: 0, count: N * H)
        for l in stride(from: L - 1, through: 0, by: -1) {
            let lb = buffer(l)
            let o = layout.layers[l]
            let last = l == L - 1
            t0 = now()
            residualNormBackward(
                residOut: workspace.resid[l + 1], rstdNext: last ? workspace.rstdFinal : buffer(l + 1).rstdIn,
                nextWeight: P + (last ? layout.finalNorm : layout.layers[l + 1].inputNorm),
                nextGrad: G.map { $0 + (last ? layout.finalNorm : layout.layers[l + 1].inputNorm) },
                branch: lb.ffOut, rstdPost: lb.rstdPostFF, postWeight: P + o.postFeedforwardNorm, postGrad: G.map { $0 + o.postFeedforwardNorm })
            charge(.norms, since: t0)
            t0 = now()
            mlpBackward(layer: l, lb, o, G)
            charge(.mlp, since: t0)
            t0 = now()
            residualNormBackward(
                residOut: lb.residMid, rstdNext: lb.rstdPreFF, nextWeight: P + o.preFeedforwardNorm, nextGrad: G.map { $0 + o.preFeedforwardNorm },
                branch: lb.attnProj, rstdPost: lb.rstdPostAttn, postWeight: P + o.postAttentionNorm, postGrad: G.map { $0 + o.postAttentionNorm })
            charge(.norms, since: t0)
            t0 = now()
            attentionBackward(layer: l, lb, o, G)
            charge(.attention, since: t0)
            // Layer l has written its own tensors and the input norm of layer l + 1 (or the final norm).
            if let gradientsFinal {
                if last { gradientsFinal(layout.finalNorm ..< layout.count) }
                if !last { gradientsFinal(layout.layerRange(l + 1)) }
            }
        }

        // Input norm of layer 0, then the embedding lookup (nothing to do there with frozen base weights).
        guard let G else { return }
        t0 = now()
        do {
            clearPartials(1)
            let lb = buffer(0)
            let x = UncheckedSendable(workspace.resid[0]), w = UncheckedSendable(P + layout.layers[0].inputNorm)
            let r = UncheckedSendable(lb.rstdIn), dy = UncheckedSendable(workspace.dXn), dx = UncheckedSendable(workspace.dResid)
            parallelRows(N) { wk, rows in
                Kernels.rmsNormBackward(x: x.value, ldx: H, weight: w.value, rstd: r.value, dy: dy.value, lddy: H,
                                        dx: dx.value, lddx: H, accumulate: true, dw: self.partial(0, wk), dim: H, rows: rows)
            }
            reducePartials(0, dim: H, into: G + layout.layers[0].inputNorm)
        }
        charge(.norms, since: t0)
        t0 = now()
        let dE = G + layout.embedding, scale = embedScale
        for n in 0..<N {
            let dst = dE + Int(tokens[n]) * H, src = workspace.dResid + n * H
            for i in 0..<H { dst[i] += src[i] * scale }
        }
        charge(.embedding, since: t0)
        gradientsFinal?(0 ..< layout.layerRange(0).upperBound)
    }

    /// Backward of `residualNormForward`. On entry `dXn` holds d loss/d xnNext and `dResid` d loss/d residOut
    /// (from above). On exit `dResid` holds d loss/d residIn (= d residOut, total) and `dBranch` d loss/d branch.
    private func residualNormBackward(residOut: UnsafeMutablePointer<Float>, rstdNext: UnsafeMutablePointer<Float>,
                                      nextWeight: UnsafeMutablePointer<Float>, nextGrad: UnsafeMutablePointer<Float>?,
                                      branch: UnsafeMutablePointer<Float>, rstdPost: UnsafeMutablePointer<Float>,
                                      postWeight: UnsafeMutablePointer<Float>, postGrad: UnsafeMutablePointer<Float>?) {
        clearPartials(2)
        let ro = UncheckedSendable(residOut), rn = UncheckedSendable(rstdNext), wn = UncheckedSendable(nextWeight)
        let y = UncheckedSendable(branch), rp = UncheckedSendable(rstdPost), wp = UncheckedSendable(postWeight)
        let dxn = UncheckedSendable(workspace.dXn), dr = UncheckedSendable(workspace.dResid), db = UncheckedSendable(workspace.dBranch)
        let H = self.H
        parallelRows(N) { wk, rows in
            Kernels.rmsNormBackward(x: ro.value, ldx: H, weight: wn.value, rstd: rn.value, dy: dxn.value, lddy: H,
                                    dx: dr.value, lddx: H, accumulate: true, dw: self.partial(0, wk), dim: H, rows: rows)
            Kernels.rmsNormBackward(x: y.value, ldx: H, weight: wp.value, rstd: rp.value, dy: dr.value, lddy: H,
                                    dx: db.value, lddx: H, accumulate: false, dw: self.partial(1, wk), dim: H, rows: rows)
        }
        if let nextGrad { reducePartials(0, dim: H, into: nextGrad) }
        if let postGrad { reducePartials(1, dim: H, into: postGrad) }
    }

    /// From `dBranch` = d loss/d ffOut to `dXn` = d loss/d xnFF, accumulating the MLP weight gradients.
    private func mlpBackward(layer l: Int, _ lb: TrainingWorkspace.LayerBuffers, _ o: LayerOffsets, _ G: UnsafeMutablePointer<Float>?) {
        let (N, H, I) = (self.N, self.H, self.I)
        roundForProducts(workspace.dBranch, rows: N, columns: H)
        gemm(m: N, n: I, k: H, a: workspace.dBranch, b: productWeights + o.downProj, c: workspace.dAct)
        if let G { gemm(transA: true, m: H, n: I, k: N, a: workspace.dBranch, lda: H, b: lb.act, ldb: I, beta: 1, c: G + o.downProj) }
        if lora != nil { loraBackward(layer: l, target: "down", x: lb.act, dy: workspace.dBranch, lddy: H, dx: workspace.dAct) }
        let gu = UncheckedSendable(lb.gateUp), da = UncheckedSendable(workspace.dAct), dgu = UncheckedSendable(workspace.dGateUp)
        let rounds = roundsProductInputs
        parallelRows(N) { _, rows in
            Kernels.gegluBackward(gate: gu.value, up: gu.value + I, ldIn: 2 * I, dOut: da.value, ldDOut: I,
                                  dGate: dgu.value, dUp: dgu.value + I, ldDIn: 2 * I, dim: I, rows: rows)
            if rounds { NumberFormats.roundToBFloat16(dgu.value + rows.lowerBound * 2 * I, count: rows.count * 2 * I) }
        }
        if let G { gemm(transA: true, m: 2 * I, n: H, k: N, a: workspace.dGateUp, lda: 2 * I, b: lb.xnFF, ldb: H, beta: 1, c: G + o.gateProj) }
        gemm(m: N, n: H, k: 2 * I, a: workspace.dGateUp, b: productWeights + o.gateProj, c: workspace.dXn)
        if lora != nil {
            loraBackward(layer: l, target: "gate", x: lb.xnFF, dy: workspace.dGateUp, lddy: 2 * I, dx: workspace.dXn)
            loraBackward(layer: l, target: "up", x: lb.xnFF, dy: workspace.dGateUp + I, lddy: 2 * I, dx: workspace.dXn)
        }
    }

    /// From `dBranch` = d loss/d attnProj to `dXn` = d loss/d xnAttn, accumulating the attention weight gradients.
    private func attentionBackward(layer l: Int, _ lb: TrainingWorkspace.LayerBuffers, _ o: LayerOffsets, _ G: UnsafeMutablePointer<Float>?) {
        let P = parameters.pointer
        let (N, H, T, nh, nkv, hd) = (self.N, self.H, self.T, self.nh, self.nkv, self.hd)
        let (qDim, kvDim, qkvDim, qkDim, group) = (self.qDim, self.kvDim, self.qkvDim, self.qkDim, self.group)
        roundForProducts(workspace.dBranch, rows: N, columns: H)
        gemm(m: N, n: qDim, k: H, a: workspace.dBranch, b: productWeights + o.oProj, c: workspace.dAttnOut)
        if let G { gemm(transA: true, m: H, n: qDim, k: N, a: workspace.dBranch, lda: H, b: lb.attnOut, ldb: qDim, beta: 1, c: G + o.oProj) }
        if lora != nil { loraBackward(layer: l, target: "o", x: lb.attnOut, dy: workspace.dBranch, lddy: H, dx: workspace.dAttnOut) }
        roundForProducts(workspace.dAttnOut, rows: N, columns: qDim)

        // Per (sequence, head) and query block: dP = dO·Vᵀ, dV_h += Pᵀ·dO, dS = P ⊙ (dP − rowsum(P ⊙ dP)),
        // dQ = s·dS·K, dK_h += s·dSᵀ·Q, over the same blocks as the forward pass.
        let probs = UncheckedSendable(lb.probs), ds = UncheckedSendable(workspace.dScores), dout = UncheckedSendable(workspace.dAttnOut)
        let qkv = UncheckedSendable(lb.qkv), rot = UncheckedSendable(lb.qkRot), drot = UncheckedSendable(workspace.dQKRot)
        let dkh = UncheckedSendable(workspace.dKHeads), dvh = UncheckedSendable(workspace.dVHeads)
        let sliding = config.isSliding(layer: l), window = config.slidingWindow, scale = attnScale
        let rounds = roundsProductInputs
        Parallel.forEach(B * nh) { task in
            let b = task / nh, h = task % nh, g = h / group
            let p = probs.value + task * T * T, s = ds.value + task * T * T
            let dO = dout.value + b * T * qDim + h * hd
            let v = qkv.value + b * T * qkvDim + qDim + kvDim + g * hd
            let q = rot.value + b * T * qkDim + h * hd
            let k = rot.value + b * T * qkDim + qDim + g * hd
            let dq = drot.value + b * T * qkDim + h * hd
            let dk = dkh.value + task * T * hd, dv = dvh.value + task * T * hd
            dk.update(repeating: 0, count: T * hd)
            dv.update(repeating: 0, count: T * hd)
            for block in Self.attentionBlocks(T: T, window: sliding ? window : nil) {
                let (r0, r1, k0, k1) = (block.rows.lowerBound, block.rows.upperBound, block.keys.lowerBound, block.keys.upperBound)
                let (R, K) = (r1 - r0, k1 - k0)
                BLAS.sgemm(transB: true, m: R, n: K, k: hd, a: dO + r0 * qDim, lda: qDim, b: v + k0 * qkvDim, ldb: qkvDim,
                           c: s + r0 * T + k0, ldc: T)
                let (pb, ldp) = self.probabilitiesForProducts(p + r0 * T + k0, task: task, rows: R, keys: K)
                BLAS.sgemm(transA: true, m: K, n: hd, k: R, a: pb, lda: ldp, b: dO + r0 * qDim, ldb: qDim,
                           beta: 1, c: dv + k0 * hd, ldc: hd)
                for i in r0..<r1 {
                    let pr = p + i * T, sr = s + i * T
                    let lo = sliding ? max(0, i - window + 1) : 0
                    let d = Kernels.dot(pr + lo, sr + lo, i - lo + 1)
                    // Masked entries of P are 0, so they give 0 here.
                    for j in k0..<k1 { sr[j] = pr[j] * (sr[j] - d) }
                }
                if rounds { NumberFormats.roundToBFloat16(s + r0 * T + k0, rows: R, columns: K, stride: T) }
                BLAS.sgemm(m: R, n: hd, k: K, alpha: scale, a: s + r0 * T + k0, lda: T, b: k + k0 * qkDim, ldb: qkDim,
                           c: dq + r0 * qkDim, ldc: qkDim)
                BLAS.sgemm(transA: true, m: K, n: hd, k: R, alpha: scale, a: s + r0 * T + k0, lda: T, b: q + r0 * qkDim, ldb: qkDim,
                           beta: 1, c: dk + k0 * hd, ldc: hd)
            }
        }

        // Sum the per-query-head dK, dV over each KV head's group; then undo RoPE and QK-norm.
        clearPartials(2)
        let dqkv = UncheckedSendable(workspace.dQKV), rstd = UncheckedSendable(lb.qkRstd)
        let qw = UncheckedSendable(P + o.qNorm), kw = UncheckedSendable(P + o.kNorm)
        let sliding01 = sliding ? 0 : 1
        let cosT = UncheckedSendable(workspace.ropeCos[sliding01]), sinT = UncheckedSendable(workspace.ropeSin[sliding01])
        let heads = nh + nkv, half = hd / 2
        parallelRows(N) { wk, rows in
            let pq = self.partial(0, wk), pk = self.partial(1, wk)
            for n in rows {
                let b = n / T, t = n % T
                for g in 0..<nkv {
                    let dk = drot.value + n * qkDim + qDim + g * hd
                    let dv = dqkv.value + n * qkvDim + qDim + kvDim + g * hd
                    let first = (b * nh + g * group) * T * hd + t * hd
                    dk.update(from: dkh.value + first, count: hd)
                    dv.update(from: dvh.value + first, count: hd)
                    for r in 1..<max(1, group) {
                        let src = first + r * T * hd
                        for i in 0..<hd { dk[i] += dkh.value[src + i]; dv[i] += dvh.value[src + i] }
                    }
                }
                for j in 0..<heads {
                    let d = drot.value + n * qkDim + j * hd
                    Kernels.ropeRotate(d, headDim: hd, cos: cosT.value + t * half, sin: sinT.value + t * half, inverse: true)
                    Kernels.rmsNormBackward(x: qkv.value + n * qkvDim + j * hd, ldx: hd, weight: j < nh ? qw.value : kw.value,
                                            rstd: rstd.value + n * heads + j, dy: d, lddy: hd,
                                            dx: dqkv.value + n * qkvDim + j * hd, lddx: hd, accumulate: false,
                                            dw: j < nh ? pq : pk, dim: hd, rows: 0..<1)
                }
                if rounds { NumberFormats.roundToBFloat16(dqkv.value + n * qkvDim, count: qkvDim) }
            }
        }
        if let G {
            reducePartials(0, dim: hd, into: G + o.qNorm)
            reducePartials(1, dim: hd, into: G + o.kNorm)
            gemm(transA: true, m: qkvDim, n: H, k: N, a: workspace.dQKV, lda: qkvDim, b: lb.xnAttn, ldb: H, beta: 1, c: G + o.qProj)
        }
        gemm(m: N, n: H, k: qkvDim, a: workspace.dQKV, b: productWeights + o.qProj, c: workspace.dXn)
        if lora != nil {
            loraBackward(layer: l, target: "q", x: lb.xnAttn, dy: workspace.dQKV, lddy: qkvDim, dx: workspace.dXn)
            loraBackward(layer: l, target: "k", x: lb.xnAttn, dy: workspace.dQKV + qDim, lddy: qkvDim, dx: workspace.dXn)
            loraBackward(layer: l, target: "v", x: lb.xnAttn, dy: workspace.dQKV + qDim + kvDim, lddy: qkvDim, dx: workspace.dXn)
        }
    }

    // MARK: LoRA

    /// Adds s·(x'·Aᵀ)·Bᵀ to `y` (`ldy` apart) for the adapter of `target` in layer `l`, if there is one,
    /// keeping u = x'·Aᵀ for the backward (x' = x, or x with dropout when training).
    private func loraForward(layer l: Int, target: String, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard let lora, let i = lora.entryIndex(layer: l, target: target) else { return }
        let e = lora.entries[i], r = lora.settings.rank
        let u = loraSaved! + (isTraining ? i * N * r : 0)
        let input = loraInput(entry: i, x: x, inFeatures: e.inFeatures)
        let A = UnsafePointer(lora.parameters.pointer + e.aOffset), Bf = UnsafePointer(lora.parameters.pointer + e.bOffset)
        ParallelGEMM.sgemm(transA: false, transB: true, m: N, n: r, k: e.inFeatures, alpha: 1, a: input, lda: e.inFeatures,
                           b: A, ldb: e.inFeatures, beta: 0, c: u, ldc: r)
        ParallelGEMM.sgemm(transA: false, transB: true, m: N, n: e.outFeatures, k: r, alpha: lora.scale, a: u, lda: r,
                           b: Bf, ldb: r, beta: 1, c: y, ldc: ldy)
    }

    /// The adapter's part of the backward for `target` in layer `l`: dB += s·dYᵀ·u, du = s·dY·B,
    /// dA += duᵀ·x', and d x += du·A (through the dropout mask).
    private func loraBackward(layer l: Int, target: String, x: UnsafePointer<Float>, dy: UnsafePointer<Float>, lddy: Int,
                              dx: UnsafeMutablePointer<Float>) {
        guard let lora, let G = loraGradients?.pointer, let i = lora.entryIndex(layer: l, target: target) else { return }
        let e = lora.entries[i], r = lora.settings.rank, s = lora.scale
        let (inF, outF) = (e.inFeatures, e.outFeatures)
        let u = UnsafePointer(loraSaved! + i * N * r), du = loraDU!
        let A = UnsafePointer(lora.parameters.pointer + e.aOffset), Bf = UnsafePointer(lora.parameters.pointer + e.bOffset)
        ParallelGEMM.sgemm(transA: true, transB: false, m: outF, n: r, k: N, alpha: s, a: dy, lda: lddy, b: u, ldb: r,
                           beta: 1, c: G + e.bOffset, ldc: r)
        ParallelGEMM.sgemm(transA: false, transB: false, m: N, n: r, k: outF, alpha: s, a: dy, lda: lddy, b: Bf, ldb: r,
                           beta: 0, c: du, ldc: r)
        let input = loraInput(entry: i, x: x, inFeatures: inF)
        ParallelGEMM.sgemm(transA: true, transB: false, m: r, n: inF, k: N, alpha: 1, a: du, lda: r, b: input, ldb: inF,
                           beta: 1, c: G + e.aOffset, ldc: inF)
        if let scratch = loraScratch, lora.settings.dropout > 0 {
            ParallelGEMM.sgemm(transA: false, transB: false, m: N, n: inF, k: r, alpha: 1, a: du, lda: r, b: A, ldb: inF,
                               beta: 0, c: scratch, ldc: inF)
            applyDropoutMask(entry: i, scratch, inFeatures: inF)
            let src = UncheckedSendable(scratch), dst = UncheckedSendable(dx)
            parallelRows(N) { _, rows in
                for n in rows { for j in 0..<inF { dst.value[n * inF + j] += src.value[n * inF + j] } }
            }
        } else {
            ParallelGEMM.sgemm(transA: false, transB: false, m: N, n: inF, k: r, alpha: 1, a: du, lda: r, b: A, ldb: inF,
                               beta: 1, c: dx, ldc: inF)
        }
    }

    /// What the adapter of entry `i` reads: `x`, or when training under dropout x ⊙ mask / (1 − p) in the scratch.
    private func loraInput(entry i: Int, x: UnsafePointer<Float>, inFeatures: Int) -> UnsafePointer<Float> {
        guard isTraining, let scratch = loraScratch else { return x }
        scratch.update(from: x, count: N * inFeatures)
        applyDropoutMask(entry: i, scratch, inFeatures: inFeatures)
        return UnsafePointer(scratch)
    }

    /// Multiplies `buffer` [N × in] by entry `i`'s dropout mask scaled by 1/(1 − p): each element is kept
    /// with probability 1 − p, drawn from (`loraDropoutSeed`, entry, row), so forward and backward agree.
    private func applyDropoutMask(entry i: Int, _ buffer: UnsafeMutablePointer<Float>, inFeatures: Int) {
        guard let lora else { return }
        let p = lora.settings.dropout, keep = Float(1 / (1 - p))
        let threshold = UInt64(min(p * 18446744073709551616.0, 18446744073709549568.0))
        let b = UncheckedSendable(buffer), seed = loraDropoutSeed
        parallelRows(N) { _, rows in
            for n in rows {
                var rng = SplitMix64(seed: seed ^ (UInt64(i) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(n) &* 0xC2B2_AE3D_27D4_EB4F))
                let row = b.value + n * inFeatures
                for j in 0..<inFeatures { row[j] = rng.next() < threshold ? 0 : row[j] * keep }
            }
        }
    }
}

/// Hands out consecutive regions of one float block, each rounded up to 16 floats (64 bytes), in the
/// order asked. A measuring carver only adds up the sizes and returns `block` for every region.
struct RegionCarver {
    /// Start of the block (a placeholder when measuring).
    let block: UnsafeMutablePointer<Float>
    let measuring: Bool
    /// Floats handed out so far, padding included.
    private(set) var floats = 0

    init(block: UnsafeMutablePointer<Float>, measuring: Bool) { self.block = block; self.measuring = measuring }

    mutating func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        let region = measuring ? block : block + floats
        floats += (count + 15) & ~15
        return region
    }
}

/// Every activation, saved tensor and backward scratch buffer of `Gemma3TrainingModel`: named regions of
/// one contiguous block, carved in the order the initializers below take them (N = B·T rows).
struct TrainingWorkspace {
    /// The sizes the regions depend on.
    struct Shape {
        var B, T, H, I, V, L, nh, nkv, hd, workers: Int
        var N: Int { B * T }
        var qDim: Int { nh * hd }
        var kvDim: Int { nkv * hd }
        var qkvDim: Int { qDim + 2 * kvDim }
        var qkDim: Int { qDim + kvDim }
    }

    /// What one decoder layer saves for the backward pass.
    struct LayerBuffers {
        var xnAttn, rstdIn, qkv, qkRstd, qkRot, probs, attnOut, attnProj, rstdPostAttn: UnsafeMutablePointer<Float>
        var residMid, xnFF, rstdPreFF, gateUp, act, ffOut, rstdPostFF: UnsafeMutablePointer<Float>

        /// `residMid` is only carved for training; an evaluation model points it at the residual stream
        /// (`TrainingWorkspace.init` does), which the attention block then updates in place.
        init(_ c: inout RegionCarver, _ s: Shape, training: Bool) {
            let N = s.N
            xnAttn = c.take(N * s.H)                 // input_layernorm(x)
            rstdIn = c.take(N)                       // its 1/rms per row
            qkv = c.take(N * s.qkvDim)               // fused q, k, v projections
            qkRstd = c.take(N * (s.nh + s.nkv))      // QK-norm 1/rms per row and head
            qkRot = c.take(N * s.qkDim)              // q, k after QK-norm and RoPE
            probs = c.take(s.B * s.nh * s.T * s.T)   // attention probabilities per (sequence, head)
            attnOut = c.take(N * s.qDim)             // probabilities · values, heads side by side
            attnProj = c.take(N * s.H)               // o_proj output
            rstdPostAttn = c.take(N)                 // post_attention_layernorm 1/rms
            residMid = training ? c.take(N * s.H) : c.block  // residual stream after attention
            xnFF = c.take(N * s.H)                   // pre_feedforward_layernorm(residMid)
            rstdPreFF = c.take(N)                    // its 1/rms
            gateUp = c.take(N * 2 * s.I)             // fused gate, up projections
            act = c.take(N * s.I)                    // gelu_tanh(gate) · up
            ffOut = c.take(N * s.H)                  // down_proj output
            rstdPostFF = c.take(N)                   // post_feedforward_layernorm 1/rms
        }
    }

    /// One per layer when training; evaluation reuses a single set.
    var layers: [LayerBuffers]
    /// Residual stream: the scaled embedding, then after each layer (training; evaluation keeps one, updated in place).
    let resid: [UnsafeMutablePointer<Float>]
    /// Final norm output [N, H] and its 1/rms [N].
    let xnFinal, rstdFinal: UnsafeMutablePointer<Float>
    /// Logits [N, V] (or their gradient), log-sum-exp and loss per row [N].
    let logitsBuffer, lse, rowLoss: UnsafeMutablePointer<Float>
    /// RoPE tables [T, hd/2]: [0] sliding base, [1] full base.
    let ropeCos, ropeSin: [UnsafeMutablePointer<Float>]
    // Backward scratch (training only; otherwise every one is the block start and unused).
    let dResid, dXn, dBranch: UnsafeMutablePointer<Float>   // [N, H]
    let dAct, dGateUp: UnsafeMutablePointer<Float>          // [N, I], [N, 2I]
    let dAttnOut, dQKV, dQKRot: UnsafeMutablePointer<Float> // [N, qDim], [N, qkvDim], [N, qkDim]
    let dScores: UnsafeMutablePointer<Float>                // [B·nh, T, T]
    let dKHeads, dVHeads: UnsafeMutablePointer<Float>       // [B·nh, T, hd], before summing over each KV group
    /// Four per-worker accumulators of `partialStride` floats for norm-weight gradients.
    let partials: UnsafeMutablePointer<Float>
    let partialStride: Int

    init(_ c: inout RegionCarver, _ s: Shape, training: Bool) {
        let N = s.N
        layers = (0..<(training ? s.L : 1)).map { _ in LayerBuffers(&c, s, training: training) }
        resid = (0..<(training ? s.L + 1 : 1)).map { _ in c.take(N * s.H) }
        if !training { layers[0].residMid = resid[0] }
        xnFinal = c.take(N * s.H)
        rstdFinal = c.take(N)
        logitsBuffer = c.take(N * s.V)
        lse = c.take(N)
        rowLoss = c.take(N)
        let half = s.hd / 2
        let cosSliding = c.take(s.T * half), sinSliding = c.take(s.T * half)
        let cosFull = c.take(s.T * half), sinFull = c.take(s.T * half)
        ropeCos = [cosSliding, cosFull]
        ropeSin = [sinSliding, sinFull]
        partialStride = (max(s.H, s.hd) + 15) & ~15
        func scratch(_ count: Int) -> UnsafeMutablePointer<Float> { training ? c.take(count) : c.block }
        dResid = scratch(N * s.H)
        dXn = scratch(N * s.H)
        dBranch = scratch(N * s.H)
        dAct = scratch(N * s.I)
        dGateUp = scratch(N * 2 * s.I)
        dAttnOut = scratch(N * s.qDim)
        dQKV = scratch(N * s.qkvDim)
        dQKRot = scratch(N * s.qkDim)
        dScores = scratch(s.B * s.nh * s.T * s.T)
        dKHeads = scratch(s.B * s.nh * s.T * s.hd)
        dVHeads = scratch(s.B * s.nh * s.T * s.hd)
        partials = scratch(4 * s.workers * partialStride)
    }
}
