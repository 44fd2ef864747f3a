// The embedded dataset's generator: its images are a fixed function of (seed, split, index); the generator draws the
// bytes of the plain per-pixel definition (kept here as the reference), whatever it does to be faster.
import AlexNet
import Foundation
import XCTest

/// The generator as first written, one pixel at a time: the definition of the embedded images.
enum ReferenceShapes {
    static func inside(_ k: Int, _ u: Float, _ v: Float) -> Bool {
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

    static func pixels(seed: UInt64, heldOut: Bool, index: Int) -> [UInt8] {
        let salt: UInt64 = heldOut ? 0x5EED_0001 : 0x5EED_0000
        func draw(_ what: UInt64) -> Float { CounterRandom.uniform(seed: seed, .embeddedImage, salt, UInt64(index), what) }
        let k = index % 10, side = 256
        var out = [UInt8](repeating: 0, count: side * side * 3)
        let scale = 40 + 70 * draw(1)
        let cx = scale + (Float(side) - 2 * scale) * draw(2)
        let cy = scale + (Float(side) - 2 * scale) * draw(3)
        var background = [Float](repeating: 0, count: 3), foreground = [Float](repeating: 0, count: 3)
        for c in 0..<3 {
            background[c] = 255 * draw(10 + UInt64(c))
            let shift = 70 + 120 * draw(20 + UInt64(c))
            foreground[c] = background[c] > 127 ? background[c] - shift : background[c] + shift
        }
        let noise = 10 + 30 * draw(4)
        let inverse = 1 / scale
        let noiseKey = CounterRandom.bits(seed: seed, .embeddedImage, salt ^ 0xFFFF, UInt64(index))
        for y in 0..<side {
            let v = (Float(y) - cy) * inverse
            for x in 0..<side {
                let u = (Float(x) - cx) * inverse
                let fg = inside(k, u, v)
                let p = (y * side + x) * 3
                let bits = CounterRandom.mix(noiseKey &+ UInt64(y * side + x))
                for c in 0..<3 {
                    let jitter = (Float((bits >> (UInt64(c) * 16)) & 0xFFFF) / 65535 - 0.5) * 2 * noise
                    let value = (fg ? foreground[c] : background[c]) + jitter
                    out[p + c] = UInt8(max(0, min(255, value)))
                }
            }
        }
        return out
    }
}

final class EmbeddedShapesTests: XCTestCase {
    /// Acceptance: every class, both splits, two seeds and indices up to the end of the training set give the
    /// reference's bytes (so checkpoints, loss curves and the dataset fingerprint keep their meaning).
    func testGeneratorDrawsTheReferenceBytes() {
        let indices = Array(0..<30) + [997, 4_321, 9_998, 9_999]
        var out = [UInt8](repeating: 0, count: 256 * 256 * 3)
        for seed: UInt64 in [1, 12_345] {
            for heldOut in [false, true] {
                let set = EmbeddedShapes(seed: seed, heldOut: heldOut)
                for i in indices {
                    out.withUnsafeMutableBufferPointer { set.pixels(i, into: $0.baseAddress!) }
                    let expected = ReferenceShapes.pixels(seed: seed, heldOut: heldOut, index: i)
                    guard out != expected else { continue }
                    let first = zip(out, expected).enumerated().first { $0.element.0 != $0.element.1 }!.offset
                    XCTFail("seed \(seed) \(heldOut ? "held-out" : "training") image \(i) (class \(i % 10)): byte \(first) (pixel \(first / 3), channel \(first % 3)) is \(out[first]), the reference has \(expected[first])")
                }
            }
        }
    }

    /// A crop's window (what the batch assembler asks for) holds the same bytes as the whole image there, and the
    /// generator writes nothing outside it.
    func testACropWindowHasTheWholeImagesBytes() {
        let set = EmbeddedShapes(seed: 1, heldOut: false), side = EmbeddedShapes.side, sentinel: UInt8 = 0xA5
        var whole = [UInt8](repeating: 0, count: side * side * 3)
        for (i, (top, left)) in [(0, 0), (29, 29), (7, 18)].enumerated() {
            let rows = top..<(top + 227), columns = left..<(left + 227)
            var window = [UInt8](repeating: sentinel, count: side * side * 3)
            whole.withUnsafeMutableBufferPointer { set.pixels(i, into: $0.baseAddress!) }
            window.withUnsafeMutableBufferPointer { set.pixels(i, rows: rows, columns: columns, into: $0.baseAddress!) }
            for y in 0..<side {
                for x in 0..<side {
                    let inside = rows.contains(y) && columns.contains(x)
                    for c in 0..<3 {
                        let at = (y * side + x) * 3 + c
                        if window[at] != (inside ? whole[at] : sentinel) {
                            return XCTFail("image \(i), window at (\(top), \(left)): byte of pixel (\(y), \(x)) channel \(c) is \(window[at])")
                        }
                    }
                }
            }
        }
    }
}
