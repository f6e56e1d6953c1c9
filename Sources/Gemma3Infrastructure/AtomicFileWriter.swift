import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// File-system failures, phrased as one line for the command line.
public enum FileIOError: Error, CustomStringConvertible, LocalizedError {
    case cannotOpen(String, Int32)
    case cannotCreate(String, Int32)
    case readFailed(String, Int32)
    case writeFailed(String, Int32)
    case syncFailed(String, Int32)
    case renameFailed(String, String, Int32)
    case notFound(String)
    case notARegularFile(String)
    case malformed(String, String)

    public var description: String {
        func reason(_ code: Int32) -> String { String(cString: strerror(code)) }
        switch self {
        case .cannotOpen(let p, let e): return "cannot open \(p): \(reason(e))"
        case .cannotCreate(let p, let e): return "cannot create \(p): \(reason(e))"
        case .readFailed(let p, let e): return "cannot read \(p): \(reason(e))"
        case .writeFailed(let p, let e): return "cannot write \(p): \(reason(e))"
        case .syncFailed(let p, let e): return "cannot flush \(p) to disk: \(reason(e))"
        case .renameFailed(let a, let b, let e): return "cannot rename \(a) to \(b): \(reason(e))"
        case .notFound(let p): return "\(p): no such file"
        case .notARegularFile(let p): return "\(p) is not a regular file"
        case .malformed(let p, let why): return "\(p): \(why)"
        }
    }
    public var errorDescription: String? { description }
}

/// Writes a file atomically: bytes go to a hidden temporary file in the destination's directory,
/// which `commit()` flushes to disk (fsync) and renames over the destination. Until then the
/// destination is untouched; `abort()` (or deinit without commit) deletes the temporary file.
public final class AtomicFileWriter {
    public let destination: URL
    public let temporaryURL: URL
    private var fd: Int32
    private var finished = false
    /// Bytes written so far.
    public private(set) var bytesWritten: Int64 = 0

    /// Creates the temporary file beside `destination` (registered with `TemporaryFiles`, so an
    /// interrupt handler can remove it).
    public init(destination: URL) throws {
        self.destination = destination
        let dir = destination.deletingLastPathComponent()
        let name = ".\(destination.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        temporaryURL = dir.appendingPathComponent(name)
        fd = open(temporaryURL.path, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC, 0o644)
        guard fd >= 0 else { throw FileIOError.cannotCreate(temporaryURL.path, errno) }
        TemporaryFiles.register(temporaryURL.path)
    }

    deinit { abort() }

    /// Deletes the temporary files that writers of `destination` left behind when their process was
    /// killed (SIGKILL, power loss): those whose process id no longer runs. A live writer's file is
    /// kept. Returns how many were removed.
    @discardableResult
    public static func removeStaleTemporaries(of destination: URL) -> Int {
        let dir = destination.deletingLastPathComponent()
        let prefix = ".\(destination.lastPathComponent).tmp-"
        var removed = 0
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] where entry.hasPrefix(prefix) {
            guard let pid = Int32(entry.dropFirst(prefix.count).prefix(while: { $0 != "-" })), pid > 0 else { continue }
            if kill(pid, 0) == 0 || errno == EPERM { continue }  // still running (EPERM: someone else's process)
            if (try? FileManager.default.removeItem(at: dir.appendingPathComponent(entry))) != nil { removed += 1 }
        }
        return removed
    }

    /// Appends raw bytes (loops over short writes).
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = Foundation.write(fd, p, left)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileIOError.writeFailed(temporaryURL.path, errno)
            }
            p += n
            left -= n
            bytesWritten += Int64(n)
        }
    }

    /// Appends any contiguous bytes (`Data`, `[UInt8]`).
    public func write<C: ContiguousBytes>(_ bytes: C) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Flushes to disk and renames over `destination` (then flushes the directory entry).
    public func commit() throws {
        precondition(!finished, "AtomicFileWriter used after commit/abort")
        if fsync(fd) != 0 { throw FileIOError.syncFailed(temporaryURL.path, errno) }
        close(fd)
        fd = -1
        if rename(temporaryURL.path, destination.path) != 0 {
            let e = errno
            abort()
            throw FileIOError.renameFailed(temporaryURL.path, destination.path, e)
        }
        finished = true
        TemporaryFiles.unregister(temporaryURL.path)
        syncDirectory(destination.deletingLastPathComponent())
    }

    /// Deletes the temporary file; the destination is left as it was. Safe to call twice.
    public func abort() {
        guard !finished else { return }
        finished = true
        if fd >= 0 { close(fd); fd = -1 }
        unlink(temporaryURL.path)
        TemporaryFiles.unregister(temporaryURL.path)
    }

    /// Writes `data` to `url` atomically.
    public static func write<C: ContiguousBytes>(_ data: C, to url: URL) throws {
        try write(to: url) { try $0.write(data) }
    }

    /// Streams content through `body` into a new file at `url`, committed when `body` returns
    /// and aborted (temporary file deleted) when it throws.
    public static func write(to url: URL, _ body: (AtomicFileWriter) throws -> Void) throws {
        let w = try AtomicFileWriter(destination: url)
        do { try body(w) } catch { w.abort(); throw error }
        try w.commit()
    }
}

/// fsync on a directory makes the renames inside it durable (failures are ignored: some file
/// systems do not support it, and the files themselves were already synced).
public func syncDirectory(_ dir: URL) {
    let dfd = open(dir.path, O_RDONLY)
    if dfd >= 0 { _ = fsync(dfd); close(dfd) }
}
