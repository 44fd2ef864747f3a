// Counter-based randomness: every random number is a pure function of (seed, stream, a, b, c),
// so dropout masks, crops, flips, colour noise and shuffles are the same in every parallel layout and on resume.
import Foundation

public enum RandomStream: UInt64, Sendable {
    case initialisation = 1, dropout, shuffle, crop, flip, colour, embeddedImage
}

public enum CounterRandom {
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {   // splitmix64's finaliser
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @inline(__always)
    public static func bits(seed: UInt64, _ stream: RandomStream, _ a: UInt64, _ b: UInt64 = 0, _ c: UInt64 = 0) -> UInt64 {
        mix(mix(mix(mix(seed ^ (stream.rawValue &* 0xD6E8_FEB8_6659_FD93)) ^ a) ^ b) ^ c)
    }

    /// Uniform in [0, 1) with 24 random bits (exactly representable as Float).
    @inline(__always)
    public static func uniform(seed: UInt64, _ stream: RandomStream, _ a: UInt64, _ b: UInt64 = 0, _ c: UInt64 = 0) -> Float {
        Float(bits(seed: seed, stream, a, b, c) >> 40) * (1.0 / 16_777_216.0)
    }

    /// Standard normal by Box–Muller from one 64-bit draw.
    @inline(__always)
    public static func normal(seed: UInt64, _ stream: RandomStream, _ a: UInt64, _ b: UInt64 = 0, _ c: UInt64 = 0) -> Float {
        let r = bits(seed: seed, stream, a, b, c)
        let u1 = (Double(r >> 32) + 1) / 4_294_967_297.0   // (0, 1)
        let u2 = Double(r & 0xFFFF_FFFF) / 4_294_967_296.0
        return Float((-2 * Foundation.log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// The permutation of 0..<count for one epoch (Fisher–Yates driven by the counter generator).
    public static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var p = Array(0..<count)
        if count < 2 { return p }
        for i in stride(from: count - 1, to: 0, by: -1) {
            let j = Int(bits(seed: seed, .shuffle, UInt64(epoch), UInt64(i)) % UInt64(i + 1))
            p.swapAt(i, j)
        }
        return p
    }
}
