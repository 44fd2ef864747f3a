// LRN: the fast blocked kernel against the plain formula, and its backward pass against central differences.
import AlexNet
import XCTest

final class LocalResponseNormTests: XCTestCase {
    // Two towers of 7 channels, 2 images of 5×5; large values so that the normaliser really varies.
    let channels = 14, group = 7, pixels = 2 * 25
    let lrn = LocalResponseNorm(size: 5, alpha: 1e-2, beta: 0.75, k: 2)

    func forward(_ x: [Float], _ l: LocalResponseNorm) -> (y: [Float], scale: [Float]) {
        var y = [Float](repeating: 0, count: x.count), s = y
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in s.withUnsafeMutableBufferPointer { sp in
            l.forward(input: xp.baseAddress!, channels: channels, groupChannels: group, pixels: pixels,
                      scale: sp.baseAddress!, output: yp.baseAddress!)
        } } }
        return (y, s)
    }

    func testMatchesPaperFormulaWithWindowInsideTower() {
        let x = randomFloats(channels * pixels, seed: 1, scale: 5)
        for l in [lrn, LocalResponseNorm(size: 3, alpha: 1e-3, beta: 0.6, k: 1)] {
            let fast = forward(x, l).y
            let reference = Naive.lrn(x, channels: channels, groupChannels: group, pixels: pixels, l)
            XCTAssertLessThan(relativeError(fast, reference), 1e-6)
        }
        // The window must not cross the tower boundary: channel 6's output ignores channel 7.
        var x2 = x
        for q in 0..<pixels { x2[7 * pixels + q] *= 10 }
        let a = forward(x, lrn).y, b = forward(x2, lrn).y
        XCTAssertEqual(Array(a[(6 * pixels)..<(7 * pixels)]), Array(b[(6 * pixels)..<(7 * pixels)]))
        XCTAssertNotEqual(Array(a[(8 * pixels)..<(9 * pixels)]), Array(b[(8 * pixels)..<(9 * pixels)]))
    }

    func testAlphaIsNotDividedBySize() {
        // One channel on its own: b = a / (k + α a²)^β exactly.
        let l = LocalResponseNorm(size: 5, alpha: 0.1, beta: 0.75, k: 2)
        var y: Float = 0, s: Float = 0
        var a: Float = 3
        l.forward(input: &a, channels: 1, groupChannels: 1, pixels: 1, scale: &s, output: &y)
        XCTAssertEqual(y, 3 / powf(2 + 0.1 * 9, 0.75), accuracy: 1e-6)
    }

    func testGradient() {
        let x = randomFloats(channels * pixels, seed: 2, scale: 5)
        GradientCheck().check("LRN", input: x, outputCount: x.count, forward: { self.forward($0, self.lrn).y }) { x, dy in
            let (y, s) = self.forward(x, self.lrn)
            var dx = [Float](repeating: 0, count: x.count)
            x.withUnsafeBufferPointer { xp in y.withUnsafeBufferPointer { yp in s.withUnsafeBufferPointer { sp in
                dy.withUnsafeBufferPointer { gp in dx.withUnsafeMutableBufferPointer { dp in
                    self.lrn.backward(input: xp.baseAddress!, scale: sp.baseAddress!, output: yp.baseAddress!,
                                      outputGradient: gp.baseAddress!, channels: self.channels, groupChannels: self.group,
                                      pixels: self.pixels, inputGradient: dp.baseAddress!)
                } }
            } } }
            return dx
        }
    }

    /// The fused ReLU mask equals LRN backward followed by ReLU backward.
    func testBackwardThroughReLUEqualsSeparatePasses() {
        let x = randomFloats(channels * pixels, seed: 6, scale: 5).map { max($0, 0) }   // a ReLU's output
        let dy = randomFloats(x.count, seed: 7)
        let (y, s) = forward(x, lrn)
        var separate = [Float](repeating: 0, count: x.count), fused = separate
        for (throughReLU, out) in [(false, 0), (true, 1)] {
            var dx = [Float](repeating: 0, count: x.count)
            dx.withUnsafeMutableBufferPointer { dp in
                lrn.backward(input: x, scale: s, output: y, outputGradient: dy, channels: channels, groupChannels: group,
                             pixels: pixels, inputGradient: dp.baseAddress!, throughReLU: throughReLU)
                if !throughReLU { ReLU.backward(output: x, gradient: dp.baseAddress!, count: dp.count) }
            }
            if out == 0 { separate = dx } else { fused = dx }
        }
        XCTAssertEqual(fused, separate)
        XCTAssertTrue(fused.contains(0) && fused.contains { $0 != 0 })
    }
}
