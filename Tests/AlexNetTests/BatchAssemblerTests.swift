// Batch assembly: mean-image subtraction, the ten test views (corners, centre, mirrors), and determinism of the
// random crops by (seed, epoch, image).
import AlexNet
import Foundation
import XCTest

/// Two 240 × 250 images whose pixels encode their position, so that every crop can be checked by hand.
final class PositionImages: ImageDataset, @unchecked Sendable {
    let name = "position images", count = 2, height = 240, width = 250
    var storage: ImageStorage { .pixels(height: height, width: width) }
    func label(_ index: Int) -> Int { index }
    static func value(_ i: Int, _ y: Int, _ x: Int, _ c: Int) -> UInt8 { UInt8((y * 7 + x * 3 + c * 50 + i * 90) % 256) }
    func pixels(_ index: Int, into out: UnsafeMutablePointer<UInt8>) {
        for y in 0..<height { for x in 0..<width { for c in 0..<3 { out[(y * width + x) * 3 + c] = Self.value(index, y, x, c) } } }
    }
}

final class BatchAssemblerTests: XCTestCase {
    let set = PositionImages()
    let size = 227, plane = 227 * 227

    func assemble(_ view: BatchAssembler.View?, augment: Bool = false, epoch: Int = 0, seed: UInt64 = 1) -> [Float] {
        let a = BatchAssembler(training: set, seed: seed)
        var x = [Float](repeating: 0, count: 3 * 2 * plane)
        _ = x.withUnsafeMutableBufferPointer { a.assemble(set, indices: [0, 1], epoch: epoch, augment: augment, view: view, into: $0.baseAddress!) }
        return x
    }

    /// Image 0's value at crop position (y, x) of channel c: its pixel minus the mean of the two images.
    func expected(_ top: Int, _ left: Int, _ y: Int, _ x: Int, _ c: Int) -> Float {
        let a = Float(PositionImages.value(0, top + y, left + x, c)), b = Float(PositionImages.value(1, top + y, left + x, c))
        return a - (a + b) / 2
    }

    func testTenViewsCropTheCornersAndCentreAndMirror() {
        let places: [(BatchAssembler.View.Place, Int, Int)] = [(.centre, 6, 11), (.topLeft, 0, 0), (.topRight, 0, 23),
                                                               (.bottomLeft, 13, 0), (.bottomRight, 13, 23)]
        XCTAssertEqual(BatchAssembler.View.ten.count, 10)
        for (place, top, left) in places {
            let x = assemble(.init(place: place, mirrored: false))
            let m = assemble(.init(place: place, mirrored: true))
            for (c, y, xx) in [(0, 0, 0), (1, 5, 200), (2, 226, 226), (0, 100, 17)] {
                // channel-major (3, N, 227, 227): image 0 of channel c starts at c·N·plane
                let i: Int = c * 2 * plane + y * size + xx
                let mirror: Int = c * 2 * plane + y * size + (size - 1 - xx)
                let want: Float = expected(top, left, y, xx, c)
                XCTAssertEqual(x[i], want, accuracy: 1e-4, "\(place) (\(c), \(y), \(xx))")
                XCTAssertEqual(m[mirror], x[i], "\(place) mirrored")
            }
        }
        XCTAssertEqual(assemble(nil), assemble(.init(place: .centre, mirrored: false)), "the default view is the centre")
    }

    func testRandomCropsAreAPureFunctionOfSeedEpochAndImage() {
        XCTAssertEqual(assemble(nil, augment: true, epoch: 3), assemble(nil, augment: true, epoch: 3))
        XCTAssertNotEqual(assemble(nil, augment: true, epoch: 3), assemble(nil, augment: true, epoch: 4))
        XCTAssertNotEqual(assemble(nil, augment: true, epoch: 3, seed: 1), assemble(nil, augment: true, epoch: 3, seed: 2))
    }
}
