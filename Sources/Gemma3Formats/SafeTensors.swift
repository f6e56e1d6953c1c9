import Foundation
import Gemma3Infrastructure
import Gemma3Kernels

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Element types of the safetensors format that this project reads (and, for floats, writes).
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .i8, .u8, .bool: 1
        }
    }

    /// Whether the type holds floating-point values.
    public var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 || self == .f64 }
}

/// Where one tensor lives in a safetensors file.
public struct SafeTensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    /// Byte range relative to the start of the data section.
    public let dataRange: Range<Int>
    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
}

/// A read-only safetensors file, memory-mapped from disk or copied from bytes in memory (https://github.com/huggingface/safetensors format:
/// 8-byte little-endian header length, JSON header, raw little-endian row-major data).
///
/// Opening validates the whole header: every tensor's byte range must match its dtype and shape,
/// lie inside the file, and not overlap another; the data section must be fully covered.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    /// Tensors in file order (by data offset).
    public let tensors: [SafeTensorInfo]
    /// The `__metadata__` string map (empty when absent).
    public let metadata: [String: String]
    private let index: [String: Int]
    private let base: UnsafeRawPointer
    private let storage: FileBytes
    private let dataStart: Int

    /// Maps and validates `url`. Throws `FormatError` with a one-line message on any inconsistency.
    public convenience init(url: URL) throws {
        let path = url.path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FormatError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FormatError("cannot stat \(path)") }
        let size = Int(st.st_size)
        guard size >= 8 else { throw SafeTensorsFile.tooSmall(path, size) }
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw FormatError("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        try self.init(base: UnsafeRawPointer(map), size: size, path: path, storage: .mapped(length: size))
    }

    /// Validates a whole safetensors file held in memory (the bytes are copied), with the same
    /// checks and errors as a file on disk; `name` stands for the path in error messages.
    public convenience init(bytes: [UInt8], name: String = "safetensors data") throws {
        guard bytes.count >= 8 else { throw SafeTensorsFile.tooSmall(name, bytes.count) }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 64)
        bytes.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        try self.init(base: UnsafeRawPointer(copy), size: bytes.count, path: name, storage: .allocated)
    }

    private static func tooSmall(_ path: String, _ size: Int) -> FormatError {
        FormatError("\(path): not a safetensors file (only \(size) bytes)")
    }

    /// Where the bytes behind `base` come from, so that deinit (or a failed validation) releases them.
    private enum FileBytes {
        case mapped(length: Int)
        case allocated

        func release(_ base: UnsafeRawPointer) {
            switch self {
            case .mapped(let length): munmap(UnsafeMutableRawPointer(mutating: base), length)
            case .allocated: UnsafeMutableRawPointer(mutating: base).deallocate()
            }
        }
    }

    /// Validates the `size` bytes at `base` (the whole file, at least 8 bytes); takes ownership of them.
    private init(base raw: UnsafeRawPointer, size: Int, path: String, storage: FileBytes) throws {
        self.path = path
        var ok = false
        defer { if !ok { storage.release(raw) } }

        // Clamped: a length of 2^63 or more is as wrong as any other length past the end.
        let headerLength = Int(clamping: UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self)))
        guard headerLength > 0, headerLength <= 100_000_000, 8 + headerLength <= size else {
            throw FormatError("\(path): header length \(headerLength) does not fit a file of \(size) bytes (truncated or not safetensors)")
        }
        let headerData = Data(bytes: raw + 8, count: headerLength)
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: headerData) } catch {
            throw FormatError("\(path): header is not valid JSON")
        }
        guard let header = json as? [String: Any] else { throw FormatError("\(path): header is not a JSON object") }

        var meta: [String: String] = [:]
        var infos: [SafeTensorInfo] = []
        let dataLength = size - 8 - headerLength
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw FormatError("\(path): __metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw FormatError("\(path): __metadata__ value for \"\(k)\" is not a string") }
                    meta[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shapeAny = entry["shape"] as? [Any],
                  let offsetsAny = entry["data_offsets"] as? [Any], offsetsAny.count == 2
            else { throw FormatError("\(path): malformed header entry for tensor \"\(name)\"") }
            guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
                throw FormatError("\(path): tensor \"\(name)\" has unsupported dtype \(dtypeName)")
            }
            let shape = try shapeAny.map { any -> Int in
                guard let n = SafeTensorsFile.integer(any), n >= 0 else {
                    throw FormatError("\(path): tensor \"\(name)\" has an invalid shape")
                }
                return n
            }
            guard let begin = SafeTensorsFile.integer(offsetsAny[0]), let end = SafeTensorsFile.integer(offsetsAny[1]),
                  begin >= 0, end >= begin
            else { throw FormatError("\(path): tensor \"\(name)\" has invalid data_offsets") }
            var count = 1
            for d in shape {
                let (p, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow else { throw FormatError("\(path): tensor \"\(name)\" shape is too large") }
                count = p
            }
            let (bytes, bytesOverflow) = count.multipliedReportingOverflow(by: dtype.size)
            guard !bytesOverflow else {
                throw FormatError("\(path): tensor \"\(name)\" \(dtypeName)\(shape) needs more bytes than the file's data section (\(dataLength))")
            }
            guard end - begin == bytes else {
                throw FormatError("\(path): tensor \"\(name)\" \(dtypeName)\(shape) needs \(bytes) bytes but data_offsets span \(end - begin)")
            }
            guard end <= dataLength else {
                throw FormatError("\(path): tensor \"\(name)\" ends at byte \(end) but the data section has \(dataLength) bytes (truncated file?)")
            }
            infos.append(SafeTensorInfo(name: name, dtype: dtype, shape: shape, dataRange: begin..<end))
        }
        infos.sort { ($0.dataRange.lowerBound, $0.dataRange.upperBound, $0.name) < ($1.dataRange.lowerBound, $1.dataRange.upperBound, $1.name) }
        var cursor = 0
        for info in infos where !info.dataRange.isEmpty {
            guard info.dataRange.lowerBound >= cursor else {
                throw FormatError("\(path): tensor \"\(info.name)\" overlaps another tensor's data")
            }
            guard info.dataRange.lowerBound == cursor else {
                throw FormatError("\(path): gap in the data section before tensor \"\(info.name)\"")
            }
            cursor = info.dataRange.upperBound
        }
        guard cursor == dataLength else {
            throw FormatError("\(path): data section has \(dataLength) bytes but tensors cover \(cursor)")
        }
        tensors = infos
        metadata = meta
        var index: [String: Int] = [:]
        for (i, t) in infos.enumerated() { index[t.name] = i }
        self.index = index
        base = raw
        self.storage = storage
        dataStart = 8 + headerLength
        ok = true
    }

    deinit { storage.release(base) }

    /// A JSON integer, exactly: 50257.9 or 1e300 are not shapes or offsets.
    private static func integer(_ any: Any) -> Int? {
        guard let n = any as? NSNumber else { return nil }
        let d = n.doubleValue
        guard d.isFinite, d == d.rounded(.towardZero), abs(d) < 0x1p62 else { return nil }
        return Int(n.int64Value)
    }

    /// The tensor called `name`, or nil.
    public func info(_ name: String) -> SafeTensorInfo? { index[name].map { tensors[$0] } }

    private func require(_ name: String) throws -> SafeTensorInfo {
        guard let info = info(name) else { throw FormatError("\(path): no tensor named \"\(name)\"") }
        return info
    }

    /// Raw bytes of a tensor (valid while the file object lives).
    public func bytes(of info: SafeTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + dataStart + info.dataRange.lowerBound, count: info.dataRange.count)
    }

    /// Converts a float tensor (F32/F16/BF16/F64) into `destination`, which must hold exactly its element count.
    public func copyFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        let info = try require(name)
        guard destination.count == info.count else {
            throw FormatError("\(path): tensor \"\(name)\" has \(info.count) elements, expected \(destination.count)")
        }
        let src = bytes(of: info)
        let n = info.count
        let d = UncheckedSendable(destination)
        let s = UncheckedSendable(src)
        switch info.dtype {
        case .f32:
            #if _endian(little)
            if n > 0 { memcpy(destination.baseAddress!, src.baseAddress!, 4 * n) }
            #else
            for i in 0..<n { destination[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            #endif
        case .bf16:
            Parallel.chunks(n, minimumPerChunk: 1 << 16) { r in
                for i in r { d.value[i] = NumberFormats.bf16ToFloat(UInt16(littleEndian: s.value.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            }
        case .f16:
            Parallel.chunks(n, minimumPerChunk: 1 << 16) { r in
                for i in r { d.value[i] = NumberFormats.f16ToFloat(UInt16(littleEndian: s.value.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            }
        case .f64:
            for i in 0..<n { destination[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
        default:
            throw FormatError("\(path): tensor \"\(name)\" has dtype \(info.dtype.rawValue), expected a float type")
        }
    }

    /// A float tensor as a new array.
    public func floats(_ name: String) throws -> [Float] {
        let info = try require(name)
        var out = [Float](repeating: 0, count: info.count)
        try out.withUnsafeMutableBufferPointer { try copyFloats(name, into: $0) }
        return out
    }

    /// An integer tensor (I64/I32/I16/I8/U8/BOOL) as Ints.
    public func integers(_ name: String) throws -> [Int] {
        let info = try require(name)
        let src = bytes(of: info)
        let n = info.count
        switch info.dtype {
        case .i64: return (0..<n).map { Int(Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
        case .i32: return (0..<n).map { Int(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
        case .i16: return (0..<n).map { Int(Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self))) }
        case .i8: return (0..<n).map { Int(src.load(fromByteOffset: $0, as: Int8.self)) }
        case .u8, .bool: return (0..<n).map { Int(src[$0]) }
        default: throw FormatError("\(path): tensor \"\(name)\" has dtype \(info.dtype.rawValue), expected an integer type")
        }
    }
}

/// Builds a safetensors file tensor by tensor and writes it atomically. Float data is converted to the
/// requested dtype while streaming, so a model never exists twice in memory.
public struct SafeTensorsWriter {
    private enum Source {
        case floats(UnsafeBufferPointer<Float>, SafeTensorsDType)
        case bytes([UInt8])
    }
    private var entries: [(name: String, dtype: SafeTensorsDType, shape: [Int], source: Source)] = []
    /// String metadata written as `__metadata__`.
    public var metadata: [String: String] = [:]

    public init() {}

    /// Adds a float tensor stored as `dtype` (F32, F16 or BF16). The buffer must stay valid until `write`.
    public mutating func add(_ name: String, shape: [Int], floats: UnsafeBufferPointer<Float>, dtype: SafeTensorsDType = .f32) throws {
        guard dtype == .f32 || dtype == .f16 || dtype == .bf16 else {
            throw FormatError("safetensors writer: cannot store floats as \(dtype.rawValue)")
        }
        guard shape.reduce(1, *) == floats.count else {
            throw FormatError("safetensors writer: tensor \"\(name)\" shape \(shape) does not match \(floats.count) elements")
        }
        try checkName(name)
        entries.append((name, dtype, shape, .floats(floats, dtype)))
    }

    /// Adds an I64 tensor.
    public mutating func add(_ name: String, shape: [Int], int64 values: [Int]) throws {
        guard shape.reduce(1, *) == values.count else {
            throw FormatError("safetensors writer: tensor \"\(name)\" shape \(shape) does not match \(values.count) elements")
        }
        try checkName(name)
        var bytes = [UInt8](repeating: 0, count: 8 * values.count)
        bytes.withUnsafeMutableBytes { raw in
            for (i, v) in values.enumerated() { raw.storeBytes(of: Int64(v).littleEndian, toByteOffset: 8 * i, as: Int64.self) }
        }
        entries.append((name, .i64, shape, .bytes(bytes)))
    }

    private func checkName(_ name: String) throws {
        guard name != "__metadata__", !entries.contains(where: { $0.name == name }) else {
            throw FormatError("safetensors writer: duplicate or reserved tensor name \"\(name)\"")
        }
    }

    /// The header JSON, padded with spaces to a multiple of 8 bytes.
    func headerBytes() throws -> [UInt8] {
        var object: [String: Any] = [:]
        var cursor = 0
        for e in entries {
            let n = e.shape.reduce(1, *) * e.dtype.size
            object[e.name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [cursor, cursor + n]] as [String: Any]
            cursor += n
        }
        if !metadata.isEmpty { object["__metadata__"] = metadata }
        var bytes = [UInt8](try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
        while (8 + bytes.count) % 8 != 0 { bytes.append(0x20) }
        return bytes
    }

    /// Writes the file atomically (temp file, fsync, rename).
    public func write(to url: URL) throws {
        let header = try headerBytes()
        try AtomicFileWriter.write(to: url) { handle in
            var length = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &length) { try handle.write($0) }
            try handle.write(header)
            let chunk = 1 << 18
            var scratch = [UInt8](repeating: 0, count: chunk * 4)
            for e in entries {
                switch e.source {
                case .bytes(let b):
                    try handle.write(b)
                case .floats(let values, let dtype):
                    var start = 0
                    while start < values.count {
                        let end = min(values.count, start + chunk)
                        let written: Int = scratch.withUnsafeMutableBytes { raw in
                            switch dtype {
                            case .f16:
                                for i in start..<end { raw.storeBytes(of: NumberFormats.floatToF16(values[i]).littleEndian, toByteOffset: 2 * (i - start), as: UInt16.self) }
                                return 2 * (end - start)
                            case .bf16:
                                for i in start..<end { raw.storeBytes(of: NumberFormats.floatToBF16(values[i]).littleEndian, toByteOffset: 2 * (i - start), as: UInt16.self) }
                                return 2 * (end - start)
                            default:
                                for i in start..<end { raw.storeBytes(of: values[i].bitPattern.littleEndian, toByteOffset: 4 * (i - start), as: UInt32.self) }
                                return 4 * (end - start)
                            }
                        }
                        try scratch.withUnsafeBytes { try handle.write(UnsafeRawBufferPointer(rebasing: $0[0..<written])) }
                        start = end
                    }
                }
            }
        }
    }
}
