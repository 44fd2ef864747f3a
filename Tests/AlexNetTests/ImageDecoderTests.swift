// The JPEG and PNG decoder: images made in the test with the library's encoders decode to their source (within JPEG
// loss, or exactly for PNG), the format follows the content, and bad files give one-line errors naming the file.
import AlexNet
import Foundation
import XCTest

final class ImageDecoderTests: XCTestCase {
    /// A smooth pattern whose channels differ and whose rows and columns all differ: R rises to the right (2.7 per
    /// column at width 96), G downwards (4 per row), B falls along the diagonal. (H, W, 3)
    static func gradient(width: Int, height: Int) -> DecodedImage {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let p = 3 * (y * width + x)
                pixels[p] = UInt8(x * 255 / max(1, width - 1))
                pixels[p + 1] = UInt8(min(255, y * 4))
                pixels[p + 2] = UInt8(255 - (x + y) * 255 / max(1, width + height - 2))
            }
        }
        return DecodedImage(width: width, height: height, pixels: pixels)
    }

    static func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
    }

    /// Per channel: the mean and the largest absolute difference between two (H, W, 3) images.
    static func errors(_ a: [UInt8], _ b: [UInt8]) -> (mean: [Double], max: [Int]) {
        var sum = [0.0, 0.0, 0.0], largest = [0, 0, 0]
        for i in 0..<min(a.count, b.count) {
            let d = abs(Int(a[i]) - Int(b[i]))
            sum[i % 3] += Double(d)
            largest[i % 3] = max(largest[i % 3], d)
        }
        return (sum.map { $0 / Double(a.count / 3) }, largest)
    }

    /// Asserts that `decoded` is `source` within JPEG loss: per channel mean < `mean`, largest < `largest`.
    func assertClose(_ decoded: DecodedImage, _ source: DecodedImage, mean: Double, largest: Int,
                     _ what: String, line: UInt = #line) {
        XCTAssertEqual(decoded.width, source.width, what, line: line)
        XCTAssertEqual(decoded.height, source.height, what, line: line)
        XCTAssertEqual(decoded.pixels.count, source.pixels.count, what, line: line)
        let e = Self.errors(decoded.pixels, source.pixels)
        XCTAssertTrue(e.mean.allSatisfy { $0 < mean } && e.max.allSatisfy { $0 < largest },
                      "\(what): mean abs errors \(e.mean), max \(e.max)", line: line)
    }

    /// The number of components in the first SOF marker (baseline C0, progressive C2) and which marker it was.
    static func frame(_ jpeg: [UInt8]) -> (marker: UInt8, components: Int)? {
        var offset = 2
        while offset + 9 < jpeg.count, jpeg[offset] == 0xFF {
            let marker = jpeg[offset + 1]
            if marker == 0xC0 || marker == 0xC2 { return (marker, Int(jpeg[offset + 9])) }
            offset += 2 + (Int(jpeg[offset + 2]) << 8 | Int(jpeg[offset + 3]))
        }
        return nil
    }

    func decode(_ bytes: [UInt8], _ name: String = "memory") throws -> DecodedImage {
        try bytes.withUnsafeBytes { try ImageDecoder.decode(bytes: $0, name: name) }
    }

    func error(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch { return "\(error)" }
    }

    func testBaselineAndProgressiveJPEGsDecodeToTheirSource() throws {
        let source = Self.gradient(width: 96, height: 64)
        // The bounds are tight enough to see a one-row shift (G changes by 4 a row) or swapped channels.
        var shifted = source
        shifted.pixels.replaceSubrange(96 * 3..<shifted.pixels.count, with: source.pixels[0..<(63 * 96 * 3)])
        XCTAssertGreaterThan(Self.errors(shifted.pixels, source.pixels).mean[1], 3)
        for progressive in [false, true] {
            let jpeg = try ImageEncoder.jpeg(source, quality: 95, progressive: progressive)
            XCTAssertEqual(Self.frame(jpeg)?.marker, progressive ? 0xC2 : 0xC0, "progressive \(progressive)")
            XCTAssertEqual(Self.frame(jpeg)?.components, 3)
            assertClose(try decode(jpeg), source, mean: 3, largest: 40, "progressive \(progressive)")
        }
    }

    func testGrayscaleJPEGGivesEqualChannels() throws {
        let colour = Self.gradient(width: 80, height: 48)
        var gray = colour   // R = G = B = the green ramp plus the red one, halved
        for p in 0..<(80 * 48) {
            let v = UInt8((Int(colour.pixels[3 * p]) + Int(colour.pixels[3 * p + 1])) / 2)
            gray.pixels[3 * p] = v; gray.pixels[3 * p + 1] = v; gray.pixels[3 * p + 2] = v
        }
        let jpeg = try ImageEncoder.jpeg(gray, quality: 95, grayscale: true)
        XCTAssertEqual(Self.frame(jpeg)?.components, 1)
        let decoded = try decode(jpeg)
        for p in 0..<(80 * 48) {
            XCTAssertTrue(decoded.pixels[3 * p] == decoded.pixels[3 * p + 1] && decoded.pixels[3 * p] == decoded.pixels[3 * p + 2],
                          "pixel \(p): \(decoded.pixels[3 * p..<3 * p + 3])")
        }
        assertClose(decoded, gray, mean: 2, largest: 20, "grayscale")
    }

    func testCMYKJPEGConvertsToRGB() throws {
        let source = Self.gradient(width: 72, height: 56)
        let jpeg = try ImageEncoder.cmykJPEG(source, quality: 95)
        XCTAssertEqual(Self.frame(jpeg)?.components, 4)
        XCTAssertNotNil(jpeg.indices.first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xEE }, "TurboJPEG writes Adobe's APP14")
        assertClose(try decode(jpeg), source, mean: 4, largest: 48, "CMYK")
        // A flat colour: C' = R / max, K' = max (inverted) must come back as (200, 100, 50), not its complement.
        let flat = DecodedImage(width: 16, height: 16, pixels: (0..<256).flatMap { _ in [UInt8(200), 100, 50] })
        let decoded = try decode(try ImageEncoder.cmykJPEG(flat, quality: 100))
        assertClose(decoded, flat, mean: 2.5, largest: 6, "flat CMYK")
    }

    func testPNGNamedJPEGDecodesByContentExactly() throws {
        let pixels = Self.randomBytes(37 * 23 * 3, seed: 1)
        let path = Paths.temporaryDirectory("png-as-jpeg") + "/x.JPEG"
        let png = try ImageEncoder.png(width: 37, height: 23, channels: 3, pixels: pixels)
        try Data(png).write(to: URL(fileURLWithPath: path))
        let decoded = try ImageDecoder.decode(path: path)
        XCTAssertEqual([decoded.width, decoded.height], [37, 23])
        XCTAssertEqual(decoded.pixels, pixels)
        // And a JPEG named .png decodes as the JPEG it is.
        let source = Self.gradient(width: 40, height: 30)
        let jpegPath = Paths.temporaryDirectory("jpeg-as-png") + "/y.png"
        try Data(try ImageEncoder.jpeg(source, quality: 95)).write(to: URL(fileURLWithPath: jpegPath))
        assertClose(try ImageDecoder.decode(path: jpegPath), source, mean: 3, largest: 40, "JPEG named .png")
    }

    func testRGBAAndGrayAlphaPNGsDropAlpha() throws {
        // Alpha is dropped, not composited: a fully transparent pixel keeps its colour.
        let rgba = Self.randomBytes(19 * 11 * 4, seed: 2)
        let decoded = try decode(try ImageEncoder.png(width: 19, height: 11, channels: 4, pixels: rgba))
        let rgb = (0..<(19 * 11)).flatMap { rgba[4 * $0..<4 * $0 + 3] }
        XCTAssertEqual(decoded.pixels, rgb)
        XCTAssertTrue((0..<(19 * 11)).contains { rgba[4 * $0 + 3] < 128 && rgba[4 * $0] > 128 }, "the test has see-through pixels")
        let grayAlpha = Self.randomBytes(13 * 9 * 2, seed: 3)
        let gray = try decode(try ImageEncoder.png(width: 13, height: 9, channels: 2, pixels: grayAlpha))
        XCTAssertEqual(gray.pixels, (0..<(13 * 9)).flatMap { [UInt8](repeating: grayAlpha[2 * $0], count: 3) })
    }

    func testSixteenBitPNGKeepsTheHighByte() throws {
        // 0x12FF → 0x12 (value >> 8); rounding would give 0x13. 0x8080 → 0x80 either way; 0xFFFF → 0xFF.
        let samples: [UInt16] = [0x12FF, 0x8080, 0xFFFF, 0x0000, 0x00FF, 0xAB01]
        var rgb16: [UInt16] = []
        for p in 0..<(7 * 5 * 3) { rgb16.append(samples[p % samples.count] &+ UInt16(p / samples.count) << 8) }
        let bigEndian = rgb16.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
        let decoded = try decode(try ImageEncoder.png(width: 7, height: 5, channels: 3, bitDepth: 16, pixels: bigEndian))
        XCTAssertEqual(decoded.pixels, rgb16.map { UInt8($0 >> 8) })
        let gray16: [UInt16] = [0x12FF, 0x7F80, 0xFFFF, 0x0001]
        let gray = try decode(try ImageEncoder.png(width: 2, height: 2, channels: 1, bitDepth: 16,
                                                   pixels: gray16.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }))
        XCTAssertEqual(gray.pixels, [0x12, 0x12, 0x12, 0x7F, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0])
    }

    func testPaletteGrayAndInterlacedPNGs() throws {
        let palette: [UInt8] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
        let indices = Self.randomBytes(21 * 17, seed: 4).map { $0 % 4 }
        let indexed = try decode(try ImageEncoder.png(width: 21, height: 17, channels: 1, pixels: indices,
                                                      palette: palette, paletteAlpha: [0, 128]))
        XCTAssertEqual(indexed.pixels, indices.flatMap { palette[3 * Int($0)..<3 * Int($0) + 3] })
        let grayLevels = Self.randomBytes(15 * 6, seed: 5)
        let gray = try decode(try ImageEncoder.png(width: 15, height: 6, channels: 1, pixels: grayLevels))
        XCTAssertEqual(gray.pixels, grayLevels.flatMap { [$0, $0, $0] })
        let rgb = Self.randomBytes(33 * 29 * 3, seed: 6)
        let interlaced = try decode(try ImageEncoder.png(width: 33, height: 29, channels: 3, pixels: rgb, interlaced: true))
        XCTAssertEqual(interlaced.pixels, rgb)
    }

    func testOnePixelAndVeryWideImages() throws {
        let dot = DecodedImage(width: 1, height: 1, pixels: [200, 30, 90])
        XCTAssertEqual(try decode(try ImageEncoder.png(width: 1, height: 1, channels: 3, pixels: dot.pixels)).pixels, dot.pixels)
        assertClose(try decode(try ImageEncoder.jpeg(dot, quality: 95)), dot, mean: 6, largest: 6, "1 × 1 JPEG")
        let wide = Self.gradient(width: 4000, height: 3)
        assertClose(try decode(try ImageEncoder.jpeg(wide, quality: 95)), wide, mean: 3, largest: 40, "4000 × 3 JPEG")
        let tall = try decode(try ImageEncoder.png(width: 3, height: 4000, channels: 3, pixels: wide.pixels))
        XCTAssertEqual([tall.width, tall.height], [3, 4000])
        XCTAssertEqual(tall.pixels, wide.pixels)
    }

    func testBadFilesThrowOneLineNamingTheFile() throws {
        let dir = Paths.temporaryDirectory("bad-images")
        let jpeg = try ImageEncoder.jpeg(Self.gradient(width: 96, height: 64), quality: 90)
        let progressive = try ImageEncoder.jpeg(Self.gradient(width: 96, height: 64), quality: 90, progressive: true)
        let png = try ImageEncoder.png(width: 40, height: 40, channels: 3, pixels: Self.randomBytes(4800, seed: 7))
        let cases: [(String, [UInt8], String)] = [
            ("truncated.JPEG", Array(jpeg.prefix(jpeg.count / 2)), "truncated or corrupt JPEG"),
            ("truncated-progressive.JPEG", Array(progressive.prefix(progressive.count / 2)), "truncated or corrupt JPEG"),
            ("header-only.JPEG", Array(jpeg.prefix(20)), "truncated or corrupt JPEG"),
            ("truncated.png", Array(png.prefix(png.count / 2)), "truncated or corrupt PNG"),
            ("empty.JPEG", [], "empty file"),
            ("notes.JPEG", Array("just some text\nand more\n".utf8), "not a JPEG or PNG file (starts with 6A 75 73 74"),
            ("noise.JPEG", Self.randomBytes(5000, seed: 8).map { $0 == 0xFF || $0 == 0x89 ? 0 : $0 }, "not a JPEG or PNG file"),
        ]
        for (file, bytes, reason) in cases {
            let path = dir + "/" + file
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let message = error { _ = try ImageDecoder.decode(path: path) }
            XCTAssertTrue(message.contains(path) && message.contains(reason), "\(file): \(message)")
            XCTAssertFalse(message.contains("\n"), "\(file): \(message)")
        }
        let missing = error { _ = try ImageDecoder.decode(path: dir + "/missing.JPEG") }
        XCTAssertTrue(missing.contains(dir + "/missing.JPEG") && missing.contains("no such file"), missing)
    }

    func testAbsurdAndZeroSizesAreRefused() throws {
        // Patch the frame header of a small JPEG: 65000 × 65000 is 4.2 G pixels, above ImageDecoder.maxPixels.
        var jpeg = try ImageEncoder.jpeg(Self.gradient(width: 16, height: 16), quality: 90)
        let sof = try XCTUnwrap(jpeg.indices.first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xC0 })
        jpeg[sof + 5] = 0xFD; jpeg[sof + 6] = 0xE8; jpeg[sof + 7] = 0xFD; jpeg[sof + 8] = 0xE8   // height, width
        let huge = error { _ = try decode(jpeg, "huge.jpg") }
        XCTAssertTrue(huge.hasPrefix("huge.jpg: ") && huge.contains("65000 × 65000"), huge)
        jpeg[sof + 5] = 0; jpeg[sof + 6] = 0
        let empty = error { _ = try decode(jpeg, "zero.jpg") }
        XCTAssertTrue(empty.hasPrefix("zero.jpg: ") && empty.contains("corrupt JPEG"), empty)
    }
}
