import Dispatch
import Foundation

/// Coarse-grained parallel loops over the machine's cores.
public enum Parallel {
    /// Number of worker threads used by `forEach`/`chunks` (defaults to the active core count,
    /// overridable with `GEMMA3_THREADS`).
    nonisolated(unsafe) public static var threadCount: Int = {
        if let s = ProcessInfo.processInfo.environment["GEMMA3_THREADS"], let n = Int(s), n > 0 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Calls `body(range)` on contiguous, near-equal sub-ranges of `0..<count`, one per worker.
    /// Runs inline when the work is small or one thread is configured.
    @inlinable
    public static func chunks(_ count: Int, minimumPerChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        let workers = min(threadCount, max(1, count / max(1, minimumPerChunk)))
        if workers <= 1 || count <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let lo = count * w / workers
                let hi = count * (w + 1) / workers
                if lo < hi { box.value(lo..<hi) }
            }
        }
    }

    /// Calls `body(i)` for every i in `0..<count`, split over the workers in contiguous blocks.
    @inlinable
    public static func forEach(_ count: Int, minimumPerChunk: Int = 1, _ body: (Int) -> Void) {
        chunks(count, minimumPerChunk: minimumPerChunk) { r in
            for i in r { body(i) }
        }
    }
}

/// Wraps a value that is safe to share across the workers of one `Parallel` call
/// (raw buffer pointers into disjoint regions, closures that only touch such regions).
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    @inlinable public init(_ value: T) { self.value = value }
}
