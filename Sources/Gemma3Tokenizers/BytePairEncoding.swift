// Byte-level BPE of one pre-token, exactly as tiktoken's `byte_pair_merge`: start from single
// bytes; repeatedly find the adjacent pair whose concatenated bytes form the mergeable token of
// lowest rank (the leftmost such pair on ties) and merge it; stop when no adjacent pair forms a
// token. Ranking the *concatenation* (not the (left, right) merge rule) is tiktoken's definition.
//
// Short pieces (almost all) use tiktoken's own linear scan over a small array; long ones (runs of
// spaces or symbols) use a binary heap keyed by (rank, position), which picks the same pair.

/// Pieces longer than this many bytes are merged with the heap instead of the linear scan.
let linearMergeLimit = 48

@usableFromInline struct BytePairMerger {
    @usableFromInline let vocabulary: VocabularyTable
    /// Token id of every single byte.
    @usableFromInline let byteIDs: UnsafePointer<Int32>

    /// Rank and id of the mergeable token `p[start..<end]`, or (Int32.max, -1).
    @inline(__always)
    func rank(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, bufferEnd: UnsafePointer<UInt8>) -> (Int32, Int32) {
        if let slot = vocabulary.find(p + start, end - start, end: bufferEnd) {
            return (slot.pointee.rank, slot.pointee.id)
        }
        return (Int32.max, -1)
    }

    /// Appends the BPE token ids of `p[0..<n]` (n >= 2) to `out`.
    @usableFromInline
    func encode(_ p: UnsafePointer<UInt8>, _ n: Int, bufferEnd: UnsafePointer<UInt8>, into out: inout [Int32]) {
        if n > linearMergeLimit {
            encodeLong(p, n, bufferEnd: bufferEnd, into: &out)
            return
        }
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: 4 * (n + 1)) { buffer in
            let starts = buffer.baseAddress!          // starts[k]: first byte of part k; starts[parts] = n
            let ranks = starts + (n + 1)              // ranks[k]: rank of part k + part k+1
            let pairIDs = ranks + (n + 1)             // pairIDs[k]: the token that merge would make
            let partIDs = pairIDs + (n + 1)           // partIDs[k]: the token of part k
            for k in 0 ..< n {
                starts[k] = Int32(k)
                partIDs[k] = byteIDs[Int(p[k])]
            }
            starts[n] = Int32(n)
            for k in 0 ..< n - 1 {
                (ranks[k], pairIDs[k]) = rank(p, k, k + 2, bufferEnd: bufferEnd)
            }
            var parts = n
            while parts > 1 {
                var minRank = Int32.max
                var at = -1
                for k in 0 ..< parts - 1 where ranks[k] < minRank {
                    minRank = ranks[k]
                    at = k
                }
                if at < 0 { break }
                partIDs[at] = pairIDs[at]
                // Drop part at+1.
                var k = at + 1
                while k < parts {
                    starts[k] = starts[k + 1]
                    if k + 1 < parts {
                        partIDs[k] = partIDs[k + 1]
                        ranks[k] = ranks[k + 1]
                        pairIDs[k] = pairIDs[k + 1]
                    }
                    k += 1
                }
                parts -= 1
                if at + 1 < parts {
                    (ranks[at], pairIDs[at]) = rank(p, Int(starts[at]), Int(starts[at + 2]), bufferEnd: bufferEnd)
                } else {
                    ranks[at] = Int32.max
                }
                if at > 0 {
                    (ranks[at - 1], pairIDs[at - 1]) = rank(p, Int(starts[at - 1]), Int(starts[at + 1]), bufferEnd: bufferEnd)
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(start: partIDs, count: parts))
        }
    }

    /// The heap version for long pieces: O(n log n) instead of O(n^2).
    func encodeLong(_ p: UnsafePointer<UInt8>, _ n: Int, bufferEnd: UnsafePointer<UInt8>, into out: inout [Int32]) {
        // Parts are identified by the position of their first byte and linked in order.
        var next = [Int32](repeating: 0, count: n)
        var previous = [Int32](repeating: 0, count: n)
        var partIDs = [Int32](repeating: 0, count: n)
        var pairRanks = [Int32](repeating: Int32.max, count: n)
        var pairIDs = [Int32](repeating: -1, count: n)
        var removed = [Bool](repeating: false, count: n)
        var heap = MinHeap()
        for k in 0 ..< n {
            next[k] = Int32(k + 1)
            previous[k] = Int32(k - 1)
            partIDs[k] = byteIDs[Int(p[k])]
        }
        // Recomputes the pair that starts at part k; pushes it when it forms a token.
        func refresh(_ k: Int) {
            let second = Int(next[k])
            guard second < n else {
                pairRanks[k] = Int32.max
                return
            }
            let (r, id) = rank(p, k, Int(next[second]), bufferEnd: bufferEnd)
            pairRanks[k] = r
            pairIDs[k] = id
            if r != Int32.max { heap.push(UInt64(UInt32(r)) << 32 | UInt64(k)) }
        }
        for k in 0 ..< n - 1 { refresh(k) }
        while let key = heap.pop() {
            let r = Int32(truncatingIfNeeded: key >> 32)
            let k = Int(truncatingIfNeeded: key & 0xFFFF_FFFF)
            if removed[k] || pairRanks[k] != r { continue }  // stale entry
            let second = Int(next[k])
            partIDs[k] = pairIDs[k]
            removed[second] = true
            next[k] = next[second]
            if Int(next[k]) < n { previous[Int(next[k])] = Int32(k) }
            refresh(k)
            if previous[k] >= 0 { refresh(Int(previous[k])) }
        }
        var k = 0
        while k < n {
            out.append(partIDs[k])
            k = Int(next[k])
        }
    }
}

/// A binary min-heap of UInt64 keys (rank in the high half, position in the low half, so ties in
/// rank go to the leftmost pair).
struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ key: UInt64) {
        items.append(key)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if items[parent] <= key { break }
            items[child] = items[parent]
            child = parent
        }
        items[child] = key
    }

    mutating func pop() -> UInt64? {
        guard let last = items.popLast() else { return nil }
        if items.isEmpty { return last }
        let top = items[0]
        var parent = 0
        let count = items.count
        while true {
            var child = 2 * parent + 1
            if child >= count { break }
            if child + 1 < count && items[child + 1] < items[child] { child += 1 }
            if items[child] >= last { break }
            items[parent] = items[child]
            parent = child
        }
        items[parent] = last
        return top
    }
}
