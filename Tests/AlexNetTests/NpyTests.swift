// The .npy reader and the NumPy dataset: accepted dtypes and shapes, and clear refusals of the rest.
import AlexNet
import Foundation
import XCTest

final class NpyTests: XCTestCase {
    func writeNpy(_ path: String, descr: String, shape: [Int], bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try NpyArray.write(path: path, descr: descr, shape: shape, bytes: $0) }
    }

    func dataset(images: (String, [Int]), labels: (String, [Int], [Int64]), name: String) throws -> String {
        let dir = Paths.temporaryDirectory("npy-\(name)")
        let count = images.1.reduce(1, *) * (images.0 == "|u1" ? 1 : images.0 == "<f8" ? 8 : 4)
        try writeNpy(dir + "/images.npy", descr: images.0, shape: images.1, bytes: [UInt8](repeating: 7, count: count))
        let labelBytes = labels.2.flatMap { v -> [UInt8] in
            labels.0 == "<i8" ? withUnsafeBytes(of: v.littleEndian) { Array($0) } : withUnsafeBytes(of: Int32(v).littleEndian) { Array($0) }
        }
        try writeNpy(dir + "/labels.npy", descr: labels.0, shape: labels.1, bytes: labelBytes)
        return dir
    }

    func error(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch { return "\(error)" }
    }

    func testAcceptsPixelsAndTensors() throws {
        let a = try dataset(images: ("|u1", [3, 230, 240, 3]), labels: ("<i8", [3], [0, 4, 2]), name: "u8")
        let s = try NumpyDataset.splits(directory: a, classes: nil)
        XCTAssertEqual(s.train.storage, .pixels(height: 230, width: 240))
        XCTAssertEqual(s.classes, 5)
        XCTAssertEqual(s.train.label(1), 4)
        XCTAssertTrue(s.heldOutIsTrainingSet)
        let b = try dataset(images: ("<f4", [2, 3, 227, 227]), labels: ("<i4", [2], [1, 0]), name: "f32")
        XCTAssertEqual(try NumpyDataset.splits(directory: b, classes: 3).train.storage, .tensors)
    }

    func testRefusesOtherDtypesShapesAndLabels() throws {
        let f64 = try dataset(images: ("<f8", [2, 3, 227, 227]), labels: ("<i8", [2], [0, 1]), name: "f64")
        let e1 = error { _ = try NumpyDataset.splits(directory: f64, classes: nil) }
        XCTAssertTrue(e1.contains("images.npy") && e1.contains("<f8"), e1)

        let small = try dataset(images: ("|u1", [2, 100, 100, 3]), labels: ("<i8", [2], [0, 1]), name: "small")
        let e2 = error { _ = try NumpyDataset.splits(directory: small, classes: nil) }
        XCTAssertTrue(e2.contains("227") && e2.contains("100×100"), e2)

        let chw = try dataset(images: ("<f4", [2, 227, 227, 3]), labels: ("<i8", [2], [0, 1]), name: "hwc-float")
        let e3 = error { _ = try NumpyDataset.splits(directory: chw, classes: nil) }
        XCTAssertTrue(e3.contains("(N, 3, 227, 227)"), e3)

        let count = try dataset(images: ("|u1", [2, 227, 227, 3]), labels: ("<i8", [3], [0, 1, 1]), name: "count")
        let e4 = error { _ = try NumpyDataset.splits(directory: count, classes: nil) }
        XCTAssertTrue(e4.contains("labels.npy") && e4.contains("(2,)"), e4)

        let range = try dataset(images: ("|u1", [2, 227, 227, 3]), labels: ("<i8", [2], [0, 12]), name: "range")
        let e5 = error { _ = try NumpyDataset.splits(directory: range, classes: 10) }
        XCTAssertTrue(e5.contains("label 12") && e5.contains("10 classes"), e5)

        let labelsFloat = try dataset(images: ("|u1", [2, 227, 227, 3]), labels: ("<f4", [2], [0, 1]), name: "labels-float")
        let e6 = error { _ = try NumpyDataset.splits(directory: labelsFloat, classes: nil) }
        XCTAssertTrue(e6.contains("labels.npy") && e6.contains("<f4"), e6)

        let e7 = error { _ = try NumpyDataset.splits(directory: "/nonexistent/data", classes: nil) }
        XCTAssertTrue(e7.contains("/nonexistent/data"), e7)

        let truncated = Paths.temporaryDirectory("npy-truncated")
        try writeNpy(truncated + "/images.npy", descr: "|u1", shape: [2, 227, 227, 3], bytes: [1, 2, 3])
        try writeNpy(truncated + "/labels.npy", descr: "<i8", shape: [2], bytes: [UInt8](repeating: 0, count: 16))
        let e8 = error { _ = try NumpyDataset.splits(directory: truncated, classes: nil) }
        XCTAssertTrue(e8.contains("truncated"), e8)
    }
}
