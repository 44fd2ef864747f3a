// Inverted dropout: the mask's rate and scale, determinism by counter, tower slices, and applying a mask.
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

    /// apply multiplies element by element by the mask (the model applies the same call to the gradient in
    /// backward). That the model's backward passes the gradient through the mask of its own forward pass is checked
    /// by central differences of the whole network with dropout on (NetworkGradientTests).
    func testApplyMultipliesByTheMask() {
        let m = mask(rows: 10, batch: 4, p: 0.3)
        XCTAssertTrue(m.contains(0) && m.contains { $0 > 1 }, "the mask should drop some units and scale the rest")
        let x = randomFloats(40, seed: 8)
        var y = x
        m.withUnsafeBufferPointer { mp in y.withUnsafeMutableBufferPointer { Dropout.apply(mask: mp.baseAddress!, to: $0.baseAddress!, count: 40) } }
        XCTAssertEqual(y, zip(x, m).map { $0 * $1 })
    }
}
