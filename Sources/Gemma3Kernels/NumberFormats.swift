/// Conversions between float32 and the 16-bit storage formats (IEEE half, bfloat16).
public enum NumberFormats {
    /// bfloat16 bits → float32 (exact).
    @inlinable public static func bf16ToFloat(_ b: UInt16) -> Float {
        Float(bitPattern: UInt32(b) << 16)
    }

    /// float32 → bfloat16 bits, round-to-nearest-even (NaN stays NaN).
    @inlinable public static func floatToBF16(_ f: Float) -> UInt16 {
        let u = f.bitPattern
        if f.isNaN { return UInt16(truncatingIfNeeded: (u >> 16) | 0x40) }
        let rounding = UInt32(0x7FFF) + ((u >> 16) & 1)
        return UInt16(truncatingIfNeeded: (u &+ rounding) >> 16)
    }

    /// IEEE half bits → float32 (exact, including subnormals, inf and NaN).
    @inlinable public static func f16ToFloat(_ h: UInt16) -> Float {
        Float(Float16(bitPattern: h))
    }

    /// float32 → IEEE half bits, round-to-nearest-even.
    @inlinable public static func floatToF16(_ f: Float) -> UInt16 {
        Float16(f).bitPattern
    }
}
