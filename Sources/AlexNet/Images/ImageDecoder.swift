// Decodes the JPEG and PNG files of an image folder (ILSVRC) to 8-bit RGB: JPEG through libjpeg-turbo's TurboJPEG API,
// PNG through libpng. The format is chosen by the file's first bytes, never by its name (ILSVRC has PNGs named .JPEG).
//
// Decisions, matching what Pillow's `Image.open(path).convert("RGB")` (torchvision's folder loader) gives:
// - Grayscale JPEGs and PNGs become R = G = B. EXIF orientation is ignored (as Pillow does without exif_transpose).
// - CMYK and YCCK JPEGs are decoded to CMYK and converted here: with an Adobe APP14 marker the samples are Adobe's
//   inverted CMYK (255 = no ink, as Photoshop writes them and as ILSVRC's CMYK files are), R = C·K/255; without it they
//   are plain CMYK, R = (255 − C)(255 − K)/255. Likewise for G (M) and B (Y). No colour profile is applied.
// - PNG alpha (an alpha channel or tRNS transparency) is dropped, not composited; 16-bit samples become their high
//   byte (value >> 8, so 0x12FF → 0x12); gAMA, sRGB and iCCP chunks are ignored. Palette and 1/2/4-bit gray expand.
// - Any libjpeg warning is an error, including premature end of data: libjpeg would pad a truncated JPEG with grey
//   and call it a warning, and a training set should skip such a file rather than learn from the padding. (This also
//   rejects the harmless "extraneous bytes before marker" warning.) A truncated PNG is an error too.
// - Images above `ImageDecoder.maxPixels` are refused before anything is allocated; a zero-sized one is an error.
// Errors are one-line AlexNetErrors naming the file; nothing here traps or prints.
import CPNG
import CTurboJPEG
import Foundation

/// An 8-bit RGB image: `pixels` is (H, W, 3), row-major.
public struct DecodedImage: Sendable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]   // (H, W, 3) RGB

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3, "DecodedImage: pixels must be (H, W, 3)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

public enum ImageDecoder {
    /// The largest image decoded, in pixels (2^28: 0.8 GB as RGB); larger headers are refused before allocating.
    public static let maxPixels = 1 << 28

    /// Reads and decodes the JPEG or PNG at `path` (format by content).
    public static func decode(path: String) throws -> DecodedImage {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw AlexNetError("\(path): no such file")
        }
        guard !isDirectory.boolValue else { throw AlexNetError("\(path): is a directory, not an image file") }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw AlexNetError("\(path): cannot read the file (check its permissions)")
        }
        return try data.withUnsafeBytes { try decode(bytes: $0, name: path) }
    }

    /// Decodes a JPEG or PNG held in memory; `name` (a path) is only used in error messages.
    public static func decode(bytes: UnsafeRawBufferPointer, name: String) throws -> DecodedImage {
        guard let base = bytes.baseAddress, bytes.count > 0 else { throw AlexNetError("\(name): empty file (0 bytes); remove or replace it") }
        let jpegMagic: [UInt8] = [0xFF, 0xD8, 0xFF]
        let pngMagic: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        if bytes.count >= jpegMagic.count && bytes.prefix(jpegMagic.count).elementsEqual(jpegMagic) {
            return try decodeJPEG(base.assumingMemoryBound(to: UInt8.self), count: bytes.count, name: name)
        }
        if bytes.count >= pngMagic.count && bytes.prefix(pngMagic.count).elementsEqual(pngMagic) {
            return try decodePNG(base.assumingMemoryBound(to: UInt8.self), count: bytes.count, name: name)
        }
        let start = bytes.prefix(8).map { String(format: "%02X", $0) }.joined(separator: " ")
        throw AlexNetError("\(name): not a JPEG or PNG file (starts with \(start)); remove it from the image folder")
    }

    /// Checks a header's size before anything is allocated.
    static func checkSize(width: Int, height: Int, format: String, name: String) throws {
        guard width > 0 && height > 0 else {
            throw AlexNetError("\(name): truncated or corrupt \(format): its header gives a \(width) × \(height) image; remove or replace the file")
        }
        guard width.multipliedReportingOverflow(by: height).partialValue <= maxPixels, width <= maxPixels, height <= maxPixels else {
            throw AlexNetError("\(name): \(format) header says \(width) × \(height) pixels, more than the \(maxPixels) this decoder accepts")
        }
    }

    // MARK: JPEG

    static func decodeJPEG(_ jpeg: UnsafePointer<UInt8>, count: Int, name: String) throws -> DecodedImage {
        guard let handle = tjInitDecompress() else {
            throw AlexNetError("\(name): cannot start the JPEG decoder (out of memory)")
        }
        defer { tjDestroy(handle) }
        func reason() -> String {
            let text = tjGetErrorStr2(handle).map { String(cString: $0) } ?? "unknown error"
            return text.split(whereSeparator: \.isNewline).joined(separator: " ")
        }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        guard tjDecompressHeader3(handle, jpeg, UInt(count), &width, &height, &subsampling, &colorspace) == 0 else {
            throw AlexNetError("\(name): corrupt JPEG header: \(reason())")
        }
        let w = Int(width), h = Int(height)
        try checkSize(width: w, height: h, format: "JPEG", name: name)
        // Every warning stops the decode (see the file header): a truncated file is an error, not grey padding.
        let flags = TJFLAG_STOPONWARNING
        let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let channels = cmyk ? 4 : 3
        var failure: String?
        var decoded = [UInt8](unsafeUninitializedCapacity: w * h * channels) { buffer, initialised in
            let format = cmyk ? TJPF_CMYK : TJPF_RGB
            if tjDecompress2(handle, jpeg, UInt(count), buffer.baseAddress, width, 0, height, Int32(format.rawValue), flags) != 0 {
                let warning = tjGetErrorCode(handle) == Int32(TJERR_WARNING.rawValue)
                failure = warning ? "truncated or corrupt JPEG: \(reason())" : "corrupt JPEG: \(reason())"
                buffer.initialize(repeating: 0)   // the decoder may have stopped part-way; the array is discarded
            }
            initialised = w * h * channels
        }
        if let failure { throw AlexNetError("\(name): \(failure); remove or replace the file") }
        if cmyk { decoded = cmykToRGB(decoded, pixels: w * h, inverted: hasAdobeMarker(jpeg, count: count)) }
        return DecodedImage(width: w, height: h, pixels: decoded)
    }

    /// (H, W, 4) CMYK → (H, W, 3) RGB. Inverted (Adobe) samples: R = C·K/255; plain: R = (255 − C)(255 − K)/255.
    static func cmykToRGB(_ cmyk: [UInt8], pixels: Int, inverted: Bool) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: pixels * 3) { rgb, initialised in
            cmyk.withUnsafeBufferPointer { source in
                for p in 0..<pixels {
                    var c = UInt32(source[4 * p]), m = UInt32(source[4 * p + 1])
                    var y = UInt32(source[4 * p + 2]), k = UInt32(source[4 * p + 3])
                    if !inverted { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k }
                    rgb[3 * p] = UInt8((c * k + 127) / 255)
                    rgb[3 * p + 1] = UInt8((m * k + 127) / 255)
                    rgb[3 * p + 2] = UInt8((y * k + 127) / 255)
                }
            }
            initialised = pixels * 3
        }
    }

    /// Whether the JPEG's markers before the first scan include Adobe's APP14 segment (FF EE, "Adobe").
    static func hasAdobeMarker(_ jpeg: UnsafePointer<UInt8>, count: Int) -> Bool {
        var offset = 2   // after SOI
        while offset + 4 <= count {
            guard jpeg[offset] == 0xFF else { return false }
            let marker = jpeg[offset + 1]
            if marker == 0xFF { offset += 1; continue }                            // fill byte
            if marker == 0xDA || marker == 0xD9 { return false }                   // start of scan, end of image
            if marker == 0x01 || (0xD0...0xD7).contains(marker) { offset += 2; continue }   // no length
            let length = Int(jpeg[offset + 2]) << 8 | Int(jpeg[offset + 3])
            guard length >= 2 else { return false }
            if marker == 0xEE && length >= 7 && offset + 9 <= count {
                let adobe: [UInt8] = Array("Adobe".utf8)
                if (0..<5).allSatisfy({ jpeg[offset + 4 + $0] == adobe[$0] }) { return true }
            }
            offset += 2 + length
        }
        return false
    }

    // MARK: PNG

    static func decodePNG(_ png: UnsafePointer<UInt8>, count: Int, name: String) throws -> DecodedImage {
        var reader = shim_png_reader()
        reader.data = png
        reader.size = count
        func reason() -> String {
            let text = withUnsafePointer(to: &reader) { String(cString: shim_png_reader_message($0)) }
            return text.split(whereSeparator: \.isNewline).joined(separator: " ")
        }
        var width: png_uint_32 = 0, height: png_uint_32 = 0
        guard shim_png_read_rgb(&reader, &width, &height, nil) == 0 else {
            throw AlexNetError("\(name): corrupt PNG header: \(reason()); remove or replace the file")
        }
        let w = Int(width), h = Int(height)
        try checkSize(width: w, height: h, format: "PNG", name: name)
        var failed = false
        let pixels = [UInt8](unsafeUninitializedCapacity: w * h * 3) { buffer, initialised in
            buffer.initialize(repeating: 0)   // interlaced images are read pass by pass into these rows
            failed = shim_png_read_rgb(&reader, &width, &height, buffer.baseAddress) != 0
            initialised = w * h * 3
        }
        if failed { throw AlexNetError("\(name): truncated or corrupt PNG: \(reason()); remove or replace the file") }
        return DecodedImage(width: w, height: h, pixels: pixels)
    }
}
