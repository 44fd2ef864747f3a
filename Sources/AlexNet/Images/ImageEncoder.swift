// Writes JPEG (TurboJPEG) and PNG (libpng) files in memory: the image decoder's tests and the preprocessing benchmark
// make their inputs with these, so neither needs image files checked in nor a Python toolchain.
import CPNG
import CTurboJPEG
import Foundation

public enum ImageEncoder {
    /// An RGB image as a JPEG: 4:2:0 chroma subsampling, accurate DCT; `progressive` writes a progressive JPEG;
    /// `grayscale` writes a one-component JPEG of the image's luminance.
    public static func jpeg(_ image: DecodedImage, quality: Int = 90, progressive: Bool = false,
                            grayscale: Bool = false) throws -> [UInt8] {
        try checkImage(image)
        return try compress(image.pixels, width: image.width, height: image.height, format: TJPF_RGB,
                            subsampling: grayscale ? TJSAMP_GRAY : TJSAMP_420, quality: quality,
                            progressive: progressive)
    }

    /// Interleaved CMYK samples, (H, W, 4), as a YCCK JPEG with Adobe's APP14 marker (TurboJPEG writes it for CMYK
    /// input); by Adobe's convention the samples are inverted: 255 means no ink.
    public static func cmykJPEG(width: Int, height: Int, invertedCMYK: [UInt8], quality: Int = 90) throws -> [UInt8] {
        guard width > 0, height > 0, invertedCMYK.count == width * height * 4 else {
            throw AlexNetError("ImageEncoder.cmykJPEG: \(invertedCMYK.count) samples for a \(width) × \(height) CMYK image (needs \(width * height * 4))")
        }
        return try compress(invertedCMYK, width: width, height: height, format: TJPF_CMYK, subsampling: TJSAMP_444,
                            quality: quality, progressive: false)
    }

    /// An RGB image as a CMYK JPEG (see `cmykJPEG(width:height:invertedCMYK:)`), with the simple conversion
    /// K = 1 − max(R, G, B), C = (1 − R − K) / (1 − K), …, stored inverted: C' = R / max, K' = max, so that
    /// R = C'·K' recovers the source up to rounding and JPEG loss.
    public static func cmykJPEG(_ image: DecodedImage, quality: Int = 90) throws -> [UInt8] {
        try checkImage(image)
        var cmyk = [UInt8](repeating: 0, count: image.width * image.height * 4)   // (H, W, 4) inverted CMYK
        for p in 0..<(image.width * image.height) {
            let r = Int(image.pixels[3 * p]), g = Int(image.pixels[3 * p + 1]), b = Int(image.pixels[3 * p + 2])
            let k = max(r, g, b)
            if k > 0 {
                cmyk[4 * p] = UInt8((r * 255 + k / 2) / k)
                cmyk[4 * p + 1] = UInt8((g * 255 + k / 2) / k)
                cmyk[4 * p + 2] = UInt8((b * 255 + k / 2) / k)
            }
            cmyk[4 * p + 3] = UInt8(k)
        }
        return try cmykJPEG(width: image.width, height: image.height, invertedCMYK: cmyk, quality: quality)
    }

    /// A PNG of `channels` (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) samples of `bitDepth` (8 or 16; 16-bit samples
    /// big-endian, two bytes each) per pixel, row-major (H, W, channels). With `palette` (RGB triples, up to 256) the
    /// PNG is indexed: channels 1, `pixels` are indices, `paletteAlpha` optional tRNS entries. `interlaced`: Adam7.
    public static func png(width: Int, height: Int, channels: Int, bitDepth: Int = 8, pixels: [UInt8],
                           palette: [UInt8]? = nil, paletteAlpha: [UInt8]? = nil,
                           interlaced: Bool = false) throws -> [UInt8] {
        let bytesPerSample = bitDepth / 8
        guard width > 0, height > 0, (1...4).contains(channels), bitDepth == 8 || bitDepth == 16,
              palette == nil || (channels == 1 && bitDepth == 8) else {
            throw AlexNetError("ImageEncoder.png: unsupported \(width) × \(height), \(channels) channels, \(bitDepth)-bit\(palette == nil ? "" : " palette") image")
        }
        let rowBytes = width * channels * bytesPerSample
        guard pixels.count == height * rowBytes else {
            throw AlexNetError("ImageEncoder.png: \(pixels.count) bytes for a \(width) × \(height) × \(channels) \(bitDepth)-bit image (needs \(height * rowBytes))")
        }
        let colorType: Int32
        if palette != nil {
            colorType = PNG_COLOR_TYPE_PALETTE
        } else {
            colorType = [PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA][channels - 1]
        }
        var writer = shim_png_writer()
        defer { free(writer.data) }
        let palette = palette ?? [], alphas = paletteAlpha ?? []
        let status = shim_png_write(&writer, png_uint_32(width), png_uint_32(height), Int32(bitDepth), colorType,
                                    interlaced ? 1 : 0, pixels, rowBytes, palette, Int32(palette.count / 3),
                                    alphas.isEmpty ? nil : alphas, Int32(alphas.count))
        guard status == 0, let data = writer.data else {
            let reason = withUnsafePointer(to: &writer) { String(cString: shim_png_writer_message($0)) }
            throw AlexNetError("ImageEncoder.png: libpng failed: \(reason)")
        }
        return Array(UnsafeBufferPointer(start: data, count: writer.size))
    }

    static func checkImage(_ image: DecodedImage) throws {
        guard image.width > 0, image.height > 0, image.pixels.count == image.width * image.height * 3 else {
            throw AlexNetError("ImageEncoder: a \(image.width) × \(image.height) image needs \(image.width * image.height * 3) RGB bytes, not \(image.pixels.count)")
        }
    }

    static func compress(_ pixels: [UInt8], width: Int, height: Int, format: TJPF, subsampling: TJSAMP, quality: Int,
                         progressive: Bool) throws -> [UInt8] {
        guard (1...100).contains(quality) else { throw AlexNetError("ImageEncoder.jpeg: quality \(quality) is not in 1...100") }
        guard let handle = tjInitCompress() else { throw AlexNetError("ImageEncoder.jpeg: cannot start TurboJPEG (out of memory)") }
        defer { tjDestroy(handle) }
        var output: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        defer { tjFree(output) }
        let flags = TJFLAG_ACCURATEDCT | (progressive ? TJFLAG_PROGRESSIVE : 0)
        let status = tjCompress2(handle, pixels, Int32(width), 0, Int32(height), Int32(format.rawValue), &output, &size,
                                 Int32(subsampling.rawValue), Int32(quality), flags)
        guard status == 0, let output else {
            let reason = tjGetErrorStr2(handle).map { String(cString: $0) } ?? "unknown error"
            throw AlexNetError("ImageEncoder.jpeg: TurboJPEG failed: \(reason)")
        }
        return Array(UnsafeBufferPointer(start: output, count: Int(size)))
    }
}
