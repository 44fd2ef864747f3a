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

    /// output (planes, outH, outW) = max over each window; argmax keeps the winning index within the input plane.
    public func forward(input: UnsafePointer<Float>, planes: Int, output: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
        let inPlane = inputHeight * inputWidth, outH = outputHeight, outW = outputWidth
        Parallel.forEachChunk(planes, minimumPerThread: 4, threads: threads) { range in
            for pl in range {
                let src = input + pl * inPlane
                var dst = output + pl * outH * outW, idx = argmax + pl * outH * outW
                for oh in 0..<outH {
                    for ow in 0..<outW {
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
