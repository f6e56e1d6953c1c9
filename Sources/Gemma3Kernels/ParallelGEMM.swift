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
        let ap = UncheckedSendable(a), bp = UncheckedSendable(b), cp = UncheckedSendable(c)
        forEachPanel(m: m, n: n, k: k) { rows, cols in
            let aOff = transA ? rows.lowerBound : rows.lowerBound * lda
            let bOff = transB ? cols.lowerBound * ldb : cols.lowerBound
            BLAS.sgemm(transA: transA, transB: transB, m: rows.count, n: cols.count, k: k, alpha: alpha,
                       a: ap.value + aOff, lda: lda, b: bp.value + bOff, ldb: ldb, beta: beta,
                       c: cp.value + rows.lowerBound * ldc + cols.lowerBound, ldc: ldc)
        }
    }

    /// Calls `body(rows, columns)` for each panel of C[m×n] of `panels(m:n:k:)`, one per `Parallel` worker.
    @inlinable
    public static func forEachPanel(m: Int, n: Int, k: Int, _ body: (Range<Int>, Range<Int>) -> Void) {
        let parts = panels(m: m, n: n, k: k)
        if parts.count == 1 { body(parts[0].rows, parts[0].columns); return }
        Parallel.forEach(parts.count) { w in body(parts[w].rows, parts[w].columns) }
    }

    /// C[m×n] cut into one panel per `Parallel` worker along its longer side, in multiples of 16 rows
    /// or columns (full micro-kernels); one panel below ~2 MFLOP per worker, where a split costs more
    /// than it saves.
    @inlinable
    public static func panels(m: Int, n: Int, k: Int) -> [(rows: Range<Int>, columns: Range<Int>)] {
        let workers = Parallel.threadCount
        if workers <= 1 || m * n * k < (1 << 20) * workers { return [(0..<m, 0..<n)] }
        let splitRows = m >= n
        let length = splitRows ? m : n, unit = 16
        let blocks = (length + unit - 1) / unit
        let parts = min(workers, blocks)
        return (0..<parts).compactMap { w in
            let lo = min(length, blocks * w / parts * unit), hi = min(length, blocks * (w + 1) / parts * unit)
            guard lo < hi else { return nil }
            return splitRows ? (lo..<hi, 0..<n) : (0..<m, lo..<hi)
        }
    }
}
