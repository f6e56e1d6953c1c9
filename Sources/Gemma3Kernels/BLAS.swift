import COpenBLAS

/// Thin, typed wrappers over OpenBLAS. All matrices are row-major float32.
public enum BLAS {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major.
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
        let lda = lda ?? (transA ? m : k)
        let ldb = ldb ?? (transB ? k : n)
        let ldc = ldc ?? n
        cblas_sgemm(
            CblasRowMajor,
            transA ? CblasTrans : CblasNoTrans,
            transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k),
            alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Sets the number of threads OpenBLAS uses. Call with 1 inside regions that are already
    /// parallelised by `Parallel.forEach`, so the two pools never oversubscribe the cores.
    public static func setThreads(_ n: Int) {
        openblas_set_num_threads(Int32(n))
    }

    /// The number of threads OpenBLAS will use.
    public static var threads: Int { Int(openblas_get_num_threads()) }
}
