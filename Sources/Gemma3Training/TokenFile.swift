import Foundation
import Gemma3Infrastructure

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only, memory-mapped token file as written by `gemma3 prepare` (`train.bin`, `val.bin`):
/// raw little-endian `uint16` ids, nothing else. The file is mapped, not read, so a multi-GB split
/// costs no RAM up front and can be shared by all threads.
///
///     let train = try TokenFile(url: dir.appendingPathComponent("train.bin"))
///     let first = train[0]                                     // UInt16
///     train.copyTokens(from: 1000, count: 129, into: int32Ptr) // batch construction
public final class TokenFile: @unchecked Sendable {
    public let url: URL
    /// Number of tokens in the file.
    public let count: Int
    /// All tokens. The memory is unmapped when this object is deallocated: keep a reference to the
    /// `TokenFile` while using the buffer (or use `withTokens`).
    public let tokens: UnsafeBufferPointer<UInt16>
    /// The mapped file, or the copy made by `init(bytes:name:)`.
    private let mapping: UnsafeMutableRawPointer?
    private let mappedBytes: Int
    private let isCopy: Bool

    /// Maps `url`. Throws a one-line error if it is missing, unreadable or has an odd byte count.
    public init(url: URL) throws {
        #if _endian(big)
        #error("token files are little-endian; add byte swapping for big-endian hosts")
        #endif
        self.url = url
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { throw FileIOError.notFound(url.path) }
            throw FileIOError.cannotOpen(url.path, errno)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileIOError.readFailed(url.path, errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FileIOError.notARegularFile(url.path) }
        let size = Int(st.st_size)
        try TokenFile.checkSize(size, path: url.path)
        mappedBytes = size
        isCopy = false
        count = size / 2
        if size == 0 {
            mapping = nil
            tokens = UnsafeBufferPointer(start: nil, count: 0)
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw FileIOError.cannotOpen(url.path, errno)
        }
        mapping = p
        tokens = UnsafeBufferPointer(start: p.assumingMemoryBound(to: UInt16.self), count: count)
    }

    /// A token file held in memory (the bytes are copied), checked as `init(url:)` checks a file;
    /// `name` is its `url` (a file name) in messages.
    public init(bytes: [UInt8], name: String = DatasetMeta.trainFileName) throws {
        url = URL(fileURLWithPath: name)
        try TokenFile.checkSize(bytes.count, path: name)
        mappedBytes = bytes.count
        isCopy = true
        count = bytes.count / 2
        guard !bytes.isEmpty else {
            mapping = nil
            tokens = UnsafeBufferPointer(start: nil, count: 0)
            return
        }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 64)
        bytes.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        mapping = copy
        tokens = UnsafeBufferPointer(start: copy.assumingMemoryBound(to: UInt16.self), count: count)
    }

    /// Token files hold whole uint16s.
    private static func checkSize(_ size: Int, path: String) throws {
        guard size % 2 == 0 else {
            throw FileIOError.malformed(path, "\(size) bytes is not a whole number of uint16 tokens (truncated?)")
        }
    }

    deinit {
        guard let mapping else { return }
        if isCopy { mapping.deallocate() } else { munmap(mapping, mappedBytes) }
    }

    /// Calls `body` with all tokens, keeping the mapping alive meanwhile.
    public func withTokens<R>(_ body: (UnsafeBufferPointer<UInt16>) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(tokens) }
    }

    /// Token `i` (bounds-checked).
    @inlinable public subscript(i: Int) -> UInt16 { tokens[i] }

    /// Copies `count` tokens starting at `start` into `destination`, widened to Int32
    /// (the type the model's embedding lookup and loss take).
    public func copyTokens(from start: Int, count n: Int, into destination: UnsafeMutablePointer<Int32>) {
        precondition(start >= 0 && n >= 0 && start + n <= count, "token range \(start)..<\(start + n) outside 0..<\(count)")
        guard n > 0 else { return }
        withTokens { t in
            let src = t.baseAddress! + start
            for i in 0..<n { destination[i] = Int32(src[i]) }
        }
    }

    /// Largest token id in the file (one pass; useful to check it against a model's vocabulary).
    public func maximumToken() -> UInt16 {
        withTokens { t in
            var m: UInt16 = 0
            for x in t where x > m { m = x }
            return m
        }
    }
}
