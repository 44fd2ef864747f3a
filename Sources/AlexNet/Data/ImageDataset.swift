// What a training set is to the trainer: a count, labels, and either raw pixels (H, W, 3) or ready (3, 227, 227) tensors.

public enum ImageStorage: Equatable, Sendable {
    /// uint8 pixels (H, W, 3): mean subtraction and 227 × 227 crops apply.
    case pixels(height: Int, width: Int)
    /// float32 (3, 227, 227), used as it is.
    case tensors
}

public protocol ImageDataset: AnyObject, Sendable {
    var name: String { get }
    var count: Int { get }
    var storage: ImageStorage { get }
    func label(_ index: Int) -> Int
    /// (H, W, 3) uint8 pixels of image `index` (storage .pixels).
    func pixels(_ index: Int, into: UnsafeMutablePointer<UInt8>)
    /// The same pixels inside `rows` × `columns` only (the rest of `into`, (H, W, 3), may be left as it was): what a
    /// crop reads. A set that computes its images (the embedded shapes) skips the rest; the default copies them all.
    func pixels(_ index: Int, rows: Range<Int>, columns: Range<Int>, into: UnsafeMutablePointer<UInt8>)
    /// (3, 227, 227) floats of image `index` (storage .tensors); channel c goes to destination + c·channelStride,
    /// rows of 227 contiguous, row r at + r·227.
    func tensor(_ index: Int, into destination: UnsafeMutablePointer<Float>, channelStride: Int)
}

/// A pixel training set's mean image and RGB principal components, computed once (by `prepare`) instead of sampled
/// at every start.
public struct PixelStatistics: Sendable {
    public var mean: [Float]            // (H, W, 3), pixel units
    public var eigenvalues: [Float]     // (3,), pixel units²
    public var eigenvectors: [Float]    // (3, 3), row-major, the vectors as columns
    public init(mean: [Float], eigenvalues: [Float], eigenvectors: [Float]) {
        self.mean = mean; self.eigenvalues = eigenvalues; self.eigenvectors = eigenvectors
    }
}

public extension ImageDataset {
    /// Precomputed statistics of the set, if it carries them (a prepared store does).
    var pixelStatistics: PixelStatistics? { nil }

    func pixels(_ index: Int, into: UnsafeMutablePointer<UInt8>) { preconditionFailure("\(name) holds tensors, not pixels") }
    func pixels(_ index: Int, rows: Range<Int>, columns: Range<Int>, into: UnsafeMutablePointer<UInt8>) { pixels(index, into: into) }
    func tensor(_ index: Int, into destination: UnsafeMutablePointer<Float>, channelStride: Int) {
        preconditionFailure("\(name) holds pixels, not tensors")
    }
}

/// A training set and the set that measures held-out accuracy.
public struct DataSplits {
    public let train: ImageDataset
    public let heldOut: ImageDataset
    public let heldOutIsTrainingSet: Bool
    public let classes: Int
    public let description: String
    /// Training images the mean image and colour PCA are computed from (spread evenly over the set).
    public var statisticsSamples = 20_000
    /// Class names, index = label (a prepared folder's classes.txt); nil when the data has none.
    public var classNames: [String]? = nil

    public init(train: ImageDataset, heldOut: ImageDataset, heldOutIsTrainingSet: Bool, classes: Int, description: String,
                statisticsSamples: Int = 20_000) {
        self.train = train; self.heldOut = heldOut; self.heldOutIsTrainingSet = heldOutIsTrainingSet
        self.classes = classes; self.description = description; self.statisticsSamples = statisticsSamples
    }
}
