import CGemma3Kernels
import COneDNN
import COpenBLAS
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The library that computes float32 matrix products.
///
/// OpenBLAS picks its kernels from a table of CPU models: on a model newer than the table it falls
/// back to old SSE3 kernels (≈ 4× slower). oneDNN compiles its kernels at run time for the
/// instruction set the CPU reports. `automatic` keeps OpenBLAS where its kernels use the CPU's
/// widest vectors and takes oneDNN where they do not.
public enum MatrixProductBackend: String, Sendable, CaseIterable {
    case openBLAS = "openblas"
    case oneDNN = "onednn"

    /// The choice for this CPU: OpenBLAS when the kernels it loaded use the CPU's widest float32
    /// vectors (AVX-512 or AVX2+FMA), oneDNN otherwise.
    public static let automatic = choice(openBLASVectorLevel: vectorLevel(ofOpenBLASCore: openBLASCoreName),
                                         cpuVectorLevel: CPUFeatures.vectorLevel)

    /// OpenBLAS when its kernels reach the CPU's vector level (`CPUFeatures.vectorLevel`'s scale), else oneDNN.
    static func choice(openBLASVectorLevel: Int, cpuVectorLevel: Int) -> MatrixProductBackend {
        openBLASVectorLevel >= cpuVectorLevel ? .openBLAS : .oneDNN
    }

    /// The kernel family OpenBLAS chose for this CPU (`openblas_get_corename()`), e.g. "Zen", "SkylakeX",
    /// or "Prescott" when it did not know the model.
    public static let openBLASCoreName: String = String(cString: openblas_get_corename())

    /// The instruction set oneDNN's kernels use on this CPU, e.g. "avx2", "avx512_core_bf16".
    public static let oneDNNInstructionSet: String = {
        switch dnnl_get_effective_cpu_isa() {
        case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx"
        case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16"
        case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni"
        case dnnl_cpu_isa_avx512_core: return "avx512_core"
        case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni"
        case dnnl_cpu_isa_avx2: return "avx2"
        case dnnl_cpu_isa_avx: return "avx"
        case dnnl_cpu_isa_sse41: return "sse41"
        case let other: return "isa 0x\(String(other.rawValue, radix: 16))"
        }
    }()

    /// What runs the products, for reports: "OpenBLAS Zen", "oneDNN avx512_core_bf16".
    public var kernelDescription: String {
        switch self {
        case .openBLAS: return "OpenBLAS \(Self.openBLASCoreName)"
        case .oneDNN: return "oneDNN \(Self.oneDNNInstructionSet)"
        }
    }

    /// The vector level (as `CPUFeatures.vectorLevel`) of an OpenBLAS kernel family.
    static func vectorLevel(ofOpenBLASCore name: String) -> Int {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return 2
        case "haswell", "zen", "excavator": return 1
        default: return 0
        }
    }
}

/// What the CPU executes, read once.
public enum CPUFeatures {
    /// 2: AVX-512 (F, BW, VL, DQ); 1: AVX2 with FMA; 0: neither.
    public static let vectorLevel = Int(gemma3_cpu_vector_level())
}

/// Typed wrappers over the matrix-product libraries. All matrices are row-major float32.
public enum BLAS {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major, on the backend in force
    /// (`RuntimeSettings.productBackend`).
    ///
    /// - Parameters:
    ///   - transA: use Aᵀ; A is stored [k×m] when true, [m×k] otherwise.
    ///   - transB: use Bᵀ; B is stored [n×k] when true (the `nn.Linear` weight layout), [k×n] otherwise.
    ///   - lda/ldb/ldc: leading dimensions; default to the packed row length.
    @inlinable
    public static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int? = nil,
        b: UnsafePointer<Float>, ldb: Int? = nil,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int? = nil
    ) {
        product(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                a: a, lda: lda ?? (transA ? m : k), b: b, ldb: ldb ?? (transB ? k : n),
                beta: beta, c: c, ldc: ldc ?? n)
    }

    /// Runs `body` with every product it makes on this thread, and in the `Parallel` regions it
    /// starts, computed by `backend` instead of the one the settings choose (tests, A/B timing).
    public static func withBackend<R>(_ backend: MatrixProductBackend, _ body: () throws -> R) rethrows -> R {
        let previous = scopedBackend
        scopedBackend = backend
        defer { scopedBackend = previous }
        return try body()
    }

    /// The backend `withBackend` set for this thread, nil outside such a scope.
    static var scopedBackend: MatrixProductBackend? {
        get {
            let raw = Int(bitPattern: pthread_getspecific(scopedBackendKey))
            return raw == 0 ? nil : MatrixProductBackend.allCases[raw - 1]
        }
        set {
            let raw = newValue.map { MatrixProductBackend.allCases.firstIndex(of: $0)! + 1 } ?? 0
            pthread_setspecific(scopedBackendKey, UnsafeRawPointer(bitPattern: raw))
        }
    }

    private static let scopedBackendKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    @usableFromInline
    static func product(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let oneDNN = scopedBackend.map { $0 == .oneDNN } ?? RuntimeSettings.productBackendIsOneDNN
        if oneDNN {
            // OpenMP's thread count is per calling thread: set it for this one (workers run 1).
            setOpenMPThreads?(Int32(libraryThreads.load(ordering: .relaxed)))
            let status = dnnl_sgemm(transA ? 84 : 78, transB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha,
                                    a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))  // 84 = "T", 78 = "N"
            if status == dnnl_success { return }
            // oneDNN refuses only arguments cblas would also reject; let cblas report them.
        }
        cblas_sgemm(
            CblasRowMajor,
            transA ? CblasTrans : CblasNoTrans,
            transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k),
            alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Threads the libraries use inside one product (1 inside regions `Parallel.forEach` already splits).
    static let libraryThreads = Atomic<Int>(Int(openblas_get_num_threads()))

    /// oneDNN is built on OpenMP (libgomp, loaded with it); found at run time so no OpenMP headers are needed.
    nonisolated(unsafe) static let setOpenMPThreads: (@convention(c) (Int32) -> Void)? = {
        guard let symbol = dlsym(nil, "omp_set_num_threads") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32) -> Void).self)
    }()

    /// Sets the number of threads one product uses. Call with 1 inside regions that are already
    /// parallelised by `Parallel.forEach`, so the two pools never oversubscribe the cores.
    public static func setThreads(_ n: Int) {
        openblas_set_num_threads(Int32(n))
        libraryThreads.store(max(1, n), ordering: .relaxed)
    }

    /// The number of threads one product uses.
    public static var threads: Int { libraryThreads.load(ordering: .relaxed) }
}
