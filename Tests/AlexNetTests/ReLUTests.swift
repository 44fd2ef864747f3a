// ReLU in place: forward clamps, backward masks by the output.
import AlexNet
import XCTest

final class ReLUTests: XCTestCase {
    func testForwardAndGradient() {
        let x = randomFloats(500, seed: 5).map { abs($0) < 0.05 ? $0 + 0.1 : $0 }   // keep away from the kink
        func forward(_ v: [Float]) -> [Float] {
            var y = v
            y.withUnsafeMutableBufferPointer { ReLU.forward($0.baseAddress!, count: $0.count) }
            return y
        }
        XCTAssertEqual(forward(x), x.map { max(0, $0) })
        GradientCheck(step: 1e-3).check("ReLU", input: x, outputCount: x.count, forward: forward) { x, dy in
            let y = forward(x)
            var g = dy
            y.withUnsafeBufferPointer { yp in g.withUnsafeMutableBufferPointer { gp in
                ReLU.backward(output: yp.baseAddress!, gradient: gp.baseAddress!, count: gp.count)
            } }
            return g
        }
    }
}
