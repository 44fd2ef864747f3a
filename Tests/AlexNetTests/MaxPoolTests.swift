// Overlapping max-pool 3/2: against plain loops, the paper's sizes, and central differences.
import AlexNet
import XCTest

final class MaxPoolTests: XCTestCase {
    let pool = MaxPool(size: 3, stride: 2, inputHeight: 13, inputWidth: 13)
    let planes = 3

    func forward(_ x: [Float]) -> (y: [Float], argmax: [Int32]) {
        var y = [Float](repeating: 0, count: planes * 36), idx = [Int32](repeating: 0, count: planes * 36)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in idx.withUnsafeMutableBufferPointer { ip in
            pool.forward(input: xp.baseAddress!, planes: planes, output: yp.baseAddress!, argmax: ip.baseAddress!)
        } } }
        return (y, idx)
    }

    func testSizesOfThePaper() {
        XCTAssertEqual(MaxPool(inputHeight: 55, inputWidth: 55).outputHeight, 27)
        XCTAssertEqual(MaxPool(inputHeight: 27, inputWidth: 27).outputHeight, 13)
        XCTAssertEqual(MaxPool(inputHeight: 13, inputWidth: 13).outputWidth, 6)
    }

    func testMatchesPlainLoops() {
        let x = randomFloats(planes * 169, seed: 3)
        XCTAssertEqual(forward(x).y, Naive.maxPool(x, planes: planes, height: 13, width: 13, size: 3, stride: 2))
    }

    func testGradient() {
        // Distinct values far apart compared with the step, so no window changes its winner.
        let x = (0..<(planes * 169)).map { Float(($0 * 7919) % 1013) * 0.1 }
        GradientCheck(step: 1e-2).check("max-pool", input: x, outputCount: planes * 36, forward: { self.forward($0).y }) { x, dy in
            let idx = self.forward(x).argmax
            var dx = [Float](repeating: 0, count: x.count)
            dy.withUnsafeBufferPointer { gp in idx.withUnsafeBufferPointer { ip in dx.withUnsafeMutableBufferPointer { dp in
                self.pool.backward(outputGradient: gp.baseAddress!, argmax: ip.baseAddress!, planes: self.planes, inputGradient: dp.baseAddress!)
            } } }
            return dx
        }
    }

    /// The fused ReLU mask equals pool backward followed by ReLU backward on the pool's (ReLU-output) input.
    func testBackwardWithReLUInputEqualsSeparatePasses() {
        let x = randomFloats(planes * 169, seed: 9).map { max($0, 0) }
        let idx = forward(x).argmax
        let dy = randomFloats(planes * 36, seed: 10)
        var fused = [Float](repeating: 0, count: x.count), separate = fused
        fused.withUnsafeMutableBufferPointer {
            pool.backward(outputGradient: dy, argmax: idx, planes: planes, inputGradient: $0.baseAddress!, reluInput: x)
        }
        separate.withUnsafeMutableBufferPointer {
            pool.backward(outputGradient: dy, argmax: idx, planes: planes, inputGradient: $0.baseAddress!)
            ReLU.backward(output: x, gradient: $0.baseAddress!, count: $0.count)
        }
        XCTAssertEqual(fused, separate)
    }
}
