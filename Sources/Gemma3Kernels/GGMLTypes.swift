/// Tensor element types of ggml / GGUF files (the `type` field of a GGUF tensor info).
///
/// Quantized types store a row as consecutive fixed-size blocks; `blockSize` elements take
/// `bytesPerBlock` bytes. The raw values are ggml's `enum ggml_type` ids. The set listed here is the
/// one whose sizes this project knows; `hasKernels` says which ones it can also compute with.
public enum GGMLType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, bf16 = 30

    /// ggml's spelling ("F32", "Q4_K", …).
    public var name: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q8_1: "Q8_1"
        case .q2_K: "Q2_K"
        case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        case .q8_K: "Q8_K"
        case .i8: "I8"
        case .i16: "I16"
        case .i32: "I32"
        case .i64: "I64"
        case .f64: "F64"
        case .bf16: "BF16"
        }
    }

    public var description: String { name }

    /// Looks a type up by its ggml name, case-insensitively ("q8_0", "Q4_K", "bf16").
    public init?(name: String) {
        let upper = name.uppercased()
        guard let t = GGMLType.allCases.first(where: { $0.name.uppercased() == upper }) else { return nil }
        self = t
    }

    /// Elements per block (1 for plain scalar types).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .i8, .i16, .i32, .i64, .f64: 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1: 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K: 256
        }
    }

    /// Bytes per block.
    public var bytesPerBlock: Int {
        switch self {
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .i8: 1
        case .i64, .f64: 8
        case .q4_0: 18   // f16 d, 16 bytes of nibbles
        case .q4_1: 20   // f16 d, f16 m, 16 bytes of nibbles
        case .q5_0: 22   // f16 d, 4 bytes of 5th bits, 16 bytes of nibbles
        case .q5_1: 24
        case .q8_0: 34   // f16 d, 32 int8
        case .q8_1: 36
        case .q2_K: 84
        case .q3_K: 110
        case .q4_K: 144  // f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
        case .q5_K: 176
        case .q6_K: 210  // 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 scales, f16 d
        case .q8_K: 292
        }
    }

    /// Whether this project can dequantize and multiply with tensors of this type.
    public var hasKernels: Bool {
        switch self {
        case .f32, .f16, .bf16, .q4_0, .q5_0, .q8_0, .q4_K, .q6_K: true
        default: false
        }
    }

    /// Whether quantizers exist for this type (float32 → blocks).
    public var canQuantize: Bool { hasKernels }

    /// Bytes of `elements` values, or nil when `elements` is not a whole number of blocks.
    public func byteCount(elements: Int) -> Int? {
        guard elements >= 0, elements % blockSize == 0 else { return nil }
        let (bytes, overflow) = (elements / blockSize).multipliedReportingOverflow(by: bytesPerBlock)
        return overflow ? nil : bytes
    }

    /// Average bits per weight (e.g. 8.5 for Q8_0, 4.5 for Q4_K).
    public var bitsPerWeight: Double { Double(bytesPerBlock * 8) / Double(blockSize) }
}

/// Fast IEEE-half conversions used inside the block kernels (no F16C instruction is assumed:
/// the default x86-64 target has none, and Swift's `Float16` conversions become library calls).
public enum Half {
    /// Half bits → float32, exact for every value (normals, subnormals, ±0, ±inf, NaN).
    ///
    /// Moving the 15 magnitude bits into float position gives the value scaled by 2⁻¹¹², which a
    /// multiply by 2¹¹² undoes exactly (subnormal halves become subnormal floats first; still exact).
    @inlinable @inline(__always)
    public static func toFloat(_ h: UInt16) -> Float {
        let magnitude = UInt32(h & 0x7fff) << 13
        var f = Float(bitPattern: magnitude) * 0x1p112
        if magnitude >= 0x0f80_0000 { f = Float(bitPattern: magnitude | 0x7f80_0000) }  // inf / NaN
        return Float(bitPattern: f.bitPattern | (UInt32(h & 0x8000) << 16))
    }

    /// Half bits → float32 for finite values (inf/NaN come out as large finite numbers): the scale
    /// of every block in the dot-product kernels, where the branch of `toFloat` costs time.
    @inlinable @inline(__always)
    public static func toFloatFinite(_ h: UInt16) -> Float {
        let f = Float(bitPattern: UInt32(h & 0x7fff) << 13) * 0x1p112
        return Float(bitPattern: f.bitPattern | (UInt32(h & 0x8000) << 16))
    }

    /// float32 → half bits with round-to-nearest-even (overflow gives ±inf), as ggml stores scales.
    @inlinable
    public static func fromFloat(_ f: Float) -> UInt16 {
        let u = f.bitPattern
        let sign = UInt16(truncatingIfNeeded: (u >> 16) & 0x8000)
        let exponent = Int((u >> 23) & 0xff)
        let mantissa = u & 0x7f_ffff
        if exponent == 0xff { return sign | 0x7c00 | (mantissa != 0 ? 0x200 : 0) }
        let e = exponent - 127 + 15
        if e >= 31 { return sign | 0x7c00 }
        if e <= 0 {
            // Subnormal half (or zero): shift the full significand, rounding to nearest even.
            if e < -10 { return sign }
            let significand = mantissa | 0x80_0000
            let shift = UInt32(14 - e)
            var half = significand >> shift
            let remainder = significand & ((1 << shift) - 1)
            let halfway = UInt32(1) << (shift - 1)
            if remainder > halfway || (remainder == halfway && (half & 1) == 1) { half += 1 }
            return sign | UInt16(truncatingIfNeeded: half)
        }
        var half = UInt32(e) << 10 | (mantissa >> 13)
        let remainder = mantissa & 0x1fff
        if remainder > 0x1000 || (remainder == 0x1000 && (half & 1) == 1) { half += 1 }  // may carry into inf: correct
        return sign | UInt16(truncatingIfNeeded: half)
    }

    /// Eight half values at `p + byteOffset`, widened to float32 (finite values exact; inf/NaN
    /// lanes are fixed up with a compare and select).
    @inlinable @inline(__always)
    public static func widen8(_ p: UnsafeRawPointer, _ byteOffset: Int) -> SIMD8<Float> {
        let h = SIMD8<UInt32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: byteOffset, as: SIMD8<UInt16>.self))
        let magnitude = (h & 0x7fff) &<< 13
        var f = unsafeBitCast(magnitude, to: SIMD8<Float>.self) * 0x1p112
        let special = magnitude .>= 0x0f80_0000
        if any(special) {
            f.replace(with: unsafeBitCast(magnitude | 0x7f80_0000, to: SIMD8<Float>.self), where: special)
        }
        return unsafeBitCast(unsafeBitCast(f, to: SIMD8<UInt32>.self) | ((h & 0x8000) &<< 16), to: SIMD8<Float>.self)
    }
}
