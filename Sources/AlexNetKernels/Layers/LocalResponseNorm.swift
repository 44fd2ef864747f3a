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

    /// Pixels processed together. Both passes walk the channels of a group once per block with the window's rows of the
    /// block in cache (backward: about 20 rows of 4 KB, in L2), so that each channel's row comes from memory once, in
    /// page-long runs the prefetcher follows (256 pixels was 1.5× slower, 2048 no faster). Both passes are bound by
    /// memory more than arithmetic: the normaliser s = k + α·Σ a² is not stored but recomputed from a in backward,
    /// which reads a anyway (forward writes one map instead of two, backward reads two instead of four).
    static let block = 1024

    /// input and output are (channels, pixels): `pixels` = N·H·W for a channel-major map.
    /// Channels form groups of `groupChannels` (one tower each); the window never leaves its group.
    /// The output must not overlap the input.
    public func forward(input a: UnsafePointer<Float>, channels: Int, groupChannels: Int, pixels: Int,
                        output: UnsafeMutablePointer<Float>) {
        let half = size / 2, span = 2 * half + 1, block = Self.block, blocks = (pixels + block - 1) / block
        let (k, alpha, beta) = (k, alpha, beta)
        Parallel.forEachChunk(blocks * (channels / groupChannels), threads: threads) { range in
            let scratch = Scratch(rows: 1, span: span)
            defer { scratch.deallocate() }
            var window = scratch.window
            for item in range {
                let group = item / blocks, q0 = (item % blocks) * block, width = min(pixels, q0 + block) - q0
                let first = a + group * groupChannels * pixels + q0
                for c in 0..<groupChannels {
                    scratch.fill(&window, first: first, stride: pixels, centre: c, half: half, count: groupChannels)
                    let y = output + (group * groupChannels + c) * pixels + q0
                    if span == 5 && beta == 0.75 {
                        // The paper's setting in one pass (x is r2); s^0.75 = √s·√√s.
                        let (r0, r1, r2, r3, r4) = (window[0], window[1], window[2], window[3], window[4])
                        for q in 0..<width {
                            let s = k + alpha * (r0[q] * r0[q] + r1[q] * r1[q] + r2[q] * r2[q] + r3[q] * r3[q] + r4[q] * r4[q])
                            let r = s.squareRoot()
                            y[q] = r2[q] / (r * r.squareRoot())
                        }
                    } else {
                        let sum = scratch.rows, x = window[half]
                        Self.sumOfSquares(window, width: width, into: sum)
                        for q in 0..<width { y[q] = x[q] * powf(k + alpha * sum[q], -beta) }
                    }
                }
            }
        }
    }

    /// da[j] = dy[j]·s[j]^−β − 2αβ·a[j]·Σ_{i: |i−j| ≤ n/2} dy[i]·y[i]/s[i], with s and y = a·s^−β recomputed from a
    /// (forward keeps neither). da (overwritten) may be the same buffer as dy: a channel's dy is read, and its terms kept
    /// in a per-block ring, before any da it feeds is written.
    /// `throughReLU`: the input a is a ReLU's output, so da is also multiplied by (a > 0) — ReLU.backward fused in.
    public func backward(input a: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>,
                         channels: Int, groupChannels: Int, pixels: Int,
                         inputGradient da: UnsafeMutablePointer<Float>, throughReLU: Bool = false) {
        let half = size / 2, span = 2 * half + 1, block = Self.block, blocks = (pixels + block - 1) / block
        let (k, alpha, beta, factor) = (k, alpha, beta, 2 * alpha * beta)
        let mask: Float = throughReLU ? 0 : -Float.infinity     // a > mask: branch-free, so that it vectorises
        Parallel.forEachChunk(blocks * (channels / groupChannels), threads: threads) { range in
            // Rings of `span` rows, channel j in row j mod span: dy·y/s (the window's summands) and dy·s^−β (the first
            // term), both computed when channel j enters the window; then a row for a window sum.
            let scratch = Scratch(rows: 2 * span + 1, span: span)
            defer { scratch.deallocate() }
            let ratios = scratch.rows, terms = ratios + span * block, sum = terms + span * block
            var inputs = scratch.window, summands = scratch.window
            for item in range {
                let group = item / blocks, q0 = (item % blocks) * block, width = min(pixels, q0 + block) - q0
                let first = a + group * groupChannels * pixels + q0
                // Channel j enters: its dy is read here, before the da of channels j − half … j is written.
                func enter(_ j: Int) {
                    scratch.fill(&inputs, first: first, stride: pixels, centre: j, half: half, count: groupChannels)
                    let g = dy + (group * groupChannels + j) * pixels + q0
                    let ratio = ratios + (j % span) * block, term = terms + (j % span) * block
                    if span == 5 && beta == 0.75 {
                        let (r0, r1, r2, r3, r4) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4])
                        for q in 0..<width {
                            // u = s^−1.75 with one division: y/s = a·u, s^−β = s·u.
                            let s = k + alpha * (r0[q] * r0[q] + r1[q] * r1[q] + r2[q] * r2[q] + r3[q] * r3[q] + r4[q] * r4[q])
                            let r = s.squareRoot(), u = 1 / (s * r * r.squareRoot())
                            ratio[q] = g[q] * r2[q] * u
                            term[q] = g[q] * (s * u)
                        }
                    } else {
                        let x = inputs[half]
                        Self.sumOfSquares(inputs, width: width, into: sum)
                        for q in 0..<width {
                            let s = k + alpha * sum[q], p = powf(s, -beta)
                            ratio[q] = g[q] * x[q] * p / s
                            term[q] = g[q] * p
                        }
                    }
                }
                for j in 0..<min(half, groupChannels) { enter(j) }
                for c in 0..<groupChannels {
                    if c + half < groupChannels { enter(c + half) }
                    scratch.fill(&summands, first: UnsafePointer(ratios), stride: block, centre: c, half: half,
                                 count: groupChannels, ring: span)
                    let o = (group * groupChannels + c) * pixels + q0, x = a + o, g = da + o
                    let term = terms + (c % span) * block
                    if span == 5 {
                        let (r0, r1, r2, r3, r4) = (summands[0], summands[1], summands[2], summands[3], summands[4])
                        for q in 0..<width {
                            let v = term[q] - factor * x[q] * (r0[q] + r1[q] + r2[q] + r3[q] + r4[q])
                            g[q] = x[q] > mask ? v : 0
                        }
                    } else {
                        let r0 = summands[0]
                        for q in 0..<width { sum[q] = r0[q] }
                        for i in 1..<span {
                            let r = summands[i]
                            for q in 0..<width { sum[q] += r[q] }
                        }
                        for q in 0..<width {
                            let v = term[q] - factor * x[q] * sum[q]
                            g[q] = x[q] > mask ? v : 0
                        }
                    }
                }
            }
        }
    }

    /// sum = Σ r² over the window's rows, added in channel order (the zero rows add exactly nothing).
    static func sumOfSquares(_ window: [UnsafePointer<Float>], width: Int, into sum: UnsafeMutablePointer<Float>) {
        let r0 = window[0]
        for q in 0..<width { sum[q] = r0[q] * r0[q] }
        for i in 1..<window.count {
            let r = window[i]
            for q in 0..<width { sum[q] += r[q] * r[q] }
        }
    }

    /// A thread's scratch: `rows` rows of a block, a row of zeros that stands for the window's channels outside the
    /// group, and the window's row pointers.
    struct Scratch {
        let rows: UnsafeMutablePointer<Float>, zeros: UnsafePointer<Float>
        let window: [UnsafePointer<Float>]

        init(rows count: Int, span: Int) {
            rows = .allocate(capacity: (count + 1) * LocalResponseNorm.block)
            let zeros = rows + count * LocalResponseNorm.block
            zeros.initialize(repeating: 0, count: LocalResponseNorm.block)
            self.zeros = UnsafePointer(zeros)
            window = Array(repeating: self.zeros, count: span)
        }
        func deallocate() { rows.deallocate() }

        /// window[i] = the row of channel centre − half + i: first + channel·stride (channel mod `ring` when the rows
        /// are a ring), or the zero row when that channel is outside 0..<count.
        func fill(_ window: inout [UnsafePointer<Float>], first: UnsafePointer<Float>, stride: Int, centre: Int,
                  half: Int, count: Int, ring: Int = .max) {
            for i in 0..<window.count {
                let j = centre - half + i
                window[i] = j >= 0 && j < count ? first + (j % ring) * stride : zeros
            }
        }
    }
}
