import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Coarse-grained parallel loops over the machine's cores.
///
/// Regions run on a small pool of persistent threads that spin briefly between regions before
/// sleeping: a decode step opens ~150 regions of a few microseconds each, and waking a parked
/// Dispatch worker for every one of them costs about as much as the work itself.
public enum Parallel {
    /// Number of worker threads used by `forEach`/`chunks`: `RuntimeSettings.current.threads`.
    public static var threadCount: Int { RuntimeSettings.threads }

    /// Calls `body(range)` on contiguous, near-equal sub-ranges of `0..<count`, one per worker.
    /// Runs inline when the work is small or one thread is configured.
    @inlinable
    public static func chunks(_ count: Int, minimumPerChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        let workers = min(threadCount, max(1, count / max(1, minimumPerChunk)))
        if workers <= 1 || count <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        run(parts: workers) { w in
            let lo = count * w / workers
            let hi = count * (w + 1) / workers
            if lo < hi { body(lo..<hi) }
        }
    }

    /// Calls `body(i)` for every i in `0..<count`, split over the workers in contiguous blocks.
    @inlinable
    public static func forEach(_ count: Int, minimumPerChunk: Int = 1, _ body: (Int) -> Void) {
        chunks(count, minimumPerChunk: minimumPerChunk) { r in
            for i in r { body(i) }
        }
    }

    /// `RuntimeSettings.usesWorkerPool` false uses Dispatch for every region (to measure what the pool saves).
    static var usePool: Bool { RuntimeSettings.usesWorkerPool }

    /// Calls `body(part)` for part in 0..<parts, concurrently, and returns when all have finished.
    /// The calling thread works on parts too, but which parts run where is not fixed (on the pool,
    /// a spinning worker may claim part 0 first). Uses the spinning pool when it is free and large
    /// enough; nested or concurrent regions (and more parts than cores) fall back to Dispatch.
    public static func run(parts: Int, _ body: (Int) -> Void) {
        if parts <= 1 { if parts == 1 { body(0) }; return }
        if let backend = BLAS.scopedBackend {
            // The workers compute this region's products with the caller's scoped backend too.
            runOnWorkers(parts: parts) { part in BLAS.withBackend(backend) { body(part) } }
        } else {
            runOnWorkers(parts: parts, body)
        }
    }

    private static func runOnWorkers(parts: Int, _ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            if usePool, parts - 1 <= WorkerPool.shared.workerCount, WorkerPool.shared.tryRun(parts: parts, body) { return }
            let box = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: parts) { w in box.value(w) }
        }
    }
}

/// Persistent worker threads (one per core besides the caller's) that help with one region at a time.
///
/// A region is published as a ticket (generation, parts, next part); the caller and the workers
/// claim parts from it with compare-and-swap until none are left, so a worker that the OS has not
/// scheduled yet never holds the region up: the caller simply runs more parts itself. The caller
/// then waits until every claimed part has finished. Idle workers spin for a fraction of a
/// millisecond, then sleep on a condition variable until the next region.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool(workers: max(0, max(Parallel.threadCount, ProcessInfo.processInfo.activeProcessorCount) - 1))

    let workerCount: Int
    /// generation << 32 | parts << 16 | next part.
    private let ticket = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    private var generation = 0
    // Written by the caller before the ticket is published (release) and read by a worker only
    // after it claimed a part of that ticket (acquire); not rewritten until every part finished.
    private var job: ((Int) -> Void)?
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private static let spinLimit = 1 << 16

    private init(workers: Int) {
        workerCount = workers
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
        for index in 0..<workers {
            let thread = Thread { [unowned self] in self.workerLoop() }
            thread.name = "gemma3-worker-\(index + 1)"
            thread.start()
        }
    }

    /// Runs the region on the pool; false (nothing run) when the pool is already in use.
    func tryRun(parts: Int, _ body: @escaping (Int) -> Void) -> Bool {
        guard parts < 1 << 16,
              busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        job = body
        generation = (generation + 1) & 0x7FFF_FFFF
        let gen = generation
        remaining.store(parts, ordering: .relaxed)
        ticket.store(gen << 32 | parts << 16, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        while let part = claim(generation: gen) {
            body(part)
            remaining.subtract(1, ordering: .releasing)
        }
        while remaining.load(ordering: .acquiring) != 0 {}
        job = nil
        busy.store(false, ordering: .releasing)
        return true
    }

    /// The next unclaimed part of region `generation`, or nil when it has none left (or is over).
    @inline(__always)
    private func claim(generation gen: Int) -> Int? {
        var t = ticket.load(ordering: .acquiring)
        while true {
            let next = t & 0xFFFF, parts = (t >> 16) & 0xFFFF
            guard t >> 32 == gen, next < parts else { return nil }
            let (exchanged, original) = ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiringAndReleasing)
            if exchanged { return next }
            t = original
        }
    }

    /// Kept out of line so the worker's reference to the closure is released before it reports
    /// completion (the caller checks that the closure did not escape).
    @inline(never)
    private func runJob(part: Int) { job?(part) }

    private func workerLoop() {
        var seen = 0
        while true {
            var current = ticket.load(ordering: .acquiring) >> 32
            var spins = 0
            while current == seen {
                spins += 1
                if spins > Self.spinLimit {
                    pthread_mutex_lock(mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    current = ticket.load(ordering: .sequentiallyConsistent) >> 32
                    while current == seen {
                        pthread_cond_wait(condition, mutex)
                        current = ticket.load(ordering: .acquiring) >> 32
                    }
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(mutex)
                    break
                }
                current = ticket.load(ordering: .acquiring) >> 32
            }
            seen = current
            while let part = claim(generation: current) {
                runJob(part: part)
                remaining.subtract(1, ordering: .releasing)
            }
        }
    }
}

/// Wraps a value that is safe to share across the workers of one `Parallel` call
/// (raw buffer pointers into disjoint regions, closures that only touch such regions).
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    @inlinable public init(_ value: T) { self.value = value }
}

/// How this build was compiled, for benchmark reports.
public enum BuildInfo {
    /// True when built with `GEMMA3_TARGET_CPU=…` (kernels compiled for that CPU, e.g. AVX2/FMA).
    public static let compiledForTargetCPU: Bool = {
        #if GEMMA3_TARGET_CPU
        return true
        #else
        return false
        #endif
    }()
    /// "target CPU build" or "baseline x86-64 build" (or the architecture elsewhere).
    public static var description: String {
        #if arch(x86_64)
        return compiledForTargetCPU ? "built for GEMMA3_TARGET_CPU" : "baseline x86-64 build"
        #else
        return compiledForTargetCPU ? "built for GEMMA3_TARGET_CPU" : "generic build"
        #endif
    }

    /// The machine's CPU as `/proc/cpuinfo` names it, with the vector extensions that matter for
    /// comparing kernels (a reference built for AVX-512 VNNI is not comparable to an AVX2 one):
    /// e.g. "AMD EPYC (AVX2 FMA F16C AVX-512F AVX-512-VNNI)". "unknown" where that file is missing.
    public static let hostCPU: String = {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
        var model = "unknown CPU"
        var flags: Set<Substring> = []
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            if key == "model name" { model = parts[1].trimmingCharacters(in: .whitespaces) }
            if key == "flags" { flags = Set(parts[1].split(separator: " ")); break }
        }
        let named: [(String, String)] = [("avx2", "AVX2"), ("fma", "FMA"), ("f16c", "F16C"), ("avx512f", "AVX-512F"),
                                         ("avx512_vnni", "AVX-512-VNNI"), ("avx512_bf16", "AVX-512-BF16"), ("avx_vnni", "AVX-VNNI")]
        let present = named.filter { flags.contains(Substring($0.0)) }.map(\.1)
        return present.isEmpty ? model : "\(model) (\(present.joined(separator: " ")))"
    }()
}

/// Memory for large weight copies that kernels stream through: 2 MiB-aligned and, on Linux, marked
/// for transparent huge pages (`MADV_HUGEPAGE`), so a streaming read does not cross a 4 KiB page
/// (and miss the TLB, and stop the hardware prefetcher) every 4096 bytes.
public enum LargeAllocation {
    static let hugePage = 2 << 20

    /// At least `byteCount` bytes (one byte if zero), 64-byte aligned; release with `deallocate`.
    public static func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
        guard byteCount >= hugePage else { return .allocate(byteCount: max(1, byteCount), alignment: 64) }
        let rounded = (byteCount + hugePage - 1) / hugePage * hugePage
        let p = UnsafeMutableRawPointer.allocate(byteCount: rounded, alignment: hugePage)
        #if os(Linux)
        _ = madvise(p, rounded, MADV_HUGEPAGE)  // advice only: without THP the pages are just small
        #endif
        return p
    }

    public static func deallocate(_ p: UnsafeMutableRawPointer) {
        p.deallocate()
    }
}
