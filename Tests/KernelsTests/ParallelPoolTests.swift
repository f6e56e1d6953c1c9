import Dispatch
import Testing
@testable import Gemma3Kernels

@Suite struct ParallelPoolTests {
    /// Several threads open regions at once (one gets the worker pool, the others fall back to
    /// Dispatch), some regions nest another, some have more parts than the pool has workers: every
    /// part must run exactly once per region, its writes visible when `run` returns, and the
    /// closure must not be kept by a worker (`withoutActuallyEscaping` would trap).
    @Test func concurrentAndNestedRegionsRunEveryPartOnce() {
        let callers = 4, regions = 2000, maxParts = 3
        let hits = UnsafeMutablePointer<Int>.allocate(capacity: callers * maxParts)
        let values = UnsafeMutablePointer<Int>.allocate(capacity: callers * maxParts)
        let nested = UnsafeMutablePointer<Int>.allocate(capacity: callers * 64)
        let failures = UnsafeMutablePointer<Int>.allocate(capacity: callers)
        failures.initialize(repeating: 0, count: callers)
        defer { hits.deallocate(); values.deallocate(); nested.deallocate(); failures.deallocate() }
        let shared = UncheckedSendable((hits, values, nested, failures))
        DispatchQueue.concurrentPerform(iterations: callers) { c in
            let (hits, values, nested, failures) = shared.value
            for region in 0..<regions {
                let parts = region % 7 == 0 ? maxParts : 2
                let h = hits + c * maxParts, v = values + c * maxParts, n = nested + c * 64
                h.initialize(repeating: 0, count: maxParts)
                v.initialize(repeating: -1, count: maxParts)
                n.initialize(repeating: 0, count: 64)
                let doNest = region % 5 == 0
                let box = UncheckedSendable((h, v, n))
                Parallel.run(parts: parts) { w in
                    let (h, v, n) = box.value
                    h[w] += 1
                    v[w] = region &* 31 &+ w
                    if doNest, w == parts - 1 { Parallel.forEach(64) { i in n[i] += 1 } }
                }
                var ok = true
                for w in 0..<parts where h[w] != 1 || v[w] != region &* 31 &+ w { ok = false }
                if doNest { for i in 0..<64 where n[i] != 1 { ok = false } }
                if !ok { failures[c] += 1 }
            }
        }
        for c in 0..<callers { #expect(failures[c] == 0, "caller \(c): \(failures[c]) regions with a part missing, repeated or unseen") }
    }
}
