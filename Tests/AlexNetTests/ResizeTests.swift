// The paper's resize (shorter side to `side`, antialiased triangle filter, centre crop) against a direct, non-separable
// evaluation of the filter's definition, and its exact cases: constant images, scale 1, the crop's position.
import AlexNet
import Foundation
import XCTest

final class ResizeTests: XCTestCase {
    /// Each output pixel of the crop straight from the definition, in Double: the normalised sum over the source pixels
    /// inside the image of tx(x)·ty(y)·pixel, where t(x) = max(0, 1 − |x − c| / max(1, in / out)) and
    /// c = (i + 0.5)·in / out − 0.5 for output index i (crop offset included). (side, side, 3)
    static func reference(_ image: DecodedImage, side: Int) -> [UInt8] {
        let shorter = min(image.width, image.height)
        func scaled(_ n: Int) -> Int { n == shorter ? side : max(side, Int((Double(n) * Double(side) / Double(shorter)).rounded())) }
        let outW = scaled(image.width), outH = scaled(image.height)
        let x0 = (outW - side) / 2, y0 = (outH - side) / 2
        let fx = max(1, Double(image.width) / Double(outW)), fy = max(1, Double(image.height) / Double(outH))
        var result = [UInt8](repeating: 0, count: side * side * 3)
        for i in 0..<side {
            let cy = (Double(i + y0) + 0.5) * Double(image.height) / Double(outH) - 0.5
            for j in 0..<side {
                let cx = (Double(j + x0) + 0.5) * Double(image.width) / Double(outW) - 0.5
                var sum = [0.0, 0.0, 0.0], total = 0.0
                // Only the pixels with a nonzero weight (|x − c| < half-width) contribute; the rest add zero.
                for y in max(0, Int((cy - fy).rounded(.down)))...min(image.height - 1, Int((cy + fy).rounded(.up))) {
                    for x in max(0, Int((cx - fx).rounded(.down)))...min(image.width - 1, Int((cx + fx).rounded(.up))) {
                        let w = max(0, 1 - abs(Double(x) - cx) / fx) * max(0, 1 - abs(Double(y) - cy) / fy)
                        total += w
                        for c in 0..<3 { sum[c] += w * Double(image.pixels[3 * (y * image.width + x) + c]) }
                    }
                }
                for c in 0..<3 { result[3 * (i * side + j) + c] = UInt8((sum[c] / total).rounded()) }
            }
        }
        return result
    }

    static func noise(width: Int, height: Int, seed: UInt64) -> DecodedImage {
        DecodedImage(width: width, height: height, pixels: ImageDecoderTests.randomBytes(width * height * 3, seed: seed))
    }

    func testScaledSizes() {
        XCTAssertTrue(ImageResize.scaledSize(width: 500, height: 375, side: 256) == (341, 256))
        XCTAssertTrue(ImageResize.scaledSize(width: 375, height: 500, side: 256) == (256, 341))
        XCTAssertTrue(ImageResize.scaledSize(width: 500, height: 333, side: 256) == (384, 256))   // 384.38
        XCTAssertTrue(ImageResize.scaledSize(width: 300, height: 299, side: 256) == (257, 256))   // 256.86
        XCTAssertTrue(ImageResize.scaledSize(width: 4000, height: 3, side: 256) == (341333, 256))
        XCTAssertTrue(ImageResize.scaledSize(width: 1, height: 1, side: 256) == (256, 256))
    }

    func testMatchesTheDirectFilterDefinition() {
        // Noise: every tap's weight shows in the output. Shrinking by non-integer factors, enlarging, both at once
        // (a very wide image's long side shrinks less than its short side grows), 1 × 1, portrait and landscape.
        let cases: [(Int, Int, Int)] = [
            (53, 37, 16), (37, 53, 16), (100, 71, 24), (640, 480, 64), (333, 500, 50), (999, 17, 8),
            (10, 7, 32), (7, 10, 29), (2, 3, 64), (1, 1, 8), (1, 1, 256), (4000, 3, 16), (3, 4000, 16), (5, 1, 12),
            (256, 256, 256), (300, 299, 256),
        ]
        for (n, (width, height, side)) in cases.enumerated() {
            let image = Self.noise(width: width, height: height, seed: UInt64(n) + 10)
            let fast = ImageResize.shorterSideAndCentreCrop(image, side: side)
            let slow = Self.reference(image, side: side)
            XCTAssertEqual(fast.count, side * side * 3, "\(width) × \(height) → \(side)")
            let worst = zip(fast, slow).map { abs(Int($0) - Int($1)) }.max() ?? 999
            XCTAssertLessThanOrEqual(worst, 1, "\(width) × \(height) → \(side): largest difference \(worst)")
        }
    }

    func testAntialiasingAveragesWhatBilinearWouldAlias() {
        // A one-pixel checkerboard shrunk 1000 → 256: the widened triangle (about 8 taps an axis) gives mid grey within
        // 1 (by the filter's arithmetic, 127.5 ± 0.8); a 2-tap bilinear filter would alias, giving values up to
        // 127.5 ± 124 depending on each output pixel's phase.
        var pixels = [UInt8](repeating: 0, count: 1000 * 1000 * 3)
        for y in 0..<1000 { for x in 0..<1000 where (x + y) % 2 == 0 { for c in 0..<3 { pixels[3 * (y * 1000 + x) + c] = 255 } } }
        let out = ImageResize.shorterSideAndCentreCrop(DecodedImage(width: 1000, height: 1000, pixels: pixels))
        XCTAssertTrue(out.allSatisfy { abs(Int($0) - 128) <= 1 }, "range \(out.min()!)…\(out.max()!)")
    }

    func testConstantImageStaysConstant() {
        for (width, height) in [(333, 250), (1, 1), (4000, 3), (17, 900)] {
            let image = DecodedImage(width: width, height: height, pixels: (0..<(width * height)).flatMap { _ in [UInt8(123), 45, 255] })
            let out = ImageResize.shorterSideAndCentreCrop(image)
            XCTAssertEqual(out.count, 256 * 256 * 3)
            XCTAssertTrue((0..<(256 * 256)).allSatisfy { out[3 * $0] == 123 && out[3 * $0 + 1] == 45 && out[3 * $0 + 2] == 255 },
                          "\(width) × \(height)")
        }
    }

    func testCropIsCentredAndScaleOneIsIdentity() {
        // The shorter side already 256: no resampling, so the output is exactly the source's central window.
        for (width, height) in [(768, 256), (769, 256), (256, 515), (256, 256)] {
            var pixels = [UInt8](repeating: 0, count: width * height * 3)   // asymmetric: x, y and their mix
            for y in 0..<height { for x in 0..<width {
                pixels[3 * (y * width + x)] = UInt8(x % 256)
                pixels[3 * (y * width + x) + 1] = UInt8(y % 256)
                pixels[3 * (y * width + x) + 2] = UInt8((x / 3 + 7 * y) % 256)
            } }
            let out = ImageResize.shorterSideAndCentreCrop(DecodedImage(width: width, height: height, pixels: pixels))
            let x0 = (width - 256) / 2, y0 = (height - 256) / 2
            var expected: [UInt8] = []
            for y in y0..<(y0 + 256) { expected += pixels[3 * (y * width + x0)..<3 * (y * width + x0 + 256)] }
            XCTAssertEqual(out, expected, "\(width) × \(height): crop at (\(x0), \(y0))")
        }
    }
}
