/// The processes that train one model together, data parallel: each computes the gradients of its
/// share of an optimizer step's micro-batches, the group sums them, and every member then clips and
/// steps identically, so the weights stay equal everywhere. Member 0 writes metrics and checkpoints.
///
/// `Gemma3Distributed.MPIGroup` implements it on MPI; a single process needs no group (nil).
public protocol DataParallelGroup: AnyObject {
    /// This process's index, 0 ..< size.
    var rank: Int { get }
    /// Number of processes.
    var size: Int { get }
    /// Replaces `buffer` by its element-wise sum over the group; every member gets the same bits
    /// (the reduction order is fixed by the group's size, not by timing).
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// As above, for doubles (losses, counts).
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws
    /// Copies member 0's `buffer` into every member's.
    func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// Whether `startAllReduceSum` returns before the sum is done (a communication thread sums the
    /// gradient buckets while the backward still runs); false: it sums at once.
    var overlapsAllReduce: Bool { get }
    /// Starts replacing `buffer` by its sum over the group, as `allReduceSum` does; the buffer must
    /// not be touched until `finishAllReduceSums()` returns. Members must start the same buffers in
    /// the same order (the sums are matched by order, so the result does not depend on timing).
    func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// Waits for every started sum and returns the seconds the communication spent on them since the
    /// last call (busy time, overlapped or not); rethrows the first failure.
    func finishAllReduceSums() throws -> Double
}

extension DataParallelGroup {
    /// Groups without a communication thread sum at once.
    public var overlapsAllReduce: Bool { false }
    public func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws { try allReduceSum(buffer) }
    public func finishAllReduceSums() throws -> Double { 0 }

    /// The sum of `value` over the group.
    public func sum(_ value: Double) throws -> Double {
        var v = [value]
        try v.withUnsafeMutableBufferPointer { try allReduceSum($0) }
        return v[0]
    }

    /// Member 0's `value`, on every member.
    public func valueOfRankZero(_ value: Double) throws -> Double {
        try sum(rank == 0 ? value : 0)
    }

    /// Waits until every member got here.
    public func barrier() throws { _ = try sum(0) }
}

/// Refuses a step whose micro-batches cannot be dealt equally to `ranks` processes (unequal shares
/// would make a different step than one process makes).
func checkMicroBatchShare(accumulation: Int, ranks: Int) throws {
    guard accumulation % ranks == 0 else {
        throw TrainingError.invalidData("gradient_accumulation_steps (\(accumulation)) must be a multiple of the number of ranks (\(ranks)): each rank computes an equal share of a step's micro-batches")
    }
}
