// Inverted dropout on feature-major activations (features, N): kept units are scaled by 1/(1−p) in training.
//
// The mask is a pure function of (seed, step, layer, global sample, global unit), so a tower that owns
// units [first, first + rows) draws exactly the bits the whole network would draw for them.

public struct Dropout: Sendable {
    public var probability: Float
    public init(probability: Float) { self.probability = probability }

    /// Fills mask (rows, N) with 0 or 1/(1−p).
    public func makeMask(rows: Int, batch: Int, firstUnit: Int, firstSample: Int,
                         seed: UInt64, step: Int, layer: Int, mask: UnsafeMutablePointer<Float>, threads: Int = 1) {
        let keep = 1 / (1 - probability), p = probability
        Parallel.forEachChunk(rows, minimumPerThread: 64, threads: threads) { range in
            for r in range {
                let unit = UInt64(firstUnit + r)
                for n in 0..<batch {
                    let u = CounterRandom.uniform(seed: seed, .dropout, UInt64(step) << 8 | UInt64(layer),
                                                  UInt64(firstSample + n), unit)
                    mask[r * batch + n] = u < p ? 0 : keep
                }
            }
        }
    }

    /// x *= mask (forward) — the same product serves backward on the gradient.
    public static func apply(mask: UnsafePointer<Float>, to x: UnsafeMutablePointer<Float>, count: Int, threads: Int = 1) {
        Parallel.forEachChunk(count, minimumPerThread: 1 << 16, threads: threads) { r in
            for i in r { x[i] *= mask[i] }
        }
    }
}
