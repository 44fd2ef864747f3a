// The embedded default dataset: ten classes of shapes and textures drawn procedurally, deterministic by seed.
// Nothing to download: image i is a pure function of (seed, split, i). Colour, position, scale and pixel noise vary.

public final class EmbeddedShapes: ImageDataset, @unchecked Sendable {
    public static let classNames = ["disk", "square", "triangle", "ring", "plus", "horizontal stripes",
                                    "vertical stripes", "checkerboard", "diamond", "diagonal cross"]
    public static let side = 256
    public static let trainingImages = 10_000
    public static let heldOutImages = 1_000

    public let name: String
    public let count: Int
    public let seed: UInt64
    let salt: UInt64
    public var storage: ImageStorage { .pixels(height: Self.side, width: Self.side) }

    public init(seed: UInt64, heldOut: Bool, count: Int? = nil) {
        self.seed = seed
        self.salt = heldOut ? 0x5EED_0001 : 0x5EED_0000
        self.count = count ?? (heldOut ? Self.heldOutImages : Self.trainingImages)
        self.name = "embedded shapes (\(heldOut ? "held-out" : "training"))"
    }

    public static func splits(seed: UInt64) -> DataSplits {
        DataSplits(train: EmbeddedShapes(seed: seed, heldOut: false), heldOut: EmbeddedShapes(seed: seed, heldOut: true),
                   heldOutIsTrainingSet: false, classes: classNames.count,
                   description: "embedded shapes: \(classNames.count) classes, \(trainingImages) training + \(heldOutImages) held-out images of \(side)×\(side), seed \(seed)",
                   statisticsSamples: 1_000)   // drawn from one distribution: 1,000 images pin the mean down
    }

    public func label(_ index: Int) -> Int { index % Self.classNames.count }

    @inline(__always) private func draw(_ index: Int, _ what: UInt64) -> Float {
        CounterRandom.uniform(seed: seed, .embeddedImage, salt, UInt64(index), what)
    }

    /// Whether (u, v) in the shape's own frame ([-1, 1]², y down) is foreground for class k.
    @inline(__always) static func inside(_ k: Int, _ u: Float, _ v: Float) -> Bool {
        let au = abs(u), av = abs(v), box = max(au, av)
        func band(_ x: Float) -> Int { Int(((x + 1) * 3).rounded(.down)) }
        switch k {
        case 0: return u * u + v * v <= 1
        case 1: return box <= 0.85
        case 2: return v >= -0.85 && v <= 0.85 && au <= (v + 0.85) / 1.7 * 0.95
        case 3: let r = u * u + v * v; return r <= 1 && r >= 0.36
        case 4: return (au <= 0.28 && av <= 1) || (av <= 0.28 && au <= 1)
        case 5: return box <= 0.9 && band(v) % 2 == 0
        case 6: return box <= 0.9 && band(u) % 2 == 0
        case 7: return box <= 0.9 && (band(u) + band(v)) % 2 == 0
        case 8: return au + av <= 1
        default: return box <= 0.95 && (abs(u - v) <= 0.25 || abs(u + v) <= 0.25)
        }
    }

    public func pixels(_ index: Int, into out: UnsafeMutablePointer<UInt8>) {
        pixels(index, rows: 0..<Self.side, columns: 0..<Self.side, into: out)
    }

    /// Every pixel is a function of (index, y, x) alone, so a crop's window costs only its own pixels (227² of 256²).
    public func pixels(_ index: Int, rows: Range<Int>, columns: Range<Int>, into out: UnsafeMutablePointer<UInt8>) {
        let k = label(index), side = Self.side
        let scale = 40 + 70 * draw(index, 1)                       // half-size in pixels
        let cx = scale + (Float(side) - 2 * scale) * draw(index, 2)
        let cy = scale + (Float(side) - 2 * scale) * draw(index, 3)
        var background = [Float](repeating: 0, count: 3), foreground = [Float](repeating: 0, count: 3)
        for c in 0..<3 {
            background[c] = 255 * draw(index, 10 + UInt64(c))
            // Foreground at least 70 levels away from the background in every channel.
            let shift = 70 + 120 * draw(index, 20 + UInt64(c))
            foreground[c] = background[c] > 127 ? background[c] - shift : background[c] + shift
        }
        let noise = 10 + 30 * draw(index, 4)
        let inverse = 1 / scale
        // Pixel noise: one mixing round a pixel from a per-image key (cheap, and still a pure function of the index).
        let noiseKey = CounterRandom.bits(seed: seed, .embeddedImage, salt ^ 0xFFFF, UInt64(index))
        let (b0, b1, b2) = (background[0], background[1], background[2]), (f0, f1, f2) = (foreground[0], foreground[1], foreground[2])
        // Every class's shape lies inside |u|, |v| ≤ 1: outside the columns [cx − scale, cx + scale] (widened by two
        // pixels against rounding) a pixel is background without asking the shape.
        let firstColumn = max(0, Int((cx - scale).rounded(.down)) - 2), lastColumn = min(side - 1, Int((cx + scale).rounded(.up)) + 2)
        Self.jitterUnits.withUnsafeBufferPointer { units in
            let unit = units.baseAddress!
            for y in rows.clamped(to: 0..<side) {
                let v = (Float(y) - cy) * inverse
                let rowMeetsShape = abs(v) <= 1
                for x in columns.clamped(to: 0..<side) {
                    let u = (Float(x) - cx) * inverse
                    let fg = rowMeetsShape && x >= firstColumn && x <= lastColumn && Self.inside(k, u, v)
                    let p = out + (y * side + x) * 3
                    let bits = CounterRandom.mix(noiseKey &+ UInt64(y * side + x))
                    // jitter = (q / 65535 − 0.5) · 2 · noise for each channel's 16 bits q, the bracket from the table.
                    let j0 = unit[Int(bits & 0xFFFF)] * noise, j1 = unit[Int((bits >> 16) & 0xFFFF)] * noise
                    let j2 = unit[Int((bits >> 32) & 0xFFFF)] * noise
                    p[0] = UInt8(max(0, min(255, (fg ? f0 : b0) + j0)))
                    p[1] = UInt8(max(0, min(255, (fg ? f1 : b1) + j1)))
                    p[2] = UInt8(max(0, min(255, (fg ? f2 : b2) + j2)))
                }
            }
        }
    }

    /// (q / 65535 − 0.5) · 2 for every 16-bit q: the pixel noise before its per-image scale (computed once, with the
    /// same operations in the same order as per pixel, so the same floats).
    static let jitterUnits: [Float] = (0..<65_536).map { (Float($0) / 65535 - 0.5) * 2 }
}

import Foundation

extension EmbeddedShapes {
    /// Writes the first `count` images of a split as a NumPy dataset folder.
    public static func export(seed: UInt64, heldOut: Bool, count: Int, to directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw AlexNetError("\(directory): cannot create the folder (\(error.localizedDescription))")
        }
        let set = EmbeddedShapes(seed: seed, heldOut: heldOut, count: count)
        let plane = side * side * 3
        var pixels = [UInt8](repeating: 0, count: count * plane)
        pixels.withUnsafeMutableBufferPointer { p in
            for i in 0..<count { set.pixels(i, into: p.baseAddress! + i * plane) }
        }
        let labels = (0..<count).map { Int64(set.label($0)) }
        try pixels.withUnsafeBytes {
            try NpyArray.write(path: directory + "/images.npy", dtype: .uint8, shape: [count, side, side, 3], bytes: $0)
        }
        try labels.withUnsafeBytes {
            try NpyArray.write(path: directory + "/labels.npy", dtype: .int64, shape: [count], bytes: $0)
        }
    }

    /// How `exportImages` lays out its JPEG files.
    public enum FolderLayout: String, CaseIterable, Sendable {
        /// directory/<class name>/<index>.JPEG, as ILSVRC's training set.
        case classFolders = "folders"
        /// directory/<index>.JPEG and directory/labels.txt (one class name a line, in file-name order), as ILSVRC's
        /// validation set.
        case flat
    }

    /// Writes `count` images as JPEG files of `width` × `height` (the 256 × 256 image stretched, nearest pixel): a
    /// folder of real image files to try `prepare` on and to measure it with (ILSVRC's typical photo is 500 × 375).
    public static func exportImages(seed: UInt64, heldOut: Bool, count: Int, to directory: String, layout: FolderLayout,
                                    width: Int = 500, height: Int = 375, quality: Int = 90) throws {
        let set = EmbeddedShapes(seed: seed, heldOut: heldOut, count: count)
        let fm = FileManager.default
        func makeFolder(_ path: String) throws {
            do { try fm.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
                throw AlexNetError("\(path): cannot create the folder (\(error.localizedDescription))")
            }
        }
        try makeFolder(directory)
        if layout == .classFolders { for name in classNames { try makeFolder(directory + "/" + name) } }
        let source = UnsafeMutablePointer<UInt8>.allocate(capacity: side * side * 3)
        defer { source.deallocate() }
        var stretched = [UInt8](repeating: 0, count: width * height * 3)   // (height, width, 3)
        let digits = String(count - 1).count
        for i in 0..<count {
            set.pixels(i, into: source)
            for y in 0..<height {
                let sy = y * side / height
                for x in 0..<width {
                    let from = (sy * side + x * side / width) * 3, to = (y * width + x) * 3
                    stretched[to] = source[from]; stretched[to + 1] = source[from + 1]; stretched[to + 2] = source[from + 2]
                }
            }
            let jpeg = try ImageEncoder.jpeg(DecodedImage(width: width, height: height, pixels: stretched), quality: quality)
            let number = String(repeating: "0", count: max(0, digits - String(i).count)) + String(i)
            let name = (layout == .classFolders ? classNames[set.label(i)] + "/" : "") + "\(heldOut ? "val" : "train")_\(number).JPEG"
            guard fm.createFile(atPath: directory + "/" + name, contents: Data(jpeg)) else {
                throw AlexNetError("\(directory)/\(name): cannot write the file (check the folder's permissions and free space)")
            }
        }
        if layout == .flat {
            // Class names, not indices: the indices of a prepared training folder are its sorted folder names'.
            let labels = (0..<count).map { classNames[set.label($0)] + "\n" }.joined()
            guard fm.createFile(atPath: directory + "/labels.txt", contents: Data(labels.utf8)) else {
                throw AlexNetError("\(directory)/labels.txt: cannot write the file")
            }
        }
    }
}
