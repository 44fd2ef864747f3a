// Inverted dropout: the mask's rate and scale, determinism by counter, tower slices, and the gradient with a fixed mask.
import AlexNet
import XCTest

final class DropoutTests: XCTestCase {
    func mask(rows: Int, batch: Int, firstUnit: Int = 0, step: Int = 3, p: Float = 0.5) -> [Float] {
        var m = [Float](repeating: -1, count: rows * batch)
        m.withUnsafeMutableBufferPointer {
            Dropout(probability: p).makeMask(rows: rows, batch: batch, firstUnit: firstUnit, firstSample: 0, seed: 9,
                                             step: step, layer: 6, mask: $0.baseAddress!)
        }
        return m
    }

    func testMaskRateScaleAndDeterminism() {
        let m = mask(rows: 200, batch: 50)
        XCTAssertTrue(m.allSatisfy { $0 == 0 || $0 == 2 })
        let kept = Double(m.filter { $0 > 0 }.count) / Double(m.count)
        XCTAssertEqual(kept, 0.5, accuracy: 0.02)
        XCTAssertEqual(m, mask(rows: 200, batch: 50))
        XCTAssertNotEqual(m, mask(rows: 200, batch: 50, step: 4))
        // A tower that owns units [100, 200) draws exactly the whole network's bits for them.
        XCTAssertEqual(Array(m[(100 * 50)...]), mask(rows: 100, batch: 50, firstUnit: 100))
    }

    func testGradientWithFixedMask() {
        let m = mask(rows: 10, batch: 4, p: 0.3)
        func forward(_ x: [Float]) -> [Float] {
            var y = x
            m.withUnsafeBufferPointer { mp in y.withUnsafeMutableBufferPointer { Dropout.apply(mask: mp.baseAddress!, to: $0.baseAddress!, count: 40) } }
            return y
        }
        let x = randomFloats(40, seed: 8)
        XCTAssertEqual(forward(x), zip(x, m).map { $0 * $1 })
        GradientCheck().check("dropout", input: x, outputCount: 40, forward: forward) { _, dy in forward(dy) }
    }
}
