// The paper's cross-channel local response normalisation, b[c] = a[c] / (k + α·Σ a[j]²)^β, window inside a tower.
import Foundation

public struct LocalResponseNorm: Sendable {
    public var size = 5
    public var alpha: Float = 1e-4      // multiplies the plain sum (not divided by size)
    public var beta: Float = 0.75
    public var k: Float = 2
    public var threads = 1              // threads the loops may use (the caller's share of the cores)

    public init(size: Int = 5, alpha: Float = 1e-4, beta: Float = 0.75, k: Float = 2, threads: Int = 1) {
        self.size = size; self.alpha = alpha; self.beta = beta; self.k = k; self.threads = threads
    }

    /// Pixels processed together: a block of every channel of the group stays in L1/L2.
    static let block = 512

    /// input, scale and output are (channels, pixels): `pixels` = N·H·W for a channel-major map.
    /// Channels form groups of `groupChannels` (one tower each); the window never leaves its group.
    public func forward(input a: UnsafePointer<Float>, channels: Int, groupChannels: Int, pixels: Int,
                        scale: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>) {
        let half = size / 2, blocks = (pixels + Self.block - 1) / Self.block
        Parallel.forEachChunk(blocks * (channels / groupChannels), threads: threads) { range in
            for item in range {
                let group = item / blocks, q0 = (item % blocks) * Self.block, q1 = min(pixels, q0 + Self.block)
                let c0 = group * groupChannels
                for c in c0..<(c0 + groupChannels) {
                    let lo = max(c0, c - half), hi = min(c0 + groupChannels - 1, c + half)
                    let s = scale + c * pixels, y = output + c * pixels, x = a + c * pixels
                    for q in q0..<q1 { s[q] = 0 }
                    for j in lo...hi {
                        let xj = a + j * pixels
                        for q in q0..<q1 { s[q] += xj[q] * xj[q] }
                    }
                    if beta == 0.75 {
                        for q in q0..<q1 {
                            let sq = k + alpha * s[q], r = sq.squareRoot()
                            s[q] = sq
                            y[q] = x[q] / (r * r.squareRoot())
                        }
                    } else {
                        for q in q0..<q1 {
                            let sq = k + alpha * s[q]
                            s[q] = sq
                            y[q] = x[q] * powf(sq, -beta)
                        }
                    }
                }
            }
        }
    }

    /// da[j] = dy[j]·s[j]^−β − 2αβ·a[j]·Σ_{i: |i−j| ≤ n/2} dy[i]·y[i]/s[i]  (input gradient overwritten).
    /// `throughReLU`: the input a is a ReLU's output, so da is also multiplied by (a > 0) — ReLU.backward fused in.
    public func backward(input a: UnsafePointer<Float>, scale: UnsafePointer<Float>, output y: UnsafePointer<Float>,
                         outputGradient dy: UnsafePointer<Float>, channels: Int, groupChannels: Int, pixels: Int,
                         inputGradient da: UnsafeMutablePointer<Float>, throughReLU: Bool = false) {
        let half = size / 2, blocks = (pixels + Self.block - 1) / Self.block
        let factor = 2 * alpha * beta
        Parallel.forEachChunk(blocks * (channels / groupChannels), threads: threads) { range in
            let ratio = UnsafeMutablePointer<Float>.allocate(capacity: groupChannels * Self.block)
            defer { ratio.deallocate() }
            for item in range {
                let group = item / blocks, q0 = (item % blocks) * Self.block, q1 = min(pixels, q0 + Self.block)
                let c0 = group * groupChannels, width = q1 - q0
                for c in 0..<groupChannels {
                    let o = (c0 + c) * pixels + q0, r = ratio + c * Self.block
                    for q in 0..<width { r[q] = dy[o + q] * y[o + q] / scale[o + q] }
                }
                for c in 0..<groupChannels {
                    let lo = max(0, c - half), hi = min(groupChannels - 1, c + half)
                    let o = (c0 + c) * pixels + q0
                    let g = da + o
                    for q in 0..<width { g[q] = 0 }
                    for i in lo...hi {
                        let r = ratio + i * Self.block
                        for q in 0..<width { g[q] += r[q] }
                    }
                    // dy·s^−β − 2αβ·a·Σ, then the ReLU mask: branch-free so that it vectorises.
                    let mask: Float = throughReLU ? 0 : -Float.infinity
                    if beta == 0.75 {
                        for q in 0..<width {
                            let sq = scale[o + q], r = sq.squareRoot()
                            let v = dy[o + q] / (r * r.squareRoot()) - factor * a[o + q] * g[q]
                            g[q] = a[o + q] > mask ? v : 0
                        }
                    } else {
                        for q in 0..<width {
                            let v = dy[o + q] * powf(scale[o + q], -beta) - factor * a[o + q] * g[q]
                            g[q] = a[o + q] > mask ? v : 0
                        }
                    }
                }
            }
        }
    }
}
