// im2col and col2im for channel-major feature maps, so that a convolution becomes one sgemm.
//
// A feature map buffer is addressed by (channel, image, row, column) with the row-major H × W plane
// contiguous, a `channelStride` between channels and an `imageStride` between images:
// channel-major (C, N, H, W) maps have imageStride = H·W, channelStride = N·H·W.

/// The shape arithmetic of one 2-D convolution (square kernel, equal stride and padding on both axes).
public struct ConvGeometry: Sendable, Equatable {
    public var inputHeight: Int, inputWidth: Int
    public var kernel: Int, stride: Int, pad: Int

    public init(inputHeight: Int, inputWidth: Int, kernel: Int, stride: Int, pad: Int) {
        self.inputHeight = inputHeight; self.inputWidth = inputWidth
        self.kernel = kernel; self.stride = stride; self.pad = pad
    }
    public var outputHeight: Int { (inputHeight + 2 * pad - kernel) / stride + 1 }
    public var outputWidth: Int { (inputWidth + 2 * pad - kernel) / stride + 1 }
    public var outputPlane: Int { outputHeight * outputWidth }
    public var inputPlane: Int { inputHeight * inputWidth }

    /// The output columns ow whose input column ow·stride − pad + j lies inside the image.
    @inline(__always)
    func validColumns(_ j: Int) -> Range<Int> {
        let first = max(0, (pad - j + stride - 1) / stride)
        let last = min(outputWidth, (inputWidth - 1 + pad - j) / stride + 1)
        return first..<max(first, last)
    }
}

public enum Im2col {
    /// Writes col (channels·k·k, images.count · outH·outW): row (c, i, j), column (image, oh, ow).
    public static func forward(
        input: UnsafePointer<Float>, channelStride: Int, imageStride: Int, channels: Int,
        images: Range<Int>, geometry g: ConvGeometry, col: UnsafeMutablePointer<Float>, threads: Int = 1
    ) {
        let k = g.kernel, rows = channels * k * k
        let outH = g.outputHeight, outW = g.outputWidth, plane = g.outputPlane
        let rowLength = images.count * plane
        let s = g.stride, p = g.pad, inH = g.inputHeight, inW = g.inputWidth
        Parallel.forEachChunk(rows, minimumPerThread: 8, threads: threads) { rowRange in
            for r in rowRange {
                let c = r / (k * k), i = (r / k) % k, j = r % k
                let valid = g.validColumns(j)
                var dst = col + r * rowLength
                for n in images {
                    let base = input + c * channelStride + n * imageStride
                    for oh in 0..<outH {
                        let ih = oh * s - p + i
                        if ih < 0 || ih >= inH {
                            dst.update(repeating: 0, count: outW)
                        } else {
                            let src = base + ih * inW - p + j
                            for ow in 0..<valid.lowerBound { dst[ow] = 0 }
                            if s == 1 {
                                (dst + valid.lowerBound).update(from: src + valid.lowerBound, count: valid.count)
                            } else {
                                for ow in valid { dst[ow] = src[ow * s] }
                            }
                            for ow in valid.upperBound..<outW { dst[ow] = 0 }
                        }
                        dst += outW
                    }
                }
            }
        }
    }

    /// Adds col (laid out as `forward` writes it) back into the input-shaped gradient.
    public static func backward(
        col: UnsafePointer<Float>, channelStride: Int, imageStride: Int, channels: Int,
        images: Range<Int>, geometry g: ConvGeometry, inputGradient: UnsafeMutablePointer<Float>, threads: Int = 1
    ) {
        let k = g.kernel
        let outH = g.outputHeight, outW = g.outputWidth, plane = g.outputPlane
        let rowLength = images.count * plane
        let s = g.stride, p = g.pad, inH = g.inputHeight, inW = g.inputWidth
        // Parallel over channels: the rows of one channel touch only that channel's planes.
        Parallel.forEachChunk(channels, threads: threads) { channelRange in
            for c in channelRange {
                for i in 0..<k {
                    for j in 0..<k {
                        let r = (c * k + i) * k + j
                        let valid = g.validColumns(j)
                        var src = col + r * rowLength
                        for n in images {
                            let base = inputGradient + c * channelStride + n * imageStride
                            for oh in 0..<outH {
                                let ih = oh * s - p + i
                                if ih >= 0 && ih < inH {
                                    let dst = base + ih * inW - p + j
                                    if s == 1 {
                                        for ow in valid { dst[ow] += src[ow] }
                                    } else {
                                        for ow in valid { dst[ow * s] += src[ow] }
                                    }
                                }
                                src += outW
                            }
                        }
                    }
                }
            }
        }
    }
}
