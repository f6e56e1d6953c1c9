import Foundation

/// A minimal PNG writer (8-bit RGB, non-interlaced), written from the PNG and zlib/DEFLATE
/// specifications (RFC 2083/1950/1951): per-row filtering, DEFLATE with fixed Huffman codes and
/// LZ77 matching, CRC-32 per chunk and Adler-32 over the uncompressed stream. Plots are mostly
/// flat colour, so this compresses them well (typically 20–40 KB for 900×520).
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

    static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// CRC-32 (ISO 3309 / ITU-T V.42, as used by PNG and zlib's `crc32`).
    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    /// Adler-32 (RFC 1950).
    public static func adler32(_ bytes: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        var i = 0
        while i < bytes.count {
            let end = min(bytes.count, i + 5552)  // largest block before b can overflow 32 bits
            while i < end { a += UInt32(bytes[i]); b += a; i += 1 }
            a %= 65521; b %= 65521
        }
        return (b << 16) | a
    }

    // MARK: zlib / DEFLATE

    /// A zlib stream (RFC 1950) holding one DEFLATE block with fixed Huffman codes (RFC 1951 §3.2.6).
    public static func zlibCompress(_ data: [UInt8]) -> [UInt8] {
        var bits = BitWriter()
        bits.bytes = [0x78, 0x01]  // CM 8 (deflate), 32K window, no dictionary, FCHECK so 0x7801 % 31 == 0
        bits.write(1, count: 1)  // BFINAL
        bits.write(1, count: 2)  // BTYPE 01: fixed Huffman
        lz77(data) { token in
            switch token {
            case .literal(let b): writeLiteral(&bits, Int(b))
            case .match(let length, let distance): writeMatch(&bits, length: length, distance: distance)
            }
        }
        writeLiteral(&bits, 256)  // end of block
        bits.flush()
        var out = bits.bytes
        appendBE32(&out, adler32(data))
        return out
    }

    enum Token { case literal(UInt8), match(length: Int, distance: Int) }

    /// Greedy LZ77 with a hash chain over 3-byte prefixes, 32 KiB window, lengths 3…258.
    static func lz77(_ data: [UInt8], emit: (Token) -> Void) {
        let n = data.count
        let hashBits = 15, window = 32768, maxChain = 32
        var head = [Int](repeating: -1, count: 1 << hashBits)
        var prev = [Int](repeating: -1, count: window)
        func hash(_ i: Int) -> Int {
            (Int(data[i]) << 10 ^ Int(data[i + 1]) << 5 ^ Int(data[i + 2])) & ((1 << hashBits) - 1)
        }
        func insert(_ i: Int) {
            guard i + 2 < n else { return }
            let h = hash(i)
            prev[i & (window - 1)] = head[h]
            head[h] = i
        }
        var i = 0
        while i < n {
            var bestLength = 0, bestDistance = 0
            if i + 2 < n {
                var candidate = head[hash(i)]
                var chain = 0
                while candidate >= 0 && i - candidate <= window && chain < maxChain {
                    var l = 0
                    let maxLength = min(258, n - i)
                    while l < maxLength && data[candidate + l] == data[i + l] { l += 1 }
                    if l > bestLength { bestLength = l; bestDistance = i - candidate; if l == maxLength { break } }
                    candidate = prev[candidate & (window - 1)]
                    chain += 1
                }
            }
            if bestLength >= 3 {
                emit(.match(length: bestLength, distance: bestDistance))
                for k in 0..<bestLength { insert(i + k) }
                i += bestLength
            } else {
                emit(.literal(data[i]))
                insert(i)
                i += 1
            }
        }
    }

    /// Fixed literal/length code (RFC 1951 §3.2.6), written most-significant bit first.
    static func writeLiteral(_ bits: inout BitWriter, _ symbol: Int) {
        switch symbol {
        case 0...143: bits.writeHuffman(0x30 + symbol, count: 8)
        case 144...255: bits.writeHuffman(0x190 + symbol - 144, count: 9)
        case 256...279: bits.writeHuffman(symbol - 256, count: 7)
        default: bits.writeHuffman(0xC0 + symbol - 280, count: 8)
        }
    }

    static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
                               4097, 6145, 8193, 12289, 16385, 24577]
    static let distanceExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]

    static func writeMatch(_ bits: inout BitWriter, length: Int, distance: Int) {
        var li = lengthBase.count - 1
        while lengthBase[li] > length { li -= 1 }
        writeLiteral(&bits, 257 + li)
        if lengthExtra[li] > 0 { bits.write(UInt32(length - lengthBase[li]), count: lengthExtra[li]) }
        var di = distanceBase.count - 1
        while distanceBase[di] > distance { di -= 1 }
        bits.writeHuffman(di, count: 5)  // fixed distance codes are 5-bit
        if distanceExtra[di] > 0 { bits.write(UInt32(distance - distanceBase[di]), count: distanceExtra[di]) }
    }

    /// DEFLATE bit packing: values least-significant bit first, Huffman codes most-significant first.
    struct BitWriter {
        var bytes: [UInt8] = []
        var accumulator: UInt64 = 0
        var used = 0

        mutating func write(_ value: UInt32, count: Int) {
            accumulator |= UInt64(value) << UInt64(used)
            used += count
            while used >= 8 {
                bytes.append(UInt8(accumulator & 0xFF))
                accumulator >>= 8
                used -= 8
            }
        }

        mutating func writeHuffman(_ code: Int, count: Int) {
            var reversed: UInt32 = 0
            for k in 0..<count where (code >> k) & 1 != 0 { reversed |= 1 << UInt32(count - 1 - k) }
            write(reversed, count: count)
        }

        mutating func flush() {
            if used > 0 { bytes.append(UInt8(accumulator & 0xFF)); accumulator = 0; used = 0 }
        }
    }
}
