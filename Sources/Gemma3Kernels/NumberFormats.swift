import CGemma3Kernels

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

/// The precision of the inputs of the training products (the matrix products of the forward and the
/// backward pass), as PyTorch's CPU autocast defines mixed precision.
public enum ProductPrecision: String, Sendable, CaseIterable {
    /// float32 inputs, float32 arithmetic.
    case float32
    /// bfloat16 inputs (round-to-nearest-even), float32 accumulation and float32 results: what
    /// `torch.autocast("cpu", dtype=torch.bfloat16)` does for `linear`/`matmul`. Every other
    /// operation, the master weights and the gradients stay float32.
    case bfloat16
}

extension NumberFormats {
    /// Rounds `count` floats in place to the nearest bfloat16 value (ties to even; NaN stays NaN,
    /// ±inf stays), kept as float32. A product of such values is exact in float32, so a float32
    /// product of rounded inputs is the bfloat16-input, float32-accumulate product.
    public static func roundToBFloat16(_ x: UnsafeMutablePointer<Float>, count: Int) {
        gemma3_round_to_bf16(x, x, count)
    }

    /// `dst[i]` = `src[i]` rounded as `roundToBFloat16`.
    public static func roundToBFloat16(from src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int) {
        gemma3_round_to_bf16(src, dst, count)
    }

    /// `dst[i]` = the bfloat16 bits of `src[i]` rounded as `roundToBFloat16`.
    public static func convertToBFloat16(from src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<UInt16>, count: Int) {
        gemma3_to_bf16(src, dst, count)
    }

    /// Rounds `rows` rows of `columns` floats, `stride` apart, in place to bfloat16 values.
    public static func roundToBFloat16(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int, stride: Int) {
        if stride == columns { roundToBFloat16(x, count: rows * columns); return }
        for r in 0..<rows { roundToBFloat16(x + r * stride, count: columns) }
    }
}

extension ProductPrecision {
    /// How this CPU computes bfloat16 training products, in one line (training says it once).
    ///
    /// Where bfloat16 dot products outrun the float32 FMA (`BFloat16Products.pay`: AVX-512 BF16 on AMD
    /// Zen 4/5, ≈ 1.8× the FLOP rate on Zen 5; AMX), the projection and LM-head products run natively in
    /// bfloat16 through oneDNN. Elsewhere every product is a float32 product of bfloat16-rounded inputs —
    /// the same values as bfloat16 hardware with float32 accumulation. On the Intel Xeon of this
    /// project's machines `vdpbf16ps` retires half as many instructions per cycle as a float32 FMA of the
    /// same width (3.6 vs 7.3 G/s on one core), so it reaches the same FLOP rate, and oneDNN's bfloat16
    /// matmul ran at 55–65 % of its sgemm on the training shapes: emulation is the faster there.
    public static var bfloat16ExecutionNote: String {
        if RuntimeSettings.current.resolvedNativeBFloat16Products {
            return "bf16: projection and LM-head products run natively in bfloat16 (oneDNN \(MatrixProductBackend.oneDNNInstructionSet)); "
                + "attention products on bfloat16-rounded inputs with float32 FMA"
        }
        if PrefillPrecision.bfloat16Supported {
            return "bf16: products run on bfloat16-rounded inputs with float32 FMA (emulated): this CPU's AVX-512 BF16 "
                + "dot products reach the same FLOP rate as its float32 FMA, so they are not faster"
        }
        return "bf16: products run emulated on this CPU (no bfloat16 instructions): bfloat16-rounded inputs, float32 arithmetic"
    }
}
