// The paper's preprocessing of a decoded image: scale so that the shorter side is 256, then take the central 256 × 256
// (Krizhevsky et al. 2012, section 2: "down-sampled the images to a fixed resolution of 256 × 256").
//
// The filter is a triangle (linear) whose support widens by the shrink factor when shrinking, i.e. an antialiasing
// bilinear filter, as Pillow's BILINEAR resize and torchvision's default Resize (antialias=True) do: plain bilinear
// sampling would alias when ILSVRC's ~500 × 375 photos (and its much larger ones) are reduced. Enlarging it is plain
// bilinear. Per axis, with scale = output / input: output pixel i is centred at source coordinate
// c = (i + 0.5) / scale − 0.5, and source pixel x has weight max(0, 1 − |x − c| / max(1, 1 / scale)); the weights
// are normalised over the pixels inside the image (for bilinear enlarging this is the same as clamping at the edge).
// The pass is separable (horizontal, then vertical, Float accumulators, one rounding at the end) and computes only
// the rows and columns the crop keeps; the weights are computed once per axis per image.
import Foundation

public enum ImageResize {
    /// The size after scaling the shorter side to `side`: the longer side is rounded to the nearest pixel, at least
    /// `side` (a square image gives side × side).
    public static func scaledSize(width: Int, height: Int, side: Int) -> (width: Int, height: Int) {
        precondition(width > 0 && height > 0 && side > 0, "ImageResize: sizes must be positive")
        func longer(_ long: Int, _ short: Int) -> Int {
            max(side, Int((Double(long) * Double(side) / Double(short)).rounded()))
        }
        return width <= height ? (side, longer(height, width)) : (longer(width, height), side)
    }

    /// Scales `image` so its shorter side is `side` (see the file header), then returns the central side × side crop
    /// as (side, side, 3) RGB, row-major; the crop starts at (longer − side) / 2, rounded down.
    public static func shorterSideAndCentreCrop(_ image: DecodedImage, side: Int = 256) -> [UInt8] {
        precondition(image.width > 0 && image.height > 0 && image.pixels.count == image.width * image.height * 3,
                     "ImageResize: the image must be (H, W, 3) with a positive size")
        let scaled = scaledSize(width: image.width, height: image.height, side: side)
        let columns = FilterTaps(input: image.width, output: scaled.width, first: (scaled.width - side) / 2, count: side)
        let rows = FilterTaps(input: image.height, output: scaled.height, first: (scaled.height - side) / 2, count: side)
        // The source rows the kept output rows read.
        let firstRow = rows.start.min()!, lastRow = zip(rows.start, rows.count).map { $0 + $1 }.max()! - 1
        let rowStride = side * 3
        // Horizontal pass: every needed source row → `side` kept columns. (lastRow − firstRow + 1, side, 3)
        var horizontal = [Float](repeating: 0, count: (lastRow - firstRow + 1) * rowStride)
        image.pixels.withUnsafeBufferPointer { source in
            horizontal.withUnsafeMutableBufferPointer { out in
                columns.weights.withUnsafeBufferPointer { weights in
                    columns.start.withUnsafeBufferPointer { starts in
                        columns.count.withUnsafeBufferPointer { counts in
                            let src = source.baseAddress!, dst = out.baseAddress!, wts = weights.baseAddress!
                            let sourceStride = image.width * 3, maxTaps = columns.maxTaps
                            for y in firstRow...lastRow {
                                let sourceRow = src + y * sourceStride, outRow = dst + (y - firstRow) * rowStride
                                for j in 0..<side {
                                    var pixel = sourceRow + starts[j] * 3
                                    var w = wts + j * maxTaps
                                    var r: Float = 0, g: Float = 0, b: Float = 0
                                    for _ in 0..<counts[j] {
                                        r += w.pointee * Float(pixel[0])
                                        g += w.pointee * Float(pixel[1])
                                        b += w.pointee * Float(pixel[2])
                                        pixel += 3
                                        w += 1
                                    }
                                    outRow[3 * j] = r
                                    outRow[3 * j + 1] = g
                                    outRow[3 * j + 2] = b
                                }
                            }
                        }
                    }
                }
            }
        }
        // Vertical pass: each kept output row is a weighted sum of horizontal rows, rounded once. (side, side, 3)
        var result = [UInt8](repeating: 0, count: side * rowStride)
        var accumulator = [Float](repeating: 0, count: rowStride)
        horizontal.withUnsafeBufferPointer { horizontal in
            result.withUnsafeMutableBufferPointer { result in
                accumulator.withUnsafeMutableBufferPointer { accumulator in
                    let hor = horizontal.baseAddress!, acc = accumulator.baseAddress!
                    for i in 0..<side {
                        for c in 0..<rowStride { acc[c] = 0 }
                        for k in 0..<rows.count[i] {
                            let w = rows.weights[i * rows.maxTaps + k]
                            let row = hor + (rows.start[i] + k - firstRow) * rowStride
                            for c in 0..<rowStride { acc[c] += w * row[c] }
                        }
                        let out = result.baseAddress! + i * rowStride
                        // Round to nearest: adding 2^23 to a Float in [0, 255] leaves the integer in the low bits
                        // (ties to even), which vectorises where UInt8(Float)'s range checks do not.
                        for c in 0..<rowStride {
                            out[c] = UInt8(truncatingIfNeeded: (min(max(acc[c], 0), 255) + 8_388_608).bitPattern)
                        }
                    }
                }
            }
        }
        return result
    }
}

/// The normalised triangle-filter weights of output pixels first..<first + count along one axis resized from `input`
/// to `output` pixels: output j reads source pixels start[j]..<start[j] + count[j] with weights[j * maxTaps + k].
struct FilterTaps {
    var start: [Int] = []
    var count: [Int] = []
    var weights: [Float] = []
    let maxTaps: Int

    init(input: Int, output: Int, first: Int, count outputs: Int) {
        let scale = Double(output) / Double(input)
        let filterScale = max(1, 1 / scale)   // the triangle's half-width in source pixels
        maxTaps = Int((2 * filterScale).rounded(.up)) + 2
        weights = [Float](repeating: 0, count: outputs * maxTaps)
        start.reserveCapacity(outputs)
        count.reserveCapacity(outputs)
        var taps = [Double](repeating: 0, count: maxTaps)
        for i in first..<(first + outputs) {
            let centre = (Double(i) + 0.5) / scale - 0.5
            // Source pixels strictly inside the support |x − centre| < filterScale, clipped to the image.
            let low = max(0, Int((centre - filterScale).rounded(.down)) + 1)
            let high = min(input - 1, Int((centre + filterScale).rounded(.up)) - 1)
            var sum = 0.0, used = 0
            if low <= high {
                for x in low...high {
                    taps[used] = max(0, 1 - abs(Double(x) - centre) / filterScale)
                    sum += taps[used]
                    used += 1
                }
            }
            if sum > 0 {
                start.append(low)
                count.append(used)
                for k in 0..<used { weights[(i - first) * maxTaps + k] = Float(taps[k] / sum) }
            } else {   // the centre lies beyond the last pixel's support (cannot happen for i < output): nearest pixel
                start.append(min(max(Int(centre.rounded()), 0), input - 1))
                count.append(1)
                weights[(i - first) * maxTaps] = 1
            }
        }
    }
}
