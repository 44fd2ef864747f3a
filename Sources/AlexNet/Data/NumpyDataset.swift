// A NumPy dataset directory: images.npy (uint8 (N, H, W, 3) or float32 (N, 3, 227, 227)) and labels.npy (int64/int32 (N,)),
// with an optional heldout/ subdirectory of the same form for held-out accuracy. A store written by `prepare` is refused
// until its manifest.json says it is complete. Float images must be finite and labels
// in 0..<2²⁴; both are checked once when the folder is opened.
import Foundation

public final class NumpyDataset: ImageDataset, @unchecked Sendable {
    public let name: String
    public let count: Int
    public let storage: ImageStorage
    let images: NpyArray
    let labels: [Int]

    public init(directory: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AlexNetError("--data \(directory): no such directory (expected a folder with images.npy and labels.npy)")
        }
        try PreparedStore.checkComplete(directory: directory)   // a store `prepare` did not finish
        let imagesPath = (directory as NSString).appendingPathComponent("images.npy")
        let labelsPath = (directory as NSString).appendingPathComponent("labels.npy")
        images = try NpyArray(path: imagesPath, allowed: [.uint8, .float32])
        let labelArray = try NpyArray(path: labelsPath, allowed: [.int64, .int32])
        let s = images.shape
        switch images.dtype {
        case .uint8:
            guard s.count == 4, s[3] == 3 else {
                throw AlexNetError("\(imagesPath): uint8 images must have shape (N, H, W, 3), found \(s)")
            }
            guard s[1] >= ModelConfig.inputSize, s[2] >= ModelConfig.inputSize else {
                throw AlexNetError("\(imagesPath): images are \(s[1])×\(s[2]); they must be at least 227×227 (resize them, e.g. to 256×256)")
            }
            storage = .pixels(height: s[1], width: s[2])
        default:
            guard s.count == 4, s[1] == 3, s[2] == ModelConfig.inputSize, s[3] == ModelConfig.inputSize else {
                throw AlexNetError("\(imagesPath): float32 images must have shape (N, 3, 227, 227), found \(s)")
            }
            storage = .tensors
            // Scanned once here, so a NaN or ±inf never reaches the network.
            if let bad = images.firstNonFinite() {
                let plane = ModelConfig.inputSize * ModelConfig.inputSize
                let (image, rest) = bad.quotientAndRemainder(dividingBy: 3 * plane)
                let (channel, pixel) = rest.quotientAndRemainder(dividingBy: plane)
                let (row, column) = pixel.quotientAndRemainder(dividingBy: ModelConfig.inputSize)
                throw AlexNetError("\(imagesPath): value \(images.float(at: bad)) at index \(bad) (image \(image), channel \(channel), row \(row), column \(column)) is not finite; float32 images must hold finite numbers")
            }
        }
        guard labelArray.shape.count == 1, labelArray.shape[0] == s[0] else {
            throw AlexNetError("\(labelsPath): labels must have shape (\(s[0]),) to match images.npy, found \(labelArray.shape)")
        }
        guard s[0] > 0 else { throw AlexNetError("\(imagesPath): the dataset is empty") }
        labels = labelArray.integers()
        if let bad = labels.firstIndex(where: { $0 < 0 }) {
            throw AlexNetError("\(labelsPath): label \(labels[bad]) at index \(bad) is negative")
        }
        // Bounded so that class counts derived from labels (largest + 1) cannot overflow.
        if let bad = labels.firstIndex(where: { $0 >= Self.labelLimit }) {
            throw AlexNetError("\(labelsPath): label \(labels[bad]) at index \(bad) is too large (labels must be below \(Self.labelLimit))")
        }
        count = s[0]
        name = directory
        pixelStatistics = try Self.statistics(directory: directory, storage: storage)
    }

    public let pixelStatistics: PixelStatistics?

    /// mean.npy (H, W, 3) and pca.npy (4, 3) written by `prepare` beside the images, if both are there.
    static func statistics(directory: String, storage: ImageStorage) throws -> PixelStatistics? {
        let meanPath = (directory as NSString).appendingPathComponent("mean.npy")
        let pcaPath = (directory as NSString).appendingPathComponent("pca.npy")
        guard case .pixels(let h, let w) = storage, FileManager.default.fileExists(atPath: meanPath),
              FileManager.default.fileExists(atPath: pcaPath) else { return nil }
        let mean = try NpyArray(path: meanPath, allowed: [.float32]), pca = try NpyArray(path: pcaPath, allowed: [.float32])
        guard mean.shape == [h, w, 3] else {
            throw AlexNetError("\(meanPath): shape \(mean.shape) does not match the images' (\(h), \(w), 3); rerun alexnet-mpi prepare")
        }
        guard pca.shape == [4, 3] else { throw AlexNetError("\(pcaPath): shape \(pca.shape), expected (4, 3); rerun alexnet-mpi prepare") }
        let m = mean.withBytes { Array(UnsafeBufferPointer(start: $0.assumingMemoryBound(to: Float.self), count: h * w * 3)) }
        let p = pca.withBytes { Array(UnsafeBufferPointer(start: $0.assumingMemoryBound(to: Float.self), count: 12)) }
        guard m.allSatisfy({ $0.isFinite }), p.allSatisfy({ $0.isFinite }) else {
            throw AlexNetError("\(directory): mean.npy or pca.npy holds a value that is not finite; rerun alexnet-mpi prepare")
        }
        return PixelStatistics(mean: m, eigenvalues: Array(p[0..<3]), eigenvectors: Array(p[3..<12]))
    }

    /// The class names of a prepared store (classes.txt), nil for a folder without one.
    public static func classNames(directory: String) throws -> [String]? {
        let path = (directory as NSString).appendingPathComponent("classes.txt")
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try PreparedStore.classes(directory: directory)
    }

    /// Labels are class indices below 2²⁴ (the largest class count a checkpoint's state may hold).
    public static let labelLimit = 1 << 24

    public var largestLabel: Int { labels.max() ?? 0 }

    /// Refuses labels that the network's `classes` outputs cannot represent.
    public func checkLabels(classes: Int) throws {
        if let bad = labels.firstIndex(where: { $0 >= classes }) {
            throw AlexNetError("\(name)/labels.npy: label \(labels[bad]) at index \(bad) is out of range for \(classes) classes (labels must be 0..<\(classes); set --classes)")
        }
    }

    public func label(_ index: Int) -> Int { labels[index] }

    public func pixels(_ index: Int, into out: UnsafeMutablePointer<UInt8>) {
        guard case .pixels(let h, let w) = storage else { preconditionFailure() }
        _ = images.withBytes { memcpy(out, $0 + index * h * w * 3, h * w * 3) }
    }

    public func tensor(_ index: Int, into destination: UnsafeMutablePointer<Float>, channelStride: Int) {
        let plane = ModelConfig.inputSize * ModelConfig.inputSize
        images.withBytes { p in
            let src = p + index * 3 * plane * 4
            for c in 0..<3 { memcpy(destination + c * channelStride, src + c * plane * 4, plane * 4) }
        }
    }

    /// The splits of a NumPy dataset directory: heldout/ if present, else the training set itself.
    public static func splits(directory: String, classes: Int?) throws -> DataSplits {
        let train = try NumpyDataset(directory: directory)
        let heldOutDirectory = (directory as NSString).appendingPathComponent("heldout")
        let heldOut = FileManager.default.fileExists(atPath: heldOutDirectory) ? try NumpyDataset(directory: heldOutDirectory) : nil
        if let h = heldOut, h.storage != train.storage {
            throw AlexNetError("\(heldOutDirectory): images differ in kind or size from \(directory) (\(h.storage) vs \(train.storage))")
        }
        let classCount = classes ?? max(2, max(train.largestLabel, heldOut?.largestLabel ?? 0) + 1)
        try train.checkLabels(classes: classCount)
        try heldOut?.checkLabels(classes: classCount)
        let kind: String
        switch train.storage {
        case .pixels(let h, let w): kind = "uint8 \(h)×\(w) pixels"
        case .tensors: kind = "float32 3×227×227 tensors"
        }
        var splits = DataSplits(train: train, heldOut: heldOut ?? train, heldOutIsTrainingSet: heldOut == nil, classes: classCount,
                          description: "\(directory): \(train.count) images (\(kind)), \(classCount) classes, "
                              + (heldOut.map { "\($0.count) held-out images" } ?? "no heldout/ folder: accuracy is measured on the training set")
                              + (train.pixelStatistics != nil ? "; mean image and colour PCA from mean.npy and pca.npy" : ""))
        splits.classNames = try classNames(directory: directory)
        if let names = splits.classNames, names.count != classCount {
            throw AlexNetError("\(directory)/classes.txt names \(names.count) classes but the network has \(classCount); leave --classes out or prepare the folder again")
        }
        return splits
    }
}
