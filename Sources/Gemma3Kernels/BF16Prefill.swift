import CGemma3Kernels
import Foundation
import Synchronization

/// How batched products (prompt prefill) multiply.
public enum PrefillPrecision: String, Sendable, CaseIterable {
    /// Weights dequantized to float32, `sgemm` in float32 (exact on the stored weights).
    case float32 = "f32"
    /// Weights and activations rounded to bfloat16, products accumulated in float32, on CPUs with
    /// AVX-512 BF16 (`BF16Panels`); float32 elsewhere.
    case bfloat16 = "bf16"

    /// Whether this CPU runs the bfloat16 kernels.
    public static let bfloat16Supported: Bool = gemma3_has_avx512_bf16() != 0

    /// The FLOP rate of this CPU's bfloat16 dot products over its float32 FMA's, measured once (a few
    /// milliseconds); 0 without AVX-512 BF16. 1.0 on the Intel Xeon of this project's machines (the
    /// instruction does twice the work at half the issue rate), about 2 where 512-bit FMA is split in two.
    public static let bfloat16DotSpeedup: Double = gemma3_bf16_dot_speedup()

    /// Whether bfloat16 prefill is the faster choice here: only where the bfloat16 dot products outrun
    /// float32 FMA clearly (≥ 1.5×); otherwise float32 products (oneDNN or OpenBLAS) are faster than our
    /// bfloat16 kernel (measured on the Intel Xeon: 637 vs 502 tokens/s for a 512-token Gemma 3 270M prefill).
    ///
    /// Decided from the CPU, not from `bfloat16DotSpeedup`: a timed probe lands on either side of the
    /// threshold on a loaded machine, and two processes that choose differently compute different bits
    /// (a bf16 training run resumed by another process diverged in CI). AMD's AVX-512 BF16 (Zen 4, Zen 5:
    /// measured 1.7–2.1×) runs `vdpbf16ps` at the FMA's instruction rate, so at twice its FLOP rate;
    /// Intel's (Cooper Lake to Emerald Rapids: measured 1.0×) at half, so no faster.
    public static var bfloat16IsFaster: Bool { bfloat16Supported && gemma3_cpu_is_amd() != 0 }

    /// What `RuntimeSettings.current` chooses on this CPU: bfloat16 where it runs, else float32.
    public static var automatic: PrefillPrecision { RuntimeSettings.current.resolvedPrefill }
}

/// A weight matrix rounded to bfloat16 and laid out for `gemma3_bf16_gemm`: panels of 32 rows, each
/// holding, for every pair of input features, the 32 rows' two values side by side (128 bytes, two
/// 64-byte vectors, per pair), so the kernel streams a panel front to back.
///
/// Why: prefill is compute-bound, and AVX-512 BF16 performs twice the multiply-adds per
/// instruction of float32 FMA (measured ≈ 2.1× `sgemm` per core on Zen 4). Rounding weights and
/// activations to bfloat16 (8-bit mantissa) moves the products by ≈ 0.2–0.4% relative; on
/// quantized weights that is the same order as the quantization itself. Decoding is untouched.
public final class BF16Panels: @unchecked Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    /// Pairs of input features (inFeatures rounded up to even, halved).
    public let kPairs: Int
    public let panelCount: Int
    private let packed: UnsafeMutablePointer<UInt16>

    /// Dequantizes `weight` one panel at a time and rounds it to bfloat16 (in parallel).
    /// Only call where `PrefillPrecision.bfloat16Supported`.
    public init(_ weight: any LinearWeight) {
        precondition(PrefillPrecision.bfloat16Supported, "BF16Panels needs a CPU with AVX-512 BF16")
        let rowsPerPanel = Int(GEMMA3_BF16_PANEL_ROWS)
        outFeatures = weight.outFeatures
        inFeatures = weight.inFeatures
        kPairs = (inFeatures + 1) / 2
        panelCount = (outFeatures + rowsPerPanel - 1) / rowsPerPanel
        let panelValues = kPairs * 2 * rowsPerPanel
        let bytes = max(1, panelCount * panelValues) * 2
        // Ordinary pages: prefill is compute-bound, and faulting in huge pages (zeroing, compaction)
        // made building up to 10× slower.
        packed = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64).bindMemory(to: UInt16.self, capacity: bytes / 2)
        let (dst, cols, out) = (UncheckedSendable(packed), inFeatures, outFeatures)
        Parallel.chunks(panelCount) { panels in
            // Per worker: one panel's rows as float32, then rounded and interleaved into place.
            let rows = UnsafeMutablePointer<Float>.allocate(capacity: rowsPerPanel * cols)
            defer { rows.deallocate() }
            for p in panels {
                let first = p * rowsPerPanel, count = min(rowsPerPanel, out - first)
                weight.dequantize(rows: first..<(first + count), into: rows)
                gemma3_bf16_pack_panel(rows, cols, count, cols, dst.value + p * panelValues)
            }
        }
    }

    deinit { packed.deallocate() }

    /// Bytes of the packed copy.
    public var storageBytes: Int { panelCount * kPairs * 2 * Int(GEMMA3_BF16_PANEL_ROWS) * 2 }

    /// Y[n × outFeatures] = X[n × inFeatures] · Wᵀ (row strides `ldx`, `ldy`), panels split over the cores.
    public func gemm(n: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard n > 0, outFeatures > 0 else { return }
        let block = Int(GEMMA3_BF16_TOKEN_BLOCK)
        let paddedRows = (n + block - 1) / block * block
        let stride = 2 * kPairs
        let xb = UnsafeMutablePointer<UInt16>.allocate(capacity: paddedRows * stride)
        defer { xb.deallocate() }
        (xb + n * stride).initialize(repeating: 0, count: (paddedRows - n) * stride)
        let (src, act, out) = (UncheckedSendable(x), UncheckedSendable(xb), UncheckedSendable(y))
        let (cols, pairs, rows, total) = (inFeatures, kPairs, outFeatures, panelCount)
        Parallel.chunks(n, minimumPerChunk: 16) { t in
            gemma3_bf16_round_rows(src.value + t.lowerBound * ldx, ldx, t.count, cols, act.value + t.lowerBound * stride, stride)
        }
        let panels = UncheckedSendable(packed)
        Parallel.chunks(total) { p in
            gemma3_bf16_gemm(panels.value, pairs, p.lowerBound, p.upperBound, rows, act.value, n, out.value, ldy)
        }
    }
}

/// A weight that keeps a second copy of another for batched products (prefill) and forwards everything
/// else — shape, storage, decoding (`gemv`), row lookups — to the wrapped one.
public protocol PrefillCopyLinear: LinearWeight {
    var base: any LinearWeight { get }
}

extension PrefillCopyLinear {
    public var outFeatures: Int { base.outFeatures }
    public var inFeatures: Int { base.inFeatures }
    public var storageBytes: Int { base.storageBytes }
    public var formatName: String { base.formatName }

    public func gemv(rows: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        base.gemv(rows: rows, x: x, y: y)
    }

    public func gemv(rows: Range<Int>, batch: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        base.gemv(rows: rows, batch: batch, x: x, ldx: ldx, y: y, ldy: ldy)
    }

    public func dequantize(rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        base.dequantize(rows: rows, into: out)
    }
}

/// A `LinearWeight` whose batched products (`gemm`) run in bfloat16 (`BF16Panels`) while decoding
/// (`gemv`) and row lookups use the wrapped weight unchanged.
///
/// Products of at least `minimumTokensToBuild` tokens run on the panels (built by the first of
/// them: building costs about as much as a few float32 prefills, so short prompts do not pay for
/// it); shorter products always use the wrapped weight's float32 path, built or not, so a product's
/// numbers depend on its size only, never on what ran before (a server's answer must not change
/// with the requests it served earlier).
public final class BF16PrefillLinear: PrefillCopyLinear, @unchecked Sendable {
    public let base: any LinearWeight
    private let panels = Mutex<BF16Panels?>(nil)

    /// Wraps `base`; requires `PrefillPrecision.bfloat16Supported`.
    public init(_ base: any LinearWeight) {
        precondition(PrefillPrecision.bfloat16Supported, "BF16PrefillLinear needs a CPU with AVX-512 BF16")
        self.base = base
    }


    /// The packed copy, built now if it was not yet.
    public var bf16Panels: BF16Panels {
        panels.withLock { cached in
            if let cached { return cached }
            let built = BF16Panels(base)
            cached = built
            return built
        }
    }

    /// Tokens from which a batched product builds the panels.
    public static let minimumTokensToBuild = 32

    public func gemm(n: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        if n >= Self.minimumTokensToBuild {
            bf16Panels.gemm(n: n, x: x, ldx: ldx, y: y, ldy: ldy)
        } else {
            base.gemm(n: n, x: x, ldx: ldx, y: y, ldy: ldy)
        }
    }
}

/// A block-format weight with a float32 copy for batched products (prefill): built once, on the first
/// product of at least `minimumTokensToBuild` tokens, then every such product is one `sgemm` on it
/// (the default `gemm` dequantizes a panel of rows into a fresh buffer on every call). Shorter
/// products always take the default path, so results depend on a product's size only. Decoding
/// (`gemv`) and row lookups use the wrapped weight unchanged. Costs 4 bytes per weight once built.
public final class Float32PrefillLinear: PrefillCopyLinear, @unchecked Sendable {
    public let base: any LinearWeight
    private let copy = Mutex<UncheckedSendable<UnsafeMutablePointer<Float>>?>(nil)

    public init(_ base: any LinearWeight) { self.base = base }

    deinit { copy.withLock { $0?.value.deallocate() } }


    /// Tokens from which a batched product builds the float32 copy.
    public static let minimumTokensToBuild = 32

    private var float32Copy: UnsafeMutablePointer<Float> {
        copy.withLock { cached in
            if let cached { return cached.value }
            let (rows, cols) = (base.outFeatures, base.inFeatures)
            let built = UnsafeMutablePointer<Float>.allocate(capacity: max(1, rows * cols))
            let p = UncheckedSendable(built), weight = base
            Parallel.chunks(rows, minimumPerChunk: 8) { r in
                weight.dequantize(rows: r, into: p.value + r.lowerBound * cols)
            }
            cached = UncheckedSendable(built)
            return built
        }
    }

    public func gemm(n: Int, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        guard n >= Self.minimumTokensToBuild else {
            base.gemm(n: n, x: x, ldx: ldx, y: y, ldy: ldy)
            return
        }
        let w = float32Copy
        ParallelGEMM.sgemm(transB: true, m: n, n: outFeatures, k: inFeatures, a: x, lda: ldx, b: w, ldb: inFeatures, c: y, ldc: ldy)
    }
}
