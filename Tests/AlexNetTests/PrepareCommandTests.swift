// `alexnet-mpi prepare` on a real folder of hostile files, in one process and under mpirun -np 2: every decodable file
// is stored as the decoder and resize make it, in sorted-class order; every bad one is reported once and skipped;
// both runs write the same bytes; and the store trains.
import AlexNet
import Foundation
import XCTest

final class PrepareCommandTests: ProcessTestCase {
    override class var needsMPI: Bool { true }

    /// Writes the folder: (relative path, label) of the files that must be kept, and the bad files' relative paths.
    func makeFolder(_ root: String) throws -> (good: [(String, Int)], bad: [String]) {
        let fm = FileManager.default
        func put(_ path: String, _ bytes: [UInt8]) throws {
            let full = root + "/" + path
            try fm.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            XCTAssertTrue(fm.createFile(atPath: full, contents: Data(bytes)), full)
        }
        let picture = ImageDecoderTests.gradient(width: 120, height: 90)
        let jpeg = try ImageEncoder.jpeg(picture, quality: 92)
        // Classes "Zebra" < "apple" < "kiwi" in byte order (upper case first), as PyTorch's ImageFolder sorts; within a
        // class, a folder's own files before its subfolders' (os.walk's order, as ImageFolder).
        try put("apple/baseline.JPEG", jpeg)
        try put("apple/progressive.jpg", try ImageEncoder.jpeg(picture, quality: 92, progressive: true))
        try put("apple/gray.jpeg", try ImageEncoder.jpeg(picture, grayscale: true))
        try put("apple/cmyk.JPEG", try ImageEncoder.cmykJPEG(picture))
        try put("Zebra/png-named.JPEG", try ImageEncoder.png(width: 120, height: 90, channels: 3, pixels: picture.pixels))
        var rgba: [UInt8] = []
        for i in 0..<(64 * 48) { rgba += [UInt8(i % 256), UInt8(i / 64 * 5 % 256), 200, UInt8(i % 7 * 30)] }
        try put("Zebra/rgba.png", try ImageEncoder.png(width: 64, height: 48, channels: 4, pixels: rgba))
        var deep: [UInt8] = []
        for i in 0..<(40 * 30 * 3) { let v = UInt16(i * 37 % 65536); deep += [UInt8(v >> 8), UInt8(v & 0xFF)] }
        try put("Zebra/sixteen.png", try ImageEncoder.png(width: 40, height: 30, channels: 3, bitDepth: 16, pixels: deep))
        try put("kiwi/one-pixel.png", try ImageEncoder.png(width: 1, height: 1, channels: 3, pixels: [10, 200, 30]))
        try put("kiwi/deeper/wide.JPEG", try ImageEncoder.jpeg(ImageDecoderTests.gradient(width: 2000, height: 3)))
        let good: [(String, Int)] = [("Zebra/png-named.JPEG", 0), ("Zebra/rgba.png", 0), ("Zebra/sixteen.png", 0),
                                     ("apple/baseline.JPEG", 1), ("apple/cmyk.JPEG", 1), ("apple/gray.jpeg", 1),
                                     ("apple/progressive.jpg", 1), ("kiwi/one-pixel.png", 2), ("kiwi/deeper/wide.JPEG", 2)]
        try put("apple/truncated.JPEG", Array(jpeg.prefix(jpeg.count / 2)))
        try put("kiwi/empty.jpg", [])
        try put("kiwi/notes.jpg", Array("these are not pixels\n".utf8))
        try put("Zebra/noise.JPEG", ImageDecoderTests.randomBytes(3000, seed: 5))
        try put("kiwi/readme.txt", Array("ignored: not an image name\n".utf8))
        return (good, ["Zebra/noise.JPEG", "apple/truncated.JPEG", "kiwi/empty.jpg", "kiwi/notes.jpg"])
    }

    func testPrepareStoresGoodFilesSkipsBadOnesOnOneAndTwoRanks() throws {
        let dir = Paths.temporaryDirectory("prepare-command")
        let (good, bad) = try makeFolder(dir + "/src")
        let args = ["prepare", dir + "/src", "--bad-fraction", "0.5", "--threads", "1"]
        let one = runProcess(Paths.binary, args + [dir + "/one"], timeout: 120)
        XCTAssertEqual(one.status, 0, one.err)
        let two = mpirun(["-np", "2", Paths.binary] + args + [dir + "/two"], timeout: 180)
        XCTAssertEqual(two.status, 0, two.err)
        for (name, run) in [("one rank", one.out + one.err), ("two ranks", two.out + two.err)] {
            for file in bad {
                XCTAssertEqual(run.components(separatedBy: file).count - 1, 1, "\(name): \(file) reported once\n\(run)")
            }
            for (file, _) in good { XCTAssertFalse(run.contains("skipped \(dir)/src/\(file)") || run.contains("skipped \(file)"), "\(name): \(file)") }
        }
        // The store: the good files in class order, each exactly as the decoder and resize make it.
        let store = try NumpyDataset(directory: dir + "/one")
        XCTAssertEqual(store.count, good.count)
        XCTAssertEqual(try NumpyDataset.classNames(directory: dir + "/one"), ["Zebra", "apple", "kiwi"])
        let files = try String(contentsOfFile: dir + "/one/files.txt", encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(files, good.map(\.0))
        var pixels = [UInt8](repeating: 0, count: 256 * 256 * 3)
        for (i, (file, label)) in good.enumerated() {
            XCTAssertEqual(store.label(i), label, file)
            pixels.withUnsafeMutableBufferPointer { store.pixels(i, into: $0.baseAddress!) }
            let expected = ImageResize.shorterSideAndCentreCrop(try ImageDecoder.decode(path: dir + "/src/" + file))
            XCTAssertTrue(pixels == expected, "\(file): stored pixels differ from decode + resize")
        }
        // The one-pixel image fills the square with its colour.
        pixels.withUnsafeMutableBufferPointer { store.pixels(good.firstIndex { $0.0.hasSuffix("one-pixel.png") }!, into: $0.baseAddress!) }
        XCTAssertEqual(Array(pixels[0..<3]), [10, 200, 30])
        XCTAssertEqual(Array(pixels[(pixels.count - 3)...]), [10, 200, 30])
        // Two ranks wrote the same bytes.
        for name in ["images.npy", "labels.npy", "files.txt", "classes.txt", "mean.npy", "pca.npy", "bad.txt"] {
            XCTAssertEqual(FileManager.default.contents(atPath: dir + "/one/" + name), FileManager.default.contents(atPath: dir + "/two/" + name), name)
        }
        // Too many bad files for the default 0.1%: stops with a summary naming the option, and nothing loads.
        let strict = runProcess(Paths.binary, ["prepare", dir + "/src", dir + "/strict", "--threads", "1"], timeout: 120)
        XCTAssertEqual(strict.status, 1)
        XCTAssertTrue(strict.err.contains("--bad-fraction"), strict.err)
        XCTAssertThrowsError(try NumpyDataset(directory: dir + "/strict"))
        // The store trains a step and evaluates.
        let train = runProcess(Paths.binary, ["train", "--data", dir + "/one", "--width", "0.125", "--batch", "4", "--steps", "2",
                                              "--threads", "1", "--save", dir + "/m.safetensors"], timeout: 120)
        XCTAssertEqual(train.status, 0, train.err)
        XCTAssertTrue(train.out.contains("mean image and colour PCA from mean.npy and pca.npy"), train.out)
        let state = try Checkpoint.state(of: dir + "/m.safetensors")
        XCTAssertEqual(state?.classNames, ["Zebra", "apple", "kiwi"])
    }

    func testAValidationFolderMustNameTheTrainingClasses() throws {
        let dir = Paths.temporaryDirectory("prepare-validation")
        _ = try makeFolder(dir + "/src")
        let picture = try ImageEncoder.jpeg(ImageDecoderTests.gradient(width: 50, height: 40))
        try FileManager.default.createDirectory(atPath: dir + "/val/apple", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dir + "/val/apple/a.JPEG", contents: Data(picture))
        let r = runProcess(Paths.binary, ["prepare", dir + "/src", dir + "/out", "--validation", dir + "/val", "--bad-fraction", "0.5",
                                          "--threads", "1"], timeout: 120)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("class folders differ") && r.err.contains("missing Zebra"), r.err)
        // The training store was written before the validation folder was refused, and is complete.
        XCTAssertNoThrow(try NumpyDataset(directory: dir + "/out"))
    }
}
