// Turns dataset images into a network input (3, N, 227, 227): mean-image subtraction, random 227 crops,
// horizontal flips and the paper's PCA colour noise for pixel datasets; tensors are copied as they are.
import Foundation

public final class BatchAssembler: @unchecked Sendable {
    public let storage: ImageStorage
    public let seed: UInt64
    /// Mean image (H, W, 3) of the training set, and the RGB covariance's eigenvectors (columns) with the standard
    /// deviation of the pixels along each (√eigenvalue, in pixel units: the scale of fb.resnet.torch's "eigval").
    public private(set) var mean: [Float] = []
    public private(set) var eigenvectors: [Float] = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    public private(set) var componentStd: [Float] = [0, 0, 0]
    /// Standard deviation of the network's input over the sampled images (pixels: after mean subtraction).
    public private(set) var inputStd: Float = 1
    /// Multiplies the mean-subtracted pixels (1: the paper's raw pixel units; 1/inputStd: unit variance).
    public var inputScale: Float = 1
    /// Threads that decode and augment a batch (all of the process's, while the towers wait for their input).
    public var threads = 1
    /// Standard deviation of the PCA noise weights α (the paper: 0.1).
    public var colourNoise: Float = 0.1

    /// Takes the mean image and the RGB principal components from the set when it carries them (a prepared store),
    /// else computes them from up to `sampleLimit` training images spread evenly over the set.
    public init(training: ImageDataset, seed: UInt64, sampleLimit: Int = 20_000) {
        storage = training.storage
        self.seed = seed
        if let st = training.pixelStatistics, case .pixels(let h, let w) = storage, st.mean.count == h * w * 3 {
            mean = st.mean
            componentStd = st.eigenvalues.map { max(0, $0).squareRoot() }
            eigenvectors = st.eigenvectors
            inputStd = (st.eigenvalues.reduce(0, +) / 3).squareRoot()   // the trace is the sum of the eigenvalues
            return
        }
        guard case .pixels(let h, let w) = storage else {
            // Tensors are used as they are: only their spread is measured (for the He initialisation of conv1).
            let samples = min(training.count, 64), plane = 227 * 227
            let x = UnsafeMutablePointer<Float>.allocate(capacity: 3 * plane)
            defer { x.deallocate() }
            var s2: Double = 0
            for s in 0..<samples {
                training.tensor(s * training.count / samples, into: x, channelStride: plane)
                for i in 0..<(3 * plane) { s2 += Double(x[i]) * Double(x[i]) }
            }
            inputStd = Float((s2 / Double(samples * 3 * plane)).squareRoot())
            return
        }
        let samples = min(training.count, sampleLimit)
        let plane = h * w * 3
        var sum = [Double](repeating: 0, count: plane)
        var moments = [Double](repeating: 0, count: 9)    // Σ x_i x_j over pixels
        var channelSum = [Double](repeating: 0, count: 3)
        let pixels = UnsafeMutablePointer<UInt8>.allocate(capacity: plane)
        defer { pixels.deallocate() }
        for s in 0..<samples {
            training.pixels(s * training.count / samples, into: pixels)
            for i in 0..<plane { sum[i] += Double(pixels[i]) }
            var m = [Double](repeating: 0, count: 9)
            var cs = [Double](repeating: 0, count: 3)
            for q in stride(from: 0, to: plane, by: 3) {
                let r = Double(pixels[q]), g = Double(pixels[q + 1]), b = Double(pixels[q + 2])
                cs[0] += r; cs[1] += g; cs[2] += b
                m[0] += r * r; m[1] += r * g; m[2] += r * b; m[4] += g * g; m[5] += g * b; m[8] += b * b
            }
            for i in 0..<9 { moments[i] += m[i] }
            for c in 0..<3 { channelSum[c] += cs[c] }
        }
        mean = sum.map { Float($0 / Double(samples)) }
        let n = Double(samples * h * w)
        var cov = [Double](repeating: 0, count: 9)
        for i in 0..<3 { for j in i..<3 {
            let v = moments[i * 3 + j] / n - channelSum[i] / n * channelSum[j] / n
            cov[i * 3 + j] = v; cov[j * 3 + i] = v
        } }
        inputStd = Float(((cov[0] + cov[4] + cov[8]) / 3).squareRoot())
        // LAPACK's ssyev (nil only for a non-finite covariance, which pixels cannot give: then no colour noise).
        if let (values, vectors) = Lapack.symmetricEigen3(cov) {
            componentStd = values.map { max(0, $0).squareRoot() }
            eigenvectors = vectors
        }
    }

    /// One of the paper's ten test views: the centre or a corner 227 crop, mirrored or not.
    public struct View: Sendable {
        public enum Place: Int, CaseIterable, Sendable { case centre, topLeft, topRight, bottomLeft, bottomRight }
        public var place: Place
        public var mirrored: Bool
        public init(place: Place, mirrored: Bool) { self.place = place; self.mirrored = mirrored }
        public static let ten: [View] = Place.allCases.flatMap { p in [View(place: p, mirrored: false), View(place: p, mirrored: true)] }
    }

    /// Fills x (3, N, 227, 227) and returns the labels. `augment`: random crop, flip and colour noise drawn from
    /// (seed, epoch, dataset index); otherwise `view` (default: the centre crop, not mirrored).
    public func assemble(_ dataset: ImageDataset, indices: [Int], epoch: Int, augment: Bool, view: View? = nil,
                         into x: UnsafeMutablePointer<Float>) -> [Int32] {
        let N = indices.count
        Parallel.forEachChunk(N, threads: threads) { range in
            let scratch = makeScratch()
            defer { scratch?.deallocate() }
            for b in range {
                assembleImage(dataset, index: indices[b], slot: b, batch: N, epoch: epoch, augment: augment, view: view,
                              into: x, scratch: scratch)
            }
        }
        return indices.map { Int32(dataset.label($0)) }
    }

    /// Room for one image's pixels (H, W, 3) for `assembleImage`, or nil for tensor storage; the caller deallocates it.
    public func makeScratch() -> UnsafeMutablePointer<UInt8>? {
        guard case .pixels(let h, let w) = storage else { return nil }
        return .allocate(capacity: h * w * 3)
    }

    /// Fills image `slot` of x (3, N, 227, 227) from dataset image `index`, as `assemble` does: a pure function of
    /// (seed, epoch, index, view), whatever thread runs it and in whatever order. `scratch` comes from `makeScratch`.
    public func assembleImage(_ dataset: ImageDataset, index: Int, slot b: Int, batch N: Int, epoch: Int, augment: Bool,
                              view: View? = nil, into x: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<UInt8>?) {
        let size = ModelConfig.inputSize, plane = size * size
        let channelStride = N * plane, dst = x + b * plane
        switch storage {
        case .tensors:
            dataset.tensor(index, into: dst, channelStride: channelStride)
        case .pixels(let h, let w):
            let pixels = scratch!
            var top = (h - size) / 2, left = (w - size) / 2, flip = false
            if let v = view {
                switch v.place {
                case .centre: break
                case .topLeft: top = 0; left = 0
                case .topRight: top = 0; left = w - size
                case .bottomLeft: top = h - size; left = 0
                case .bottomRight: top = h - size; left = w - size
                }
                flip = v.mirrored
            }
            var shift: [Float] = [0, 0, 0]
            if augment {
                let key = UInt64(epoch), i = UInt64(index)
                top = Int(CounterRandom.bits(seed: seed, .crop, key, i, 0) % UInt64(h - size + 1))
                left = Int(CounterRandom.bits(seed: seed, .crop, key, i, 1) % UInt64(w - size + 1))
                flip = CounterRandom.bits(seed: seed, .flip, key, i) & 1 == 1
                var weighted: [Float] = [0, 0, 0]
                for e in 0..<3 {
                    weighted[e] = colourNoise * CounterRandom.normal(seed: seed, .colour, key, i, UInt64(e)) * componentStd[e]
                }
                for c in 0..<3 { shift[c] = (0..<3).reduce(0) { $0 + eigenvectors[c * 3 + $1] * weighted[$1] } }
            }
            dataset.pixels(index, rows: top..<(top + size), columns: left..<(left + size), into: pixels)
            let scale = inputScale
            for c in 0..<3 {
                let out = dst + c * channelStride, s = shift[c]
                for y in 0..<size {
                    let row = ((top + y) * w + left) * 3 + c
                    let o = out + y * size
                    if flip {
                        for xx in 0..<size {
                            let q = row + (size - 1 - xx) * 3
                            o[xx] = (Float(pixels[q]) - mean[q] + s) * scale
                        }
                    } else {
                        for xx in 0..<size {
                            let q = row + xx * 3
                            o[xx] = (Float(pixels[q]) - mean[q] + s) * scale
                        }
                    }
                }
            }
        }
    }
}
