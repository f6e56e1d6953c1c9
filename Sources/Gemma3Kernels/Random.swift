/// A small, fast, seedable generator (SplitMix64). Deterministic across platforms, so a seed
/// names the same initial weights or batch order everywhere.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    @inlinable
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    @inlinable
    public mutating func nextUniform() -> Double {
        Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Two independent standard normal samples (Box–Muller).
    @inlinable
    public mutating func nextNormalPair() -> (Double, Double) {
        var u1 = nextUniform()
        while u1 <= 0 { u1 = nextUniform() }
        let u2 = nextUniform()
        let r = (-2.0 * _log(u1)).squareRoot()
        let theta = 2.0 * Double.pi * u2
        return (r * _cos(theta), r * _sin(theta))
    }

    /// Fills `buffer` with N(0, std²) samples.
    @inlinable
    public mutating func fillNormal(_ buffer: UnsafeMutableBufferPointer<Float>, std: Double) {
        var i = 0
        while i < buffer.count {
            let (a, b) = nextNormalPair()
            buffer[i] = Float(a * std)
            if i + 1 < buffer.count { buffer[i + 1] = Float(b * std) }
            i += 2
        }
    }
}

// libm through the C library, avoiding a Foundation dependency in inlinable code.
#if canImport(Glibc)
import Glibc
@usableFromInline func _log(_ x: Double) -> Double { Glibc.log(x) }
@usableFromInline func _cos(_ x: Double) -> Double { Glibc.cos(x) }
@usableFromInline func _sin(_ x: Double) -> Double { Glibc.sin(x) }
#else
import Darwin
@usableFromInline func _log(_ x: Double) -> Double { Darwin.log(x) }
@usableFromInline func _cos(_ x: Double) -> Double { Darwin.cos(x) }
@usableFromInline func _sin(_ x: Double) -> Double { Darwin.sin(x) }
#endif
