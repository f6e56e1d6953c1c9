import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive lock on a run directory (`flock` on `RUN/.lock`), held while a trainer writes it, so
/// that two runs never write one directory at once. Released when the value goes away or the process
/// ends (also by SIGKILL: the kernel drops the lock with the file descriptor).
final class RunDirectoryLock {
    private let descriptor: Int32

    init(_ run: URL) throws {
        let path = run.appendingPathComponent(".lock").path
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw TrainingError.io("\(path): cannot open the run lock: \(String(cString: strerror(errno)))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw TrainingError.checkpoint("\(run.path) is being written by another training run (its lock \(path) is held); wait for it or choose another --out")
        }
    }

    deinit { close(descriptor) }
}
