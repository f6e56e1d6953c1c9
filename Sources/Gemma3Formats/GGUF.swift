import Foundation
import Gemma3Infrastructure
import Gemma3Kernels

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

// GGUF (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), little-endian:
//   magic "GGUF" · u32 version · u64 tensor_count · u64 kv_count
//   kv_count × (string key · u32 value type · value)
//   tensor_count × (string name · u32 n_dims · n_dims × u64 ne · u32 ggml type · u64 offset)
//   padding to `general.alignment` (default 32) · tensor data (offsets relative to here, aligned)
// A string is u64 length + UTF-8 bytes; an array is u32 element type · u64 count · elements.
// Version 1 used 32-bit counts and lengths and is not supported; versions 2 and 3 share the layout
// above (3 allows big-endian files, which this reader rejects by their byte-swapped version).

/// The type tag of a GGUF metadata value.
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12
}

/// A GGUF metadata value.
public indirect enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    /// An array: its element type and elements (all of that type; nested arrays are allowed).
    case array(GGUFValueType, [GGUFValue])

    /// The value's type tag.
    public var type: GGUFValueType {
        switch self {
        case .uint8: .uint8
        case .int8: .int8
        case .uint16: .uint16
        case .int16: .int16
        case .uint32: .uint32
        case .int32: .int32
        case .uint64: .uint64
        case .int64: .int64
        case .float32: .float32
        case .float64: .float64
        case .bool: .bool
        case .string: .string
        case .array: .array
        }
    }

    /// Any integer type as Int (nil for non-integers and unrepresentable UInt64s).
    public var intValue: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        default: nil
        }
    }

    /// Float types (and integers) as Double.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: intValue.map(Double.init)
        }
    }

    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var arrayValue: [GGUFValue]? { if case .array(_, let a) = self { a } else { nil } }
}

/// One tensor of a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// ggml dimensions, innermost first: `dimensions[0]` is the row length. A matrix stored for
    /// y = W·x (`nn.Linear` [out, in]) has dimensions [in, out].
    public let dimensions: [Int]
    /// The ggml type id as stored (see `type`).
    public let rawType: UInt32
    /// Offset of the data from the start of the data section.
    public let offset: Int
    /// Bytes of data (nil for types this project does not know).
    public let byteCount: Int?

    /// The element type, nil for ggml types unknown here.
    public var type: GGMLType? { GGMLType(rawValue: rawType) }
    /// Number of elements.
    public var elementCount: Int { dimensions.reduce(1, *) }
    /// Rows of the tensor viewed as a matrix (product of the outer dimensions).
    public var rows: Int { dimensions.dropFirst().reduce(1, *) }
    /// Row length (`dimensions[0]`).
    public var columns: Int { dimensions.first ?? 1 }
    /// "Q8_0" etc., or "type 16" for unknown ids.
    public var typeName: String { type?.name ?? "type \(rawType)" }
}

/// A read-only GGUF file (version 2 or 3), memory-mapped from disk or copied from bytes in memory.
///
/// Opening parses and validates the header: every value type and length is checked against the file
/// size; tensor offsets must be aligned, in bounds and non-overlapping. Errors are one-line
/// `FormatError`s naming the file and what is wrong. The mapping stays valid while the object lives;
/// `QuantizedLinear` weights that borrow tensor data keep the file alive through `owner`.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    /// Metadata in file order.
    public let metadata: [(key: String, value: GGUFValue)]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    /// `general.alignment` (default 32).
    public let alignment: Int
    /// Absolute file offset of the data section.
    public let dataOffset: Int
    /// File size in bytes.
    public let fileSize: Int
    private let metadataIndex: [String: Int]
    private let tensorIndex: [String: Int]
    private let base: UnsafeRawPointer
    private let storage: HeaderBytes

    /// Maps and parses `url`.
    public convenience init(url: URL) throws {
        try self.init(path: url.path)
    }

    /// Maps and parses the file at `path`.
    public convenience init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FormatError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FormatError("cannot stat \(path): \(String(cString: strerror(errno)))") }
        let size = Int(st.st_size)
        guard size >= GGUFFile.minimumSize else { throw GGUFFile.tooSmall(path, size) }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw FormatError("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        try self.init(base: UnsafeRawPointer(mapped), size: size, path: path, storage: .mapped(length: size))
    }

    /// Parses a whole GGUF file held in memory (the bytes are copied), with the same checks and
    /// errors as a file on disk; `name` stands for the path in error messages.
    public convenience init(bytes: [UInt8], name: String = "GGUF data") throws {
        guard bytes.count >= GGUFFile.minimumSize else { throw GGUFFile.tooSmall(name, bytes.count) }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 64)
        bytes.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        try self.init(base: UnsafeRawPointer(copy), size: bytes.count, path: name, storage: .allocated)
    }

    /// Magic, version and the two counts.
    private static let minimumSize = 24
    private static func tooSmall(_ path: String, _ size: Int) -> FormatError {
        FormatError("\(path): not a GGUF file (only \(size) bytes)")
    }

    /// Where the bytes behind `base` come from, so that deinit (or a failed parse) releases them.
    private enum HeaderBytes {
        case mapped(length: Int)
        case allocated

        func release(_ base: UnsafeRawPointer) {
            switch self {
            case .mapped(let length): munmap(UnsafeMutableRawPointer(mutating: base), length)
            case .allocated: UnsafeMutableRawPointer(mutating: base).deallocate()
            }
        }
    }

    /// Parses the `size` bytes at `base` (the whole file); takes ownership of them.
    private init(base: UnsafeRawPointer, size: Int, path: String, storage: HeaderBytes) throws {
        self.path = path
        self.base = base
        self.storage = storage
        fileSize = size
        do {
            var r = Reader(base: base, size: size, path: path)
            let magic = try r.read(UInt32.self, "magic")
            guard magic == 0x4655_4747 else {  // "GGUF" little-endian
                throw FormatError("\(path): not a GGUF file (bad magic)")
            }
            version = try r.read(UInt32.self, "version")
            guard version == 2 || version == 3 else {
                if version == 1 { throw FormatError("\(path): GGUF version 1 is not supported (versions 2 and 3 are)") }
                if version.byteSwapped == 2 || version.byteSwapped == 3 {
                    throw FormatError("\(path): big-endian GGUF files are not supported")
                }
                throw FormatError("\(path): unknown GGUF version \(version)")
            }
            let tensorCount = try r.count("tensor count", minimumBytesEach: 24)
            let kvCount = try r.count("metadata count", minimumBytesEach: 13)
            var metadata: [(key: String, value: GGUFValue)] = []
            metadata.reserveCapacity(kvCount)
            var metadataIndex: [String: Int] = [:]
            for i in 0..<kvCount {
                let key = try r.string("metadata key \(i)")
                let rawType = try r.read(UInt32.self, "type of \(key)")
                guard let type = GGUFValueType(rawValue: rawType) else {
                    throw FormatError("\(path): metadata \(key) has unknown value type \(rawType)")
                }
                let value = try r.value(type, key: key, depth: 0)
                if metadataIndex[key] != nil { throw FormatError("\(path): duplicate metadata key \(key)") }
                metadataIndex[key] = metadata.count
                metadata.append((key, value))
            }
            var alignment = 32
            if let i = metadataIndex["general.alignment"] {
                guard let a = metadata[i].value.intValue, a > 0, a & (a - 1) == 0 else {
                    throw FormatError("\(path): general.alignment must be a power of two, got \(metadata[i].value)")
                }
                alignment = a
            }
            var tensors: [GGUFTensorInfo] = []
            tensors.reserveCapacity(tensorCount)
            var tensorIndex: [String: Int] = [:]
            for i in 0..<tensorCount {
                let name = try r.string("tensor name \(i)")
                let nDims = Int(try r.read(UInt32.self, "dimension count of \(name)"))
                guard nDims >= 1, nDims <= 4 else { throw FormatError("\(path): tensor \(name) has \(nDims) dimensions (1…4 allowed)") }
                var dims: [Int] = []
                var elements = 1
                for _ in 0..<nDims {
                    let d = try r.read(UInt64.self, "dimensions of \(name)")
                    guard d > 0, d < 1 << 40 else { throw FormatError("\(path): tensor \(name) has dimension \(d)") }
                    dims.append(Int(d))
                    let (e, overflow) = elements.multipliedReportingOverflow(by: Int(d))
                    guard !overflow else { throw FormatError("\(path): tensor \(name) is too large") }
                    elements = e
                }
                let rawType = try r.read(UInt32.self, "type of \(name)")
                let offset = try r.read(UInt64.self, "offset of \(name)")
                guard offset < UInt64(size) else { throw FormatError("\(path): truncated or corrupt file: tensor \(name) starts beyond the end of the file") }
                var bytes: Int? = nil
                if let t = GGMLType(rawValue: rawType) {
                    guard dims[0] % t.blockSize == 0 else {
                        throw FormatError("\(path): tensor \(name) of type \(t.name) has rows of \(dims[0]) values, not a multiple of the block size \(t.blockSize)")
                    }
                    // More bytes than the whole file holds (or than an Int counts) is corrupt, whatever the offset.
                    guard let b = t.byteCount(elements: elements), b <= size else {
                        throw FormatError("\(path): tensor \(name) (\(dims.map(String.init).joined(separator: " × ")) \(t.name)) needs more bytes than the file's \(size)")
                    }
                    bytes = b
                }
                guard Int(offset) % alignment == 0 else {
                    throw FormatError("\(path): tensor \(name) offset \(offset) is not aligned to \(alignment)")
                }
                if tensorIndex[name] != nil { throw FormatError("\(path): duplicate tensor name \(name)") }
                tensorIndex[name] = tensors.count
                tensors.append(GGUFTensorInfo(name: name, dimensions: dims, rawType: rawType, offset: Int(offset), byteCount: bytes))
            }
            let dataOffset = (r.offset + alignment - 1) / alignment * alignment
            guard dataOffset <= size || tensors.isEmpty else {
                throw FormatError("\(path): truncated file: the header ends at byte \(r.offset), the file has \(size) bytes")
            }
            // Bounds and overlap of the tensor data.
            var end = 0
            for t in tensors.sorted(by: { $0.offset < $1.offset }) {
                guard let bytes = t.byteCount else { continue }
                guard t.offset >= end else { throw FormatError("\(path): tensor \(t.name) overlaps the previous tensor") }
                let stop = dataOffset + t.offset + bytes
                guard stop <= size else {
                    throw FormatError("\(path): truncated file: tensor \(t.name) needs bytes up to \(stop), the file has \(size)")
                }
                end = t.offset + bytes
            }
            self.metadata = metadata
            self.metadataIndex = metadataIndex
            self.tensors = tensors
            self.tensorIndex = tensorIndex
            self.alignment = alignment
            self.dataOffset = dataOffset
        } catch {
            storage.release(base)
            throw error
        }
    }

    deinit { storage.release(base) }

    // MARK: Metadata access

    /// The value stored under `key`.
    public subscript(key: String) -> GGUFValue? {
        metadataIndex[key].map { metadata[$0].value }
    }

    /// An integer value (any integer type); throws when it is missing (and `required`) or not an integer.
    public func int(_ key: String) throws -> Int {
        guard let v = self[key] else { throw FormatError("\(path): missing metadata \(key)") }
        guard let i = v.intValue else { throw FormatError("\(path): metadata \(key) is not an integer (\(v.type))") }
        return i
    }

    /// A number (float or integer) as Double; throws when missing or not a number.
    public func double(_ key: String) throws -> Double {
        guard let v = self[key] else { throw FormatError("\(path): missing metadata \(key)") }
        guard let d = v.doubleValue else { throw FormatError("\(path): metadata \(key) is not a number (\(v.type))") }
        return d
    }

    /// A string value; throws when missing or not a string.
    public func string(_ key: String) throws -> String {
        guard let v = self[key] else { throw FormatError("\(path): missing metadata \(key)") }
        guard let s = v.stringValue else { throw FormatError("\(path): metadata \(key) is not a string (\(v.type))") }
        return s
    }

    /// An array of strings; throws when missing or of another type.
    public func strings(_ key: String) throws -> [String] {
        guard let v = self[key] else { throw FormatError("\(path): missing metadata \(key)") }
        guard case .array(.string, let items) = v else { throw FormatError("\(path): metadata \(key) is not an array of strings") }
        return items.map { $0.stringValue ?? "" }
    }

    /// An array of numbers as Float; throws when missing or not numeric.
    public func floats(_ key: String) throws -> [Float] {
        guard let v = self[key] else { throw FormatError("\(path): missing metadata \(key)") }
        guard case .array(_, let items) = v else { throw FormatError("\(path): metadata \(key) is not an array") }
        return try items.map { item in
            guard let d = item.doubleValue else { throw FormatError("\(path): metadata \(key) is not an array of numbers") }
            return Float(d)
        }
    }

    /// An array of integers; throws when missing or not integers.
    public func ints(_ key: String) throws -> [Int] {
        guard let v = self[key] else { throw FormatError("\(path): missing metadata \(key)") }
        guard case .array(_, let items) = v else { throw FormatError("\(path): metadata \(key) is not an array") }
        return try items.map { item in
            guard let i = item.intValue else { throw FormatError("\(path): metadata \(key) is not an array of integers") }
            return i
        }
    }

    // MARK: Tensor access

    /// The tensor named `name`, if present.
    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The bytes of tensor `info` inside the mapping (valid while `self` lives).
    public func data(of info: GGUFTensorInfo) throws -> UnsafeRawBufferPointer {
        guard let bytes = info.byteCount else {
            throw FormatError("\(path): tensor \(info.name) has ggml type \(info.rawType), which this reader does not know")
        }
        return UnsafeRawBufferPointer(start: base + dataOffset + info.offset, count: bytes)
    }

    /// The bytes of the tensor named `name`; throws when it is absent.
    public func data(named name: String) throws -> UnsafeRawBufferPointer {
        guard let info = tensor(named: name) else { throw FormatError("\(path): missing tensor \(name)") }
        return try data(of: info)
    }

    /// A tensor decoded to float32 (any type with kernels), row-major in ggml order.
    public func floats(tensor name: String) throws -> [Float] {
        guard let info = tensor(named: name) else { throw FormatError("\(path): missing tensor \(name)") }
        guard let type = info.type, type.hasKernels else {
            throw FormatError("\(path): tensor \(name) has type \(info.typeName), which cannot be dequantized here")
        }
        let raw = try data(of: info)
        let rowBytes = type.byteCount(elements: info.columns)!
        var out = [Float](repeating: 0, count: info.elementCount)
        out.withUnsafeMutableBufferPointer { dst in
            for r in 0..<info.rows {
                GGMLBlocks.dequantizeRowUnchecked(type, raw.baseAddress! + r * rowBytes, dst.baseAddress! + r * info.columns, count: info.columns)
            }
        }
        return out
    }

    /// A 2-D tensor as a `QuantizedLinear` [dimensions[1] × dimensions[0]] borrowing the mapping.
    public func linear(named name: String, activations: QuantizedLinear.ActivationPrecision = .int16) throws -> QuantizedLinear {
        guard let info = tensor(named: name) else { throw FormatError("\(path): missing tensor \(name)") }
        guard let type = info.type else { throw FormatError("\(path): tensor \(name) has unsupported ggml type \(info.rawType)") }
        guard info.dimensions.count == 2 else {
            throw FormatError("\(path): tensor \(name) has \(info.dimensions.count) dimensions, a matrix needs 2")
        }
        do {
            return try QuantizedLinear(type: type, borrowing: try data(of: info).baseAddress!, outFeatures: info.dimensions[1],
                                       inFeatures: info.dimensions[0], owner: self, activations: activations)
        } catch let e as GGMLBlocks.Unsupported {
            throw FormatError("\(path): tensor \(name): \(e.description)")
        }
    }
}

/// Bounds-checked little-endian cursor over the mapped header.
private struct Reader {
    let base: UnsafeRawPointer
    let size: Int
    let path: String
    var offset = 0

    func truncated(_ what: String) -> FormatError {
        FormatError("\(path): truncated GGUF header while reading \(what) at byte \(offset) (file has \(size) bytes)")
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let n = MemoryLayout<T>.size
        guard size - offset >= n else { throw truncated(what) }
        let v = T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += n
        return v
    }

    /// A u64 count, checked against the bytes left (each item needs at least `minimumBytesEach`).
    mutating func count(_ what: String, minimumBytesEach: Int) throws -> Int {
        let c = try read(UInt64.self, what)
        guard c <= UInt64((size - offset) / max(1, minimumBytesEach)) else {
            throw FormatError("\(path): truncated or corrupt GGUF header: \(what) \(c) cannot fit in the file")
        }
        return Int(c)
    }

    mutating func string(_ what: String) throws -> String {
        let n = try read(UInt64.self, "length of \(what)")
        guard n <= UInt64(size - offset) else { throw truncated(what) }
        let s = String(decoding: UnsafeRawBufferPointer(start: base + offset, count: Int(n)), as: UTF8.self)
        offset += Int(n)
        return s
    }

    mutating func value(_ type: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try read(UInt8.self, key))
        case .int8: return .int8(try read(Int8.self, key))
        case .uint16: return .uint16(try read(UInt16.self, key))
        case .int16: return .int16(try read(Int16.self, key))
        case .uint32: return .uint32(try read(UInt32.self, key))
        case .int32: return .int32(try read(Int32.self, key))
        case .uint64: return .uint64(try read(UInt64.self, key))
        case .int64: return .int64(try read(Int64.self, key))
        case .float32: return .float32(Float(bitPattern: try read(UInt32.self, key)))
        case .float64: return .float64(Double(bitPattern: try read(UInt64.self, key)))
        case .bool:
            let b = try read(UInt8.self, key)
            guard b <= 1 else { throw FormatError("\(path): metadata \(key) is a bool with byte value \(b)") }
            return .bool(b == 1)
        case .string: return .string(try string(key))
        case .array:
            guard depth < 8 else { throw FormatError("\(path): metadata \(key) nests arrays too deeply") }
            let rawType = try read(UInt32.self, "element type of \(key)")
            guard let elementType = GGUFValueType(rawValue: rawType) else {
                throw FormatError("\(path): metadata \(key) is an array of unknown type \(rawType)")
            }
            let minimum: Int
            switch elementType {
            case .uint8, .int8, .bool: minimum = 1
            case .uint16, .int16: minimum = 2
            case .uint32, .int32, .float32: minimum = 4
            case .uint64, .int64, .float64, .string: minimum = 8
            case .array: minimum = 12
            }
            let n = try count("length of \(key)", minimumBytesEach: minimum)
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(elementType, key: key, depth: depth + 1)) }
            return .array(elementType, items)
        }
    }
}

// MARK: - Writer

/// Builds a GGUF file (version 3) in memory order and writes it atomically.
///
/// Metadata keys keep insertion order; `general.alignment` is written when it differs from 32.
/// Tensor data is padded to the alignment.
public struct GGUFWriter {
    public private(set) var metadata: [(key: String, value: GGUFValue)] = []
    public private(set) var tensors: [(name: String, type: GGMLType, dimensions: [Int], data: [UInt8])] = []
    public let alignment: Int

    /// `alignment` must be a power of two (ggml's default is 32).
    public init(alignment: Int = 32) {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "GGUFWriter: alignment must be a power of two")
        self.alignment = alignment
        if alignment != 32 { metadata.append(("general.alignment", .uint32(UInt32(alignment)))) }
    }

    /// Adds (or replaces) a metadata value.
    public mutating func set(_ key: String, _ value: GGUFValue) {
        if let i = metadata.firstIndex(where: { $0.key == key }) { metadata[i].value = value } else { metadata.append((key, value)) }
    }

    /// Adds a tensor from packed bytes; `dimensions` are ggml order (row length first).
    public mutating func addTensor(_ name: String, type: GGMLType, dimensions: [Int], data: [UInt8]) throws {
        guard !dimensions.isEmpty, dimensions.count <= 4, dimensions.allSatisfy({ $0 > 0 }) else {
            throw FormatError("GGUF writer: tensor \(name) has invalid dimensions \(dimensions)")
        }
        guard let bytes = type.byteCount(elements: dimensions.reduce(1, *)), dimensions[0] % type.blockSize == 0 else {
            throw FormatError("GGUF writer: tensor \(name): rows of \(dimensions[0]) values are not whole \(type.name) blocks")
        }
        guard bytes == data.count else {
            throw FormatError("GGUF writer: tensor \(name) needs \(bytes) bytes of \(type.name), got \(data.count)")
        }
        guard !tensors.contains(where: { $0.name == name }) else { throw FormatError("GGUF writer: duplicate tensor \(name)") }
        tensors.append((name, type, dimensions, data))
    }

    /// Adds a tensor from float32 values (row-major, ggml dimension order), quantizing to `type`.
    public mutating func addTensor(_ name: String, type: GGMLType, dimensions: [Int], values: [Float]) throws {
        let cols = dimensions.first ?? 0
        let rows = dimensions.dropFirst().reduce(1, *)
        guard values.count == rows * cols else {
            throw FormatError("GGUF writer: tensor \(name) has \(values.count) values for dimensions \(dimensions)")
        }
        let bytes: [UInt8]
        do {
            bytes = try values.withUnsafeBufferPointer { try GGMLBlocks.quantize(type, $0, rows: rows, cols: cols) }
        } catch let e as GGMLBlocks.Unsupported {
            throw FormatError("GGUF writer: tensor \(name): \(e.description)")
        }
        try addTensor(name, type: type, dimensions: dimensions, data: bytes)
    }

    /// The complete file contents.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func putString(_ s: String) { put(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func putValue(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): put(x)
            case .int8(let x): put(x)
            case .uint16(let x): put(x)
            case .int16(let x): put(x)
            case .uint32(let x): put(x)
            case .int32(let x): put(x)
            case .uint64(let x): put(x)
            case .int64(let x): put(x)
            case .float32(let x): put(x.bitPattern)
            case .float64(let x): put(x.bitPattern)
            case .bool(let x): put(UInt8(x ? 1 : 0))
            case .string(let s): putString(s)
            case .array(let t, let items):
                put(t.rawValue)
                put(UInt64(items.count))
                for item in items { putValue(item) }
            }
        }
        out.append(contentsOf: Array("GGUF".utf8))
        put(UInt32(3))
        put(UInt64(tensors.count))
        put(UInt64(metadata.count))
        for (key, value) in metadata {
            putString(key)
            put(value.type.rawValue)
            putValue(value)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset = (offset + t.data.count + alignment - 1) / alignment * alignment
        }
        for (t, o) in zip(tensors, offsets) {
            putString(t.name)
            put(UInt32(t.dimensions.count))
            for d in t.dimensions { put(UInt64(d)) }
            put(t.type.rawValue)
            put(UInt64(o))
        }
        while out.count % alignment != 0 { out.append(0) }
        for t in tensors {
            out.append(contentsOf: t.data)
            while out.count % alignment != 0 { out.append(0) }
        }
        return out
    }

    /// Writes the file atomically (temporary file, fsync, rename).
    public func write(to url: URL) throws {
        try AtomicFileWriter.write(to: url) { handle in try handle.write(serialized()) }
    }
}
