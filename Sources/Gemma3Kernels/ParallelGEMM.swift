/// Matrix products split over the `Parallel` workers, each worker calling single-threaded OpenBLAS on
/// its own panel of C. This keeps one thread pool on the machine: OpenBLAS's own threads spin after
/// every call and would steal the cores from the element-wise passes that follow.
public enum ParallelGEMM {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C (row-major, same arguments as `BLAS.sgemm`),
    /// with C split into one panel per worker along its longer side.
    /// Call `BLAS.setThreads(1)` once before using it (the training model does).
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
        let workers = Parallel.threadCount
        // Below ~2 MFLOP per worker the split costs more than it saves.
        if workers <= 1 || m * n * k < (1 << 20) * workers {
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                       a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        let ap = UncheckedSendable(a), bp = UncheckedSendable(b), cp = UncheckedSendable(c)
        if m >= n {
            // Panels of rows of C (multiples of 16 rows keep the BLAS micro-kernels full).
            let unit = 16
            let blocks = (m + unit - 1) / unit
            let parts = min(workers, blocks)
            Parallel.forEach(parts) { w in
                let lo = min(m, blocks * w / parts * unit), hi = min(m, blocks * (w + 1) / parts * unit)
                guard lo < hi else { return }
                let aOff = transA ? lo : lo * lda
                BLAS.sgemm(transA: transA, transB: transB, m: hi - lo, n: n, k: k, alpha: alpha,
                           a: ap.value + aOff, lda: lda, b: bp.value, ldb: ldb, beta: beta,
                           c: cp.value + lo * ldc, ldc: ldc)
            }
        } else {
            let unit = 16
            let blocks = (n + unit - 1) / unit
            let parts = min(workers, blocks)
            Parallel.forEach(parts) { w in
                let lo = min(n, blocks * w / parts * unit), hi = min(n, blocks * (w + 1) / parts * unit)
                guard lo < hi else { return }
                let bOff = transB ? lo * ldb : lo
                BLAS.sgemm(transA: transA, transB: transB, m: m, n: hi - lo, k: k, alpha: alpha,
                           a: ap.value, lda: lda, b: bp.value + bOff, ldb: ldb, beta: beta,
                           c: cp.value + lo, ldc: ldc)
            }
        }
    }
}
