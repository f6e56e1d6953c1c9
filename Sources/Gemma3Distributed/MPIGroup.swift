import Foundation
import Gemma3Training
#if canImport(Glibc)
import Glibc
#endif

/// A failure of the MPI library or of loading it, one line.
public struct MPIError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// `DataParallelGroup` over Open MPI's `MPI_COMM_WORLD`, with `libmpi` loaded at run time, so the
/// package builds and `gemma3` runs where MPI is not installed; only a run started by `mpirun`/`srun`
/// needs it. The handles (`MPI_COMM_WORLD`, `MPI_FLOAT`, `MPI_SUM`, …) are Open MPI's: addresses of
/// its predefined objects (`ompi_mpi_comm_world`, …), its ABI since 1.x; MPICH's integer handles differ.
public final class MPIGroup: DataParallelGroup {
    public let rank: Int
    public let size: Int

    private typealias Handle = OpaquePointer
    private typealias InitThread = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?, Int32, UnsafeMutablePointer<Int32>) -> Int32
    private typealias CommQuery = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    private typealias AllReduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle, Handle) -> Int32
    private typealias Bcast = @convention(c) (UnsafeMutableRawPointer?, Int32, Handle, Int32, Handle) -> Int32
    private typealias Finalize = @convention(c) () -> Int32
    private typealias Abort = @convention(c) (Handle, Int32) -> Int32

    private let allReduce: AllReduce
    private let bcast: Bcast
    private let finalize: Finalize
    private let abort: Abort
    private let world: Handle, float: Handle, double: Handle, sumOp: Handle
    /// Open MPI's `MPI_IN_PLACE`.
    private static var inPlace: UnsafeRawPointer? { UnsafeRawPointer(bitPattern: 1) }

    /// Whether this process was started by an MPI launcher (`mpirun`, `srun` with PMIx), judged
    /// from the environment the caller passes (the library does not read it).
    public static func isLaunchedByMPI(environment: [String: String]) -> Bool {
        environment["OMPI_COMM_WORLD_SIZE"] != nil || environment["PMIX_RANK"] != nil
    }

    public let overlapsAllReduce: Bool
    /// Runs the started gradient sums; nil when they are not overlapped.
    private var communication: CommunicationThread?

    /// Loads `libmpi` (`library`, default Open MPI's soname) and initialises MPI.
    ///
    /// - Parameter overlapAllReduce: sum the gradient buckets that `startAllReduceSum` hands over on a
    ///   communication thread while the backward goes on (`MPI_THREAD_SERIALIZED`: that thread calls MPI
    ///   only while the caller's thread does not). False: every call sums at once on the caller's
    ///   thread (`MPI_THREAD_FUNNELED`). Falls back to false where the library gives less thread support.
    public init(library: String = "libmpi.so.40", overlapAllReduce: Bool = true) throws {
        guard let lib = dlopen(library, RTLD_NOW | RTLD_GLOBAL) ?? dlopen("libmpi.so", RTLD_NOW | RTLD_GLOBAL) else {
            throw MPIError("this run was started by an MPI launcher but \(library) could not be loaded (\(String(cString: dlerror()))): install Open MPI (Debian: openmpi-bin libopenmpi-dev)")
        }
        func symbol<T>(_ name: String, as type: T.Type) throws -> T {
            guard let s = dlsym(lib, name) else { throw MPIError("\(library) has no \(name): not Open MPI?") }
            return unsafeBitCast(s, to: type)
        }
        func object(_ name: String) throws -> Handle {
            guard let s = dlsym(lib, name) else { throw MPIError("\(library) has no \(name): not Open MPI?") }
            return Handle(s)
        }
        let initThread = try symbol("MPI_Init_thread", as: InitThread.self)
        let commRank = try symbol("MPI_Comm_rank", as: CommQuery.self)
        let commSize = try symbol("MPI_Comm_size", as: CommQuery.self)
        allReduce = try symbol("MPI_Allreduce", as: AllReduce.self)
        bcast = try symbol("MPI_Bcast", as: Bcast.self)
        finalize = try symbol("MPI_Finalize", as: Finalize.self)
        abort = try symbol("MPI_Abort", as: Abort.self)
        world = try object("ompi_mpi_comm_world")
        float = try object("ompi_mpi_float")
        double = try object("ompi_mpi_double")
        sumOp = try object("ompi_mpi_op_sum")
        var provided: Int32 = 0
        let (funneled, serialized): (Int32, Int32) = (1, 2)  // MPI_THREAD_FUNNELED, MPI_THREAD_SERIALIZED
        guard initThread(nil, nil, overlapAllReduce ? serialized : funneled, &provided) == 0 else { throw MPIError("MPI_Init_thread failed") }
        overlapsAllReduce = overlapAllReduce && provided >= serialized
        var r: Int32 = 0, n: Int32 = 0
        guard commRank(world, &r) == 0, commSize(world, &n) == 0 else { throw MPIError("MPI_Comm_rank/size failed") }
        rank = Int(r)
        size = Int(n)
        if overlapsAllReduce {
            let (sum, type, op, comm) = (allReduce, float, sumOp, world)
            communication = CommunicationThread { base, count in sum(Self.inPlace, base, Int32(count), type, op, comm) == 0 }
        }
    }

    public func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        guard let communication else { return try allReduceSum(buffer) }
        guard let base = buffer.baseAddress else { return }
        var offset = 0
        while offset < buffer.count {
            let n = min(Self.chunk, buffer.count - offset)
            communication.enqueue(base + offset, count: n)
            offset += n
        }
    }

    public func finishAllReduceSums() throws -> Double {
        try communication?.waitForAll() ?? 0
    }

    /// Largest element count per call (MPI counts are 32-bit).
    private static let chunk = 1 << 28

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        guard let base = buffer.baseAddress else { return }
        var offset = 0
        while offset < buffer.count {
            let n = min(Self.chunk, buffer.count - offset)
            guard allReduce(Self.inPlace, base + offset, Int32(n), float, sumOp, world) == 0 else { throw MPIError("MPI_Allreduce failed") }
            offset += n
        }
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        guard let base = buffer.baseAddress else { return }
        guard allReduce(Self.inPlace, base, Int32(buffer.count), double, sumOp, world) == 0 else { throw MPIError("MPI_Allreduce failed") }
    }

    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        guard let base = buffer.baseAddress else { return }
        var offset = 0
        while offset < buffer.count {
            let n = min(Self.chunk, buffer.count - offset)
            guard bcast(base + offset, Int32(n), float, 0, world) == 0 else { throw MPIError("MPI_Bcast failed") }
            offset += n
        }
    }

    /// Ends MPI (call once, when the run is over).
    public func finish() { _ = finalize() }

    /// Ends every process of the job with `code` (after an error on this one, so the others do not wait).
    public func abortAll(code: Int32) -> Never {
        _ = abort(world, code)
        exit(code)
    }
}

/// A thread that sums gradient buckets over MPI in the order they were queued, so the sums of one
/// step's later layers run while the backward computes the earlier ones.
private final class CommunicationThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [(UnsafeMutablePointer<Float>, Int)] = []
    private var inProgress = false
    private var failed = false
    private var busySeconds = 0.0
    private let sum: (UnsafeMutablePointer<Float>, Int) -> Bool

    init(sum: @escaping (UnsafeMutablePointer<Float>, Int) -> Bool) {
        self.sum = sum
        let thread = Thread { self.run() }  // lives as long as the process
        thread.name = "gemma3-allreduce"
        thread.start()
    }

    func enqueue(_ base: UnsafeMutablePointer<Float>, count: Int) {
        condition.lock()
        queue.append((base, count))
        condition.broadcast()
        condition.unlock()
    }

    /// Blocks until the queue is empty and no sum runs; returns the busy seconds since the last call.
    func waitForAll() throws -> Double {
        condition.lock()
        defer { condition.unlock() }
        while inProgress || !queue.isEmpty { condition.wait() }
        let seconds = busySeconds
        busySeconds = 0
        if failed { throw MPIError("MPI_Allreduce failed") }
        return seconds
    }

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty { condition.wait() }
            let (base, count) = queue.removeFirst()
            inProgress = true
            condition.unlock()
            let t0 = DispatchTime.now().uptimeNanoseconds
            let ok = sum(base, count)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            condition.lock()
            inProgress = false
            busySeconds += seconds
            if !ok { failed = true }
            condition.broadcast()
            condition.unlock()
        }
    }
}
