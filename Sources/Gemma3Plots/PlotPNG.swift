import CSystemZlib
import Foundation

/// A minimal PNG writer (8-bit RGB, non-interlaced, RFC 2083): per-row filtering as the
/// specification recommends, the zlib stream and the chunk CRC-32s from the system's zlib.
/// Plots are mostly flat colour, so they compress well (typically 10–30 KB for 900×520).
public enum PNGEncoder {
    /// Encodes `rgb` (row-major, 3 bytes per pixel, `width × height` pixels) as a PNG file.
    public static func encode(width: Int, height: Int, rgb: [UInt8]) -> [UInt8] {
        precondition(width > 0 && height > 0 && rgb.count == width * height * 3, "PNG: pixel buffer does not match size")
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        var ihdr: [UInt8] = []
        appendBE32(&ihdr, UInt32(width))
        appendBE32(&ihdr, UInt32(height))
        ihdr += [8, 2, 0, 0, 0]  // bit depth 8, colour type 2 (RGB), deflate, adaptive filters, no interlace
        appendChunk(&out, "IHDR", ihdr)
        appendChunk(&out, "IDAT", zlibCompress(filterRows(width: width, height: height, rgb: rgb)))
        appendChunk(&out, "IEND", [])
        return out
    }

    /// Applies, per row, the PNG filter (None, Sub, Up, Average, Paeth) with the smallest sum of
    /// absolute residuals — the heuristic the PNG specification recommends.
    static func filterRows(width: Int, height: Int, rgb: [UInt8]) -> [UInt8] {
        let stride = width * 3
        var out = [UInt8]()
        out.reserveCapacity((stride + 1) * height)
        var candidate = [UInt8](repeating: 0, count: stride)
        var best = [UInt8](repeating: 0, count: stride)
        rgb.withUnsafeBufferPointer { px in
            for y in 0..<height {
                let row = y * stride
                var bestScore = Int.max
                var bestType: UInt8 = 0
                for type in UInt8(0)...4 {
                    var score = 0
                    for i in 0..<stride {
                        let x = Int(px[row + i])
                        let a = i >= 3 ? Int(px[row + i - 3]) : 0
                        let b = y > 0 ? Int(px[row - stride + i]) : 0
                        let c = (i >= 3 && y > 0) ? Int(px[row - stride + i - 3]) : 0
                        let predictor: Int
                        switch type {
                        case 0: predictor = 0
                        case 1: predictor = a
                        case 2: predictor = b
                        case 3: predictor = (a + b) / 2
                        default: predictor = paeth(a, b, c)
                        }
                        let r = UInt8(truncatingIfNeeded: x - predictor)
                        candidate[i] = r
                        score += r < 128 ? Int(r) : 256 - Int(r)
                    }
                    if score < bestScore { bestScore = score; bestType = type; swap(&candidate, &best) }
                }
                out.append(bestType)
                out += best
            }
        }
        return out
    }

    static func paeth(_ a: Int, _ b: Int, _ c: Int) -> Int {
        let p = a + b - c
        let pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
        if pa <= pb && pa <= pc { return a }
        return pb <= pc ? b : c
    }

    // MARK: Chunks and checksums

    static func appendBE32(_ out: inout [UInt8], _ v: UInt32) {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }

    static func appendChunk(_ out: inout [UInt8], _ type: String, _ data: [UInt8]) {
        appendBE32(&out, UInt32(data.count))
        let typeBytes = Array(type.utf8)
        out += typeBytes
        out += data
        appendBE32(&out, crc32(typeBytes + data))
    }

    /// CRC-32 (ISO 3309 / ITU-T V.42, as used by PNG and zlib's `crc32`).
    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(CSystemZlib.crc32(0, $0.baseAddress, uInt($0.count))) }
    }

    /// Adler-32 (RFC 1950).
    public static func adler32(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(CSystemZlib.adler32(1, $0.baseAddress, uInt($0.count))) }
    }

    /// A zlib stream (RFC 1950) of `data` at the best compression level.
    public static func zlibCompress(_ data: [UInt8]) -> [UInt8] {
        var capacity = compressBound(uLong(data.count))
        var out = [UInt8](repeating: 0, count: Int(capacity))
        let status = data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                compress2(dst.baseAddress, &capacity, src.baseAddress, uLong(src.count), Z_BEST_COMPRESSION)
            }
        }
        // compressBound guarantees room, and memory for it was allocated above: Z_OK is certain.
        precondition(status == Z_OK, "zlib compress2 failed (\(status))")
        out.removeSubrange(Int(capacity)...)
        return out
    }
}
