// LRN: the fast blocked kernel against the plain formula (forward and backward, many shapes, in place), and its
// backward pass against central differences.
import AlexNet
import XCTest

final class LocalResponseNormTests: XCTestCase {
    // Two towers of 7 channels, 2 images of 5×5; large values so that the normaliser really varies.
    let channels = 14, group = 7, pixels = 2 * 25
    let lrn = LocalResponseNorm(size: 5, alpha: 1e-2, beta: 0.75, k: 2)

    /// (channels, channels a group, pixels): groups of 1 to 13 channels, windows wider than the group, pixel counts
    /// below, at, and across the kernel's block of 1024 pixels, with a partial last block.
    let shapes = [(14, 7, 50), (26, 13, 1100), (15, 5, 1025), (3, 1, 40), (11, 11, 2051), (4, 2, 1024), (9, 3, 1)]
    /// The paper's size 5 and β = 0.75 (the fast paths), other sizes (an even one's window is size + 1 wide), other β.
    let settings = [LocalResponseNorm(size: 5, alpha: 1e-2, beta: 0.75, k: 2), LocalResponseNorm(size: 3, alpha: 1e-3, beta: 0.6, k: 1),
                    LocalResponseNorm(size: 4, alpha: 2e-2, beta: 0.75, k: 2), LocalResponseNorm(size: 1, alpha: 1e-2, beta: 0.75, k: 2),
                    LocalResponseNorm(size: 7, alpha: 5e-3, beta: 0.9, k: 1.5)]

    func forward(_ x: [Float], _ l: LocalResponseNorm, channels: Int? = nil, group: Int? = nil, pixels: Int? = nil) -> [Float] {
        var y = [Float](repeating: .nan, count: x.count)
        y.withUnsafeMutableBufferPointer { yp in
            l.forward(input: x, channels: channels ?? self.channels, groupChannels: group ?? self.group,
                      pixels: pixels ?? self.pixels, output: yp.baseAddress!)
        }
        return y
    }

    /// dx from the fast backward pass, into a separate buffer or (`inPlace`) over a copy of dy.
    func backward(_ x: [Float], _ dy: [Float], _ l: LocalResponseNorm, channels: Int? = nil, group: Int? = nil,
                  pixels: Int? = nil, throughReLU: Bool = false, inPlace: Bool = false) -> [Float] {
        let (channels, group, pixels) = (channels ?? self.channels, group ?? self.group, pixels ?? self.pixels)
        var dx = inPlace ? dy : [Float](repeating: .nan, count: x.count)
        dx.withUnsafeMutableBufferPointer { dp in
            if inPlace {
                l.backward(input: x, outputGradient: dp.baseAddress!, channels: channels, groupChannels: group,
                           pixels: pixels, inputGradient: dp.baseAddress!, throughReLU: throughReLU)
            } else {
                l.backward(input: x, outputGradient: dy, channels: channels, groupChannels: group,
                           pixels: pixels, inputGradient: dp.baseAddress!, throughReLU: throughReLU)
            }
        }
        return dx
    }

    func testMatchesPaperFormulaWithWindowInsideTower() {
        let x = randomFloats(channels * pixels, seed: 1, scale: 5)
        for l in [lrn, LocalResponseNorm(size: 3, alpha: 1e-3, beta: 0.6, k: 1)] {
            let fast = forward(x, l)
            let reference = Naive.lrn(x, channels: channels, groupChannels: group, pixels: pixels, l)
            XCTAssertLessThan(relativeError(fast, reference), 1e-6)
        }
        // The window must not cross the tower boundary: channel 6's output ignores channel 7.
        var x2 = x
        for q in 0..<pixels { x2[7 * pixels + q] *= 10 }
        let a = forward(x, lrn), b = forward(x2, lrn)
        XCTAssertEqual(Array(a[(6 * pixels)..<(7 * pixels)]), Array(b[(6 * pixels)..<(7 * pixels)]))
        XCTAssertNotEqual(Array(a[(8 * pixels)..<(9 * pixels)]), Array(b[(8 * pixels)..<(9 * pixels)]))
    }

    /// Forward and backward (plain and through ReLU) of every setting on every shape equal the formulas computed in
    /// Double, element for element within float rounding.
    func testForwardAndBackwardMatchFormulaOnManyShapes() {
        for (shape, (channels, group, pixels)) in shapes.enumerated() {
            for (setting, l) in settings.enumerated() {
                let label = "size \(l.size), β \(l.beta), \(channels) channels in groups of \(group), \(pixels) pixels"
                let x = randomFloats(channels * pixels, seed: UInt64(10 + shape), scale: 5)
                let dy = randomFloats(x.count, seed: UInt64(30 + setting))
                let y = forward(x, l, channels: channels, group: group, pixels: pixels)
                let reference = Naive.lrn(x, channels: channels, groupChannels: group, pixels: pixels, l)
                XCTAssertLessThan(maxElementError(y, reference), 1e-6, "forward, " + label)
                let relu = x.map { max($0, 0) }
                for (input, throughReLU) in [(x, false), (relu, true)] {
                    let fast = backward(input, dy, l, channels: channels, group: group, pixels: pixels, throughReLU: throughReLU)
                    let naive = Naive.lrnBackward(input, dy, channels: channels, groupChannels: group, pixels: pixels, l,
                                                  throughReLU: throughReLU)
                    // Float rounding of dy·s^−β and the cross term, which nearly cancel in places: up to 2.4e-5 seen.
                    XCTAssertLessThan(maxElementError(fast, naive), 1e-4, "backward (through ReLU: \(throughReLU)), " + label)
                }
            }
        }
    }

    /// The model runs backward with the input gradient over the output gradient: the result is the same, bit for bit.
    func testBackwardInPlaceEqualsSeparateBuffers() {
        for (shape, (channels, group, pixels)) in shapes.enumerated() {
            for l in settings {
                let x = randomFloats(channels * pixels, seed: UInt64(50 + shape), scale: 5).map { max($0, -1) }
                let dy = randomFloats(x.count, seed: UInt64(70 + shape))
                for throughReLU in [false, true] {
                    let separate = backward(x, dy, l, channels: channels, group: group, pixels: pixels, throughReLU: throughReLU)
                    let inPlace = backward(x, dy, l, channels: channels, group: group, pixels: pixels, throughReLU: throughReLU,
                                           inPlace: true)
                    XCTAssertEqual(inPlace, separate, "size \(l.size), \(channels) channels in groups of \(group), \(pixels) pixels")
                }
            }
        }
    }

    func testAlphaIsNotDividedBySize() {
        // One channel on its own: b = a / (k + α a²)^β exactly.
        let l = LocalResponseNorm(size: 5, alpha: 0.1, beta: 0.75, k: 2)
        var y: Float = 0
        var a: Float = 3
        l.forward(input: &a, channels: 1, groupChannels: 1, pixels: 1, output: &y)
        XCTAssertEqual(y, 3 / powf(2 + 0.1 * 9, 0.75), accuracy: 1e-6)
    }

    func testGradient() {
        for l in [lrn, LocalResponseNorm(size: 3, alpha: 1e-2, beta: 0.6, k: 1)] {
            let x = randomFloats(channels * pixels, seed: 2, scale: 5)
            GradientCheck().check("LRN size \(l.size)", input: x, outputCount: x.count, forward: { self.forward($0, l) }) { x, dy in
                self.backward(x, dy, l)
            }
        }
    }

    /// The fused ReLU mask equals LRN backward followed by ReLU backward.
    func testBackwardThroughReLUEqualsSeparatePasses() {
        let x = randomFloats(channels * pixels, seed: 6, scale: 5).map { max($0, 0) }   // a ReLU's output
        let dy = randomFloats(x.count, seed: 7)
        var separate = backward(x, dy, lrn)
        ReLU.backward(output: x, gradient: &separate, count: separate.count)
        let fused = backward(x, dy, lrn, throughReLU: true)
        XCTAssertEqual(fused, separate)
        XCTAssertTrue(fused.contains(0) && fused.contains { $0 != 0 })
    }

    /// The largest |a − b| / max(|b|, 1e-3 · the largest |b|): every element within float rounding, not just on average.
    func maxElementError(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        let floor = 1e-3 * Double(b.map { abs($0) }.max() ?? 0)
        return zip(a, b).reduce(0.0) { worst, p in
            max(worst, abs(Double(p.0) - Double(p.1)) / max(abs(Double(p.1)), floor, .leastNormalMagnitude))
        }
    }
}
