// Overlapping max-pooling (3 × 3, stride 2, no padding in the paper) over contiguous H × W planes.

public struct MaxPool: Sendable {
    public let size: Int, stride: Int
    public let inputHeight: Int, inputWidth: Int
    public let threads: Int             // threads the loops may use (the caller's share of the cores)

    public init(size: Int = 3, stride: Int = 2, inputHeight: Int, inputWidth: Int, threads: Int = 1) {
        self.size = size; self.stride = stride; self.inputHeight = inputHeight; self.inputWidth = inputWidth
        self.threads = threads
    }
    public var outputHeight: Int { (inputHeight - size) / stride + 1 }
    public var outputWidth: Int { (inputWidth - size) / stride + 1 }

    /// output (planes, outH, outW) = max over each window; argmax keeps the winning index within the input plane
    /// (the first maximum in row-major window order, as PyTorch picks it).
    public func forward(input: UnsafePointer<Float>, planes: Int, output: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
        let inPlane = inputHeight * inputWidth, outPlane = outputHeight * outputWidth
        let paperWindow = size == 3 && stride == 2 && outputWidth >= Self.lanes
        Parallel.forEachChunk(planes, minimumPerThread: 4, threads: threads) { range in
            if paperWindow {
                for pl in range {
                    forwardThreeByTwo(input + pl * inPlane, output: output + pl * outPlane, argmax: argmax + pl * outPlane)
                }
            } else {
                for pl in range {
                    forwardAnyWindow(input + pl * inPlane, output: output + pl * outPlane, argmax: argmax + pl * outPlane)
                }
            }
        }
    }

    static let lanes = 8

    /// The paper's 3 × 3 stride-2 window, eight output columns at a time. Candidates are compared in the same order
    /// as `forwardAnyWindow` with the same strict `>`, so values and winners are identical. Each window row's three
    /// columns 2·ow + j come from two sixteen-float loads at 2·ow and 2·ow + 1, dealt into even and odd lanes (they
    /// end at 2·ow + 16 ≤ 2·outW ≤ W − 1: never past the row). A scalar pass splitting the plane into even and odd
    /// columns first took as long as the windows.
    @inline(__always)
    private func forwardThreeByTwo(_ src: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
        typealias Values = SIMD8<Float>
        typealias Indices = SIMD8<Int32>
        let inW = inputWidth, outW = outputWidth
        let lane = Indices(0, 2, 4, 6, 8, 10, 12, 14)   // 2·(ow − first) of each lane
        for oh in 0..<outputHeight {
            var first = 0
            while first < outW {
                let ow = min(first, outW - Self.lanes)   // the last block may overlap the one before: same results
                var best = Values(), winner = Indices()
                for i in 0..<3 {
                    let h = 2 * oh + i
                    let row = src + h * inW + 2 * ow
                    let base = Indices(repeating: Int32(h * inW + 2 * ow)) &+ lane
                    // Columns 2·ow + 2l, 2·ow + 2l + 1, 2·ow + 2l + 2 of input row h in lane l.
                    let atEven = UnsafeRawPointer(row).loadUnaligned(as: SIMD16<Float>.self)
                    let atOdd = UnsafeRawPointer(row + 1).loadUnaligned(as: SIMD16<Float>.self)
                    let v0 = atEven.evenHalf, v1 = atOdd.evenHalf, v2 = atOdd.oddHalf
                    if i == 0 {
                        best = v0; winner = base
                    } else {
                        let better = v0 .> best
                        best.replace(with: v0, where: better); winner.replace(with: base, where: better)
                    }
                    let better1 = v1 .> best
                    best.replace(with: v1, where: better1); winner.replace(with: base &+ 1, where: better1)
                    let better2 = v2 .> best
                    best.replace(with: v2, where: better2); winner.replace(with: base &+ 2, where: better2)
                }
                UnsafeMutableRawPointer(output + oh * outW + ow).storeBytes(of: best, as: Values.self)
                UnsafeMutableRawPointer(argmax + oh * outW + ow).storeBytes(of: winner, as: Indices.self)
                first += Self.lanes
            }
        }
    }

    private func forwardAnyWindow(_ src: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
        var dst = output, idx = argmax
        for oh in 0..<outputHeight {
            for ow in 0..<outputWidth {
                var best = oh * stride * inputWidth + ow * stride
                var value = src[best]
                for i in 0..<size {
                    let row = (oh * stride + i) * inputWidth + ow * stride
                    for j in 0..<size where src[row + j] > value {
                        value = src[row + j]; best = row + j
                    }
                }
                dst.pointee = value; idx.pointee = Int32(best)
                dst += 1; idx += 1
            }
        }
    }

    /// inputGradient (overwritten) receives each output gradient at its window's winner. With `reluInput`
    /// (the pool's input is a ReLU's output) winners that are not positive get nothing: ReLU.backward fused in.
    public func backward(outputGradient: UnsafePointer<Float>, argmax: UnsafePointer<Int32>, planes: Int,
                         inputGradient: UnsafeMutablePointer<Float>, reluInput: UnsafePointer<Float>? = nil) {
        let inPlane = inputHeight * inputWidth, outPlane = outputHeight * outputWidth
        Parallel.forEachChunk(planes, minimumPerThread: 4, threads: threads) { range in
            for pl in range {
                let dst = inputGradient + pl * inPlane
                dst.update(repeating: 0, count: inPlane)
                let g = outputGradient + pl * outPlane, idx = argmax + pl * outPlane
                if let a = reluInput {
                    let x = a + pl * inPlane
                    for o in 0..<outPlane where x[Int(idx[o])] > 0 { dst[Int(idx[o])] += g[o] }
                } else {
                    for o in 0..<outPlane { dst[Int(idx[o])] += g[o] }
                }
            }
        }
    }
}
