import Foundation

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Crash-safe file writes: data goes to a temporary file beside the target, is fsync'ed, then renamed
/// over the target, so readers see either the old file or the complete new one.
public enum AtomicFile {
    /// Writes `data` to `url` atomically.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { handle in
            try data.withUnsafeBytes { raw in try handle.write(raw) }
        }
    }

    /// Streams content through `body` into a temporary file, then fsyncs and renames it to `url`.
    public static func write(to url: URL, _ body: (AtomicFileHandle) throws -> Void) throws {
        let directory = url.deletingLastPathComponent()
        let temp = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let fd = open(temp.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw FormatError("cannot create \(temp.path): \(String(cString: strerror(errno)))")
        }
        let handle = AtomicFileHandle(fd: fd, path: url.path)
        do {
            try body(handle)
            guard fsync(fd) == 0 else { throw FormatError("fsync failed for \(url.path): \(String(cString: strerror(errno)))") }
            close(fd)
            guard rename(temp.path, url.path) == 0 else {
                throw FormatError("cannot rename into \(url.path): \(String(cString: strerror(errno)))")
            }
        } catch {
            close(fd)
            unlink(temp.path)
            throw error
        }
        // Make the rename itself durable.
        let dfd = open(directory.path, O_RDONLY)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }
}

/// The write end used inside `AtomicFile.write(to:_:)`.
public struct AtomicFileHandle {
    let fd: Int32
    let path: String

    /// Writes all bytes, retrying short writes.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = Glibc_write(fd, p, left)
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError("write failed for \(path): \(String(cString: strerror(errno)))")
            }
            p += n
            left -= n
        }
    }

    /// Writes a byte array.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }
}

@inline(__always) private func Glibc_write(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.write(fd, p, n)
    #else
    return Darwin.write(fd, p, n)
    #endif
}

/// A file-format error with a one-line message.
public struct FormatError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
