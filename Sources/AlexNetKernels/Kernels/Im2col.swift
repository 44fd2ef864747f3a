// im2col and col2im for channel-major feature maps, so that a convolution becomes one sgemm, a chunk of output rows
// at a time (small enough for the column buffer to stay in cache).
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
    /// Writes col (channels·k·k, rows.count·outW): row (c, i, j), column (output row u, ow), for the output rows
    /// u = n·outH + oh in `rows` (a chunk may start and end inside an image). Written row by row, sequentially.
    public static func forward(
        input: UnsafePointer<Float>, channelStride: Int, imageStride: Int, channels: Int,
        rows: Range<Int>, geometry g: ConvGeometry, col: UnsafeMutablePointer<Float>, threads: Int = 1
    ) {
        let k = g.kernel, patch = channels * k * k
        let outH = g.outputHeight, outW = g.outputWidth
        let rowLength = rows.count * outW
        let s = g.stride, p = g.pad, inH = g.inputHeight, inW = g.inputWidth
        Parallel.forEachChunk(patch, minimumPerThread: 8, threads: threads) { patchRows in
            for r in patchRows {
                let c = r / (k * k), i = (r / k) % k, j = r % k
                let valid = g.validColumns(j)
                var dst = col + r * rowLength
                for u in rows {
                    let n = u / outH, oh = u % outH
                    let ih = oh * s - p + i
                    if ih < 0 || ih >= inH {
                        dst.update(repeating: 0, count: outW)
                    } else {
                        let src = input + c * channelStride + n * imageStride + ih * inW - p + j
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

    /// Adds col (laid out as `forward` writes it, for the same `rows`) back into the input-shaped gradient.
    public static func backward(
        col: UnsafePointer<Float>, channelStride: Int, imageStride: Int, channels: Int,
        rows: Range<Int>, geometry g: ConvGeometry, inputGradient: UnsafeMutablePointer<Float>, threads: Int = 1
    ) {
        let k = g.kernel
        let outH = g.outputHeight, outW = g.outputWidth
        let rowLength = rows.count * outW
        let s = g.stride, p = g.pad, inH = g.inputHeight, inW = g.inputWidth
        // Parallel over channels: the rows of one channel touch only that channel's planes.
        Parallel.forEachChunk(channels, threads: threads) { channelRange in
            for c in channelRange {
                for i in 0..<k {
                    for j in 0..<k {
                        let r = (c * k + i) * k + j
                        let valid = g.validColumns(j)
                        var src = col + r * rowLength
                        for u in rows {
                            let n = u / outH, oh = u % outH
                            let ih = oh * s - p + i
                            if ih >= 0 && ih < inH {
                                let dst = inputGradient + c * channelStride + n * imageStride + ih * inW - p + j
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
