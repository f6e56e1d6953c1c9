import CGemma3Kernels
import Foundation
import Synchronization

/// Process-wide compute settings: how many threads, which thread pool, how training products are
/// threaded, and which kernels quantized models use. The libraries never read the environment; a
/// program fills this value (the `gemma3` tool from its flags and `GEMMA3_*` variables) and calls
/// `RuntimeSettings.configure(_:)` once, before loading a model. Without that call the defaults
/// hold: every core, the spinning pool, the fastest kernels this CPU runs.
public struct RuntimeSettings: Sendable, Equatable {
    /// How training-model matrix products use the cores.
    public enum GEMMThreading: String, Sendable, CaseIterable {
        /// Products split over `Parallel`'s workers, each calling single-threaded OpenBLAS (faster here).
        case workers
        /// OpenBLAS threads each product itself (for A/B timing).
        case openBLAS = "openblas"
    }

    /// Worker threads of `Parallel` loops (≥ 1).
    public var threads: Int
    /// Whether parallel regions run on the persistent spinning pool (false: Dispatch for every region).
    public var usesWorkerPool: Bool
    public var gemmThreading: GEMMThreading
    /// Decode kernels of quantized models: nil picks `.int8` where the CPU has AVX-512 VNNI, else `.int16`.
    public var decodeActivations: QuantizedLinear.ActivationPrecision?
    /// Whether quantized matrices are unpacked to bytes with float scales for decoding (false: packed
    /// blocks, Q4_0/Q5_0 widened to Q8_0; only where the 8-bit kernels do not run).
    public var unpacksForDecode: Bool
    /// Prompt-prefill arithmetic of quantized models: nil picks bfloat16 where the CPU has AVX-512 BF16.
    public var prefill: PrefillPrecision?
    /// The library of float32 matrix products: nil picks `MatrixProductBackend.automatic` for this CPU.
    public var productBackend: MatrixProductBackend?
    /// Whether bfloat16 mixed-precision training runs its projection and LM-head products natively in
    /// bfloat16 (`BFloat16Products`): nil where they pay on this CPU (`BFloat16Products.pay`); false keeps
    /// float32 products of bfloat16-rounded inputs (same values up to the order of the float32 sums).
    public var nativeBFloat16Products: Bool?

    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount, usesWorkerPool: Bool = true,
                gemmThreading: GEMMThreading = .workers, decodeActivations: QuantizedLinear.ActivationPrecision? = nil,
                unpacksForDecode: Bool = true, prefill: PrefillPrecision? = nil,
                productBackend: MatrixProductBackend? = nil, nativeBFloat16Products: Bool? = nil) {
        self.threads = max(1, threads)
        self.usesWorkerPool = usesWorkerPool
        self.gemmThreading = gemmThreading
        self.decodeActivations = decodeActivations
        self.unpacksForDecode = unpacksForDecode
        self.prefill = prefill
        self.productBackend = productBackend
        self.nativeBFloat16Products = nativeBFloat16Products
    }

    /// Whether these settings run bfloat16 training products natively on this CPU (never where the
    /// CPU lacks AVX-512 BF16).
    public var resolvedNativeBFloat16Products: Bool {
        (nativeBFloat16Products ?? BFloat16Products.pay) && PrefillPrecision.bfloat16Supported
    }

    /// The product backend these settings choose on this CPU.
    public var resolvedProductBackend: MatrixProductBackend { productBackend ?? .automatic }

    /// The decode kernels these settings choose on this CPU.
    public var resolvedDecodeActivations: QuantizedLinear.ActivationPrecision {
        let chosen = decodeActivations ?? (QuantizedLinear.int8Supported ? .int8 : .int16)
        return chosen == .int8 && !QuantizedLinear.int8Supported ? .int16 : chosen
    }

    /// The prefill arithmetic these settings choose on this CPU.
    public var resolvedPrefill: PrefillPrecision {
        let chosen = prefill ?? (PrefillPrecision.bfloat16IsFaster ? .bfloat16 : .float32)
        return chosen == .bfloat16 && !PrefillPrecision.bfloat16Supported ? .float32 : chosen
    }

    private static let state = Mutex(RuntimeSettings())
    // Read on every parallel region, so kept apart from the mutex.
    private static let threadCount = Atomic<Int>(max(1, ProcessInfo.processInfo.activeProcessorCount))
    private static let workerPool = Atomic<Bool>(true)
    private static let oneDNNProducts = Atomic<Bool>(MatrixProductBackend.automatic == .oneDNN)

    /// The settings in force.
    public static var current: RuntimeSettings { state.withLock { $0 } }

    /// Makes `settings` the process's settings. Call before loading models or starting work: matrices
    /// already loaded keep the kernels they were built with, and the worker pool keeps the size it
    /// started with (more threads than it has run on Dispatch).
    public static func configure(_ settings: RuntimeSettings) {
        state.withLock { $0 = settings }
        threadCount.store(settings.threads, ordering: .relaxed)
        workerPool.store(settings.usesWorkerPool, ordering: .relaxed)
        oneDNNProducts.store(settings.resolvedProductBackend == .oneDNN, ordering: .relaxed)
    }

    /// `threads` of the settings in force (cheap: one atomic load).
    static var threads: Int { threadCount.load(ordering: .relaxed) }
    /// `usesWorkerPool` of the settings in force (one atomic load).
    static var usesWorkerPool: Bool { workerPool.load(ordering: .relaxed) }
    /// Whether `resolvedProductBackend` of the settings in force is oneDNN (one atomic load per product).
    @usableFromInline
    static var productBackendIsOneDNN: Bool { oneDNNProducts.load(ordering: .relaxed) }
}
