import CGemma3Kernels
import COneDNN
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Matrix products on bfloat16 inputs with float32 accumulation and a float32 result, through oneDNN's
/// matmul primitive (its brgemm kernels for AVX-512 BF16 and AMX, which oneDNN picks for the CPU at run
/// time). Bfloat16 mixed-precision training uses them where the CPU's bfloat16 dot products outrun its
/// float32 FMA; elsewhere it keeps float32 products of bfloat16-rounded inputs, which give the same
/// values up to the order of the float32 sums.
public enum BFloat16Products {
    /// Whether native bfloat16 products pay on this CPU: oneDNN's kernels use AMX, or AVX-512 BF16 where
    /// its dot products outrun float32 FMA (`PrefillPrecision.bfloat16IsFaster`: ≈ 1.8× on AMD Zen 5,
    /// 1.0× on the Intel Xeon of this project's machines, where they would lose). Fixed for the CPU, so
    /// every process on a machine computes the same bits.
    public static let pay: Bool = {
        let isa = dnnl_get_effective_cpu_isa()
        return isa == dnnl_cpu_isa_avx512_core_amx || (isa == dnnl_cpu_isa_avx512_core_bf16 && PrefillPrecision.bfloat16IsFaster)
    }()

    /// C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C, row-major as `BLAS.sgemm`, A and B holding
    /// bfloat16 bits. One thread (call it from `Parallel` workers to split a product). Returns false when
    /// oneDNN has no kernel for these arguments (then nothing was written).
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                            a: UnsafePointer<UInt16>, lda: Int, b: UnsafePointer<UInt16>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) -> Bool {
        guard m > 0, n > 0 else { return true }
        let key = PlanKey(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc,
                          alpha: alpha.bitPattern, beta: beta.bitPattern)
        guard let plan = plan(for: key), let stream = threadStream() else { return false }
        // oneDNN runs on OpenMP: one thread inside, the callers split the work.
        BLAS.setOpenMPThreads?(1)
        var aDesc = plan.a, bDesc = plan.b, cDesc = plan.c
        var aMem: dnnl_memory_t?, bMem: dnnl_memory_t?, cMem: dnnl_memory_t?, scratchMem: dnnl_memory_t?
        defer { for mem in [aMem, bMem, cMem, scratchMem] { if let mem { dnnl_memory_destroy(mem) } } }
        guard dnnl_memory_create(&aMem, &aDesc, engine, UnsafeMutableRawPointer(mutating: a)) == dnnl_success,
              dnnl_memory_create(&bMem, &bDesc, engine, UnsafeMutableRawPointer(mutating: b)) == dnnl_success,
              dnnl_memory_create(&cMem, &cDesc, engine, UnsafeMutableRawPointer(c)) == dnnl_success else { return false }
        var args = [dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: aMem), dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: bMem),
                    dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: cMem)]
        let scratch = plan.scratchBytes > 0 ? threadScratch(bytes: plan.scratchBytes) : nil
        if let scratch {
            var sDesc = plan.scratch
            guard dnnl_memory_create(&scratchMem, &sDesc, engine, scratch) == dnnl_success else { return false }
            args.append(dnnl_exec_arg_t(arg: DNNL_ARG_SCRATCHPAD, memory: scratchMem))
        }
        guard dnnl_primitive_execute(plan.primitive, stream, Int32(args.count), &args) == dnnl_success else { return false }
        return dnnl_stream_wait(stream) == dnnl_success
    }

    /// Whether oneDNN has a native kernel for these arguments (made and kept on the first call).
    public static func hasKernel(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                                 lda: Int, ldb: Int, beta: Float, ldc: Int) -> Bool {
        plan(for: PlanKey(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc,
                          alpha: alpha.bitPattern, beta: beta.bitPattern)) != nil
    }

    // MARK: - Primitives, made once per shape

    struct PlanKey: Hashable {
        let transA: Bool, transB: Bool
        let m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int
        let alpha: UInt32, beta: UInt32
    }

    final class Plan: @unchecked Sendable {
        let primitive: dnnl_primitive_t
        let a: dnnl_memory_desc_t, b: dnnl_memory_desc_t, c: dnnl_memory_desc_t, scratch: dnnl_memory_desc_t
        let scratchBytes: Int
        init(primitive: dnnl_primitive_t, a: dnnl_memory_desc_t, b: dnnl_memory_desc_t, c: dnnl_memory_desc_t,
             scratch: dnnl_memory_desc_t, scratchBytes: Int) {
            (self.primitive, self.a, self.b, self.c, self.scratch, self.scratchBytes) = (primitive, a, b, c, scratch, scratchBytes)
        }
    }

    /// nil where oneDNN refused the shape (remembered, so it is asked once).
    private static let plans = Mutex<[PlanKey: Plan?]>([:])

    nonisolated(unsafe) private static let engine: dnnl_engine_t? = {
        var e: dnnl_engine_t?
        return dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success ? e : nil
    }()

    private static func plan(for key: PlanKey) -> Plan? {
        if let known = plans.withLock({ $0[key] }) { return known }
        let made = makePlan(key)
        plans.withLock { $0[key] = made }
        return made
    }

    private static func makePlan(_ key: PlanKey) -> Plan? {
        guard let engine else { return nil }
        // oneDNN fixes a primitive's blocking (and so the order of its float32 sums) for the calling
        // thread's OpenMP thread count at creation: make every plan for the one thread it runs on, so
        // a product's bits do not depend on which thread first asked for its shape.
        BLAS.setOpenMPThreads?(1)
        // Logical A [m×k], B [k×n], C [m×n]; a transposed operand is the same storage read with swapped strides.
        func desc(_ rows: Int, _ cols: Int, ld: Int, transposed: Bool, type: dnnl_data_type_t) -> dnnl_memory_desc_t? {
            var d = dnnl_memory_desc_t()
            var dims: [Int64] = [Int64(rows), Int64(cols)]
            var strides: [Int64] = transposed ? [1, Int64(ld)] : [Int64(ld), 1]
            return dnnl_memory_desc_init_by_strides(&d, 2, &dims, type, &strides) == dnnl_success ? d : nil
        }
        guard var a = desc(key.m, key.k, ld: key.lda, transposed: key.transA, type: dnnl_bf16),
              var b = desc(key.k, key.n, ld: key.ldb, transposed: key.transB, type: dnnl_bf16),
              var c = desc(key.m, key.n, ld: key.ldc, transposed: false, type: dnnl_f32) else { return nil }
        var attr: dnnl_primitive_attr_t?
        guard dnnl_primitive_attr_create(&attr) == dnnl_success, let attr else { return nil }
        defer { dnnl_primitive_attr_destroy(attr) }
        // A scratchpad per thread (ours), so workers may run primitives at once whatever oneDNN's build.
        guard dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success else { return nil }
        let alpha = Float(bitPattern: key.alpha), beta = Float(bitPattern: key.beta)
        if alpha != 1 {
            var scale = alpha
            guard dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale) == dnnl_success else { return nil }
        }
        if beta != 0 {
            var ops: dnnl_post_ops_t?
            guard dnnl_post_ops_create(&ops) == dnnl_success, let ops else { return nil }
            defer { dnnl_post_ops_destroy(ops) }
            guard dnnl_post_ops_append_sum(ops, beta) == dnnl_success, dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success else { return nil }
        }
        var op = dnnl_matmul_desc_t()
        guard dnnl_matmul_desc_init(&op, &a, &b, nil, &c) == dnnl_success else { return nil }
        var pd: dnnl_primitive_desc_t?
        guard dnnl_primitive_desc_create(&pd, &op, attr, engine, nil) == dnnl_success, let pd else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        // Not oneDNN's reference loops (far slower than float32): its JIT kernels only ("brg:…", "gemm:jit").
        var impl: UnsafePointer<CChar>?
        withUnsafeMutablePointer(to: &impl) { p in
            _ = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, UnsafeMutableRawPointer(p))
        }
        guard let impl, !String(cString: impl).contains("ref") else { return nil }
        guard let scratchPointer = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) else { return nil }
        let scratch = scratchPointer.pointee
        var scratchForSize = scratch
        let scratchBytes = dnnl_memory_desc_get_size(&scratchForSize)
        var primitive: dnnl_primitive_t?
        guard dnnl_primitive_create(&primitive, pd) == dnnl_success, let primitive else { return nil }
        return Plan(primitive: primitive, a: a, b: b, c: c, scratch: scratch, scratchBytes: scratchBytes)
    }

    // MARK: - Per-thread stream and scratchpad

    private static let streamKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    private static func threadStream() -> dnnl_stream_t? {
        if let raw = pthread_getspecific(streamKey) { return dnnl_stream_t(raw) }
        guard let engine else { return nil }
        var stream: dnnl_stream_t?
        guard dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue) == dnnl_success, let stream else { return nil }
        pthread_setspecific(streamKey, UnsafeRawPointer(stream))
        return stream
    }

    private static let scratchKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// This thread's scratchpad of at least `bytes` (kept and grown, so a step allocates nothing new).
    private static func threadScratch(bytes: Int) -> UnsafeMutableRawPointer {
        if let raw = pthread_getspecific(scratchKey) {
            let header = raw.assumingMemoryBound(to: Int.self)
            if header.pointee >= bytes { return raw + 64 }
            free(raw)
        }
        let raw = aligned_alloc(64, 64 + (bytes + 63) / 64 * 64)!
        raw.assumingMemoryBound(to: Int.self).pointee = bytes
        pthread_setspecific(scratchKey, raw)
        return raw + 64
    }
}

extension ParallelGEMM {
    /// `BFloat16Products.gemm` with C split into one panel per `Parallel` worker along its longer side,
    /// as `sgemm`. Returns false, before writing anything, when oneDNN has no kernel for a panel's shape.
    public static func bfloat16(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<UInt16>, lda: Int, b: UnsafePointer<UInt16>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) -> Bool {
        let parts = panels(m: m, n: n, k: k)
        for (rows, cols) in parts where !BFloat16Products.hasKernel(transA: transA, transB: transB, m: rows.count, n: cols.count, k: k,
                                                                   alpha: alpha, lda: lda, ldb: ldb, beta: beta, ldc: ldc) {
            return false
        }
        let ap = UncheckedSendable(a), bp = UncheckedSendable(b), cp = UncheckedSendable(c)
        let failed = Atomic<Bool>(false)
        Parallel.forEach(parts.count) { w in
            let (rows, cols) = parts[w]
            let aOff = transA ? rows.lowerBound : rows.lowerBound * lda
            let bOff = transB ? cols.lowerBound * ldb : cols.lowerBound
            let ok = BFloat16Products.gemm(transA: transA, transB: transB, m: rows.count, n: cols.count, k: k, alpha: alpha,
                                           a: ap.value + aOff, lda: lda, b: bp.value + bOff, ldb: ldb, beta: beta,
                                           c: cp.value + rows.lowerBound * ldc + cols.lowerBound, ldc: ldc)
            if !ok { failed.store(true, ordering: .relaxed) }
        }
        // Only an execution error after the kernels existed gets here; oneDNN reports none for valid pointers.
        precondition(!failed.load(ordering: .relaxed), "oneDNN failed a bfloat16 product it had a kernel for")
        return true
    }
}
