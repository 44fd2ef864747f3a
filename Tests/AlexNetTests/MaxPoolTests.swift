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

/// The vectorised 3 × 3 stride-2 path (outputs at least eight wide: the paper's pool1 and pool2 planes) against the
/// plain window scan, values and winners, also with ties (ReLU zeros) and odd and even input widths.
final class MaxPoolVectorTests: XCTestCase {
    /// The first maximum of each window in row-major order, as the layer documents.
    func reference(_ x: [Float], planes: Int, height: Int, width: Int) -> (y: [Float], argmax: [Int32]) {
        let outH = (height - 3) / 2 + 1, outW = (width - 3) / 2 + 1
        var y: [Float] = [], idx: [Int32] = []
        for p in 0..<planes {
            for oh in 0..<outH {
                for ow in 0..<outW {
                    var best = -Float.infinity, at = -1
                    for i in 0..<3 { for j in 0..<3 {
                        let q = (2 * oh + i) * width + 2 * ow + j
                        if at < 0 || x[p * height * width + q] > best { best = x[p * height * width + q]; at = q }
                    } }
                    y.append(best); idx.append(Int32(at))
                }
            }
        }
        return (y, idx)
    }

    func testVectorPathMatchesTheWindowScan() {
        for (height, width) in [(55, 55), (27, 27), (19, 20), (21, 17)] {
            for ties in [false, true] {
                let planes = 5, count = planes * height * width
                // With ties: a ReLU's output, half zeros, and values on a coarse grid.
                let x = randomFloats(count, seed: UInt64(height * width)).map { ties ? max(0, ($0 * 4).rounded()) : $0 }
                let pool = MaxPool(inputHeight: height, inputWidth: width, threads: 2)
                var y = [Float](repeating: .nan, count: planes * pool.outputHeight * pool.outputWidth)
                var idx = [Int32](repeating: -1, count: y.count)
                y.withUnsafeMutableBufferPointer { yp in idx.withUnsafeMutableBufferPointer { ip in
                    pool.forward(input: x, planes: planes, output: yp.baseAddress!, argmax: ip.baseAddress!)
                } }
                let expected = reference(x, planes: planes, height: height, width: width)
                XCTAssertEqual(y, expected.y, "\(height)×\(width) ties \(ties)")
                XCTAssertEqual(idx, expected.argmax, "\(height)×\(width) ties \(ties)")
            }
        }
    }
}
