import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SHA-256 (swift-crypto) as lower-case hex, streaming or in one call: the checksum every
/// download, tokenizer file and prepared dataset is checked with.
public struct SHA256Hasher {
    private var hash = Crypto.SHA256()

    public init() {}

    /// Hashes more bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        hash.update(bufferPointer: bytes)
    }

    /// Hashes more bytes (`Data`, `[UInt8]`, slices).
    public mutating func update<C: ContiguousBytes>(_ bytes: C) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The digest of everything hashed so far, as 64 lower-case hex digits.
    public func finalizeHex() -> String {
        hash.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// The SHA-256 of `bytes` in hex.
    public static func hex<C: ContiguousBytes>(of bytes: C) -> String {
        var h = SHA256Hasher()
        h.update(bytes)
        return h.finalizeHex()
    }

    /// The SHA-256 of a file's contents in hex, read in 4 MiB pieces.
    public static func hex(ofFile url: URL) throws -> String {
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { throw FileIOError.notFound(url.path) }
            throw FileIOError.cannotOpen(url.path, errno)
        }
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var h = SHA256Hasher()
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileIOError.readFailed(url.path, errno)
            }
            if n == 0 { break }
            h.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        return h.finalizeHex()
    }
}
