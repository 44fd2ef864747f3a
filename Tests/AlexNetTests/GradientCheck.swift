// A Caffe-style central-difference gradient check: L = Σ r·f(x) for a fixed random r, dL/dx from the layer's
// backward pass against (L(x + h) − L(x − h)) / 2h, element by element.
import XCTest

struct GradientCheck {
    var step: Float = 1e-2
    var threshold: Double = 1e-2
    var maxChecked = 400

    /// `forward(x)` → y; `backward(x, dy)` → dx. Checks dx at up to `maxChecked` indices spread over x.
    func check(_ name: String, input x: [Float], outputCount: Int,
               forward: ([Float]) -> [Float], backward: ([Float], [Float]) -> [Float],
               file: StaticString = #filePath, line: UInt = #line) {
        let r = randomFloats(outputCount, seed: 4242)
        let analytic = backward(x, r)
        XCTAssertEqual(analytic.count, x.count, "\(name): gradient size", file: file, line: line)
        func loss(_ v: [Float]) -> Double { zip(forward(v), r).reduce(0) { $0 + Double($1.0) * Double($1.1) } }
        let stride = max(1, x.count / maxChecked)
        var worst = 0.0, checked = 0
        for i in Swift.stride(from: 0, to: x.count, by: stride) {
            var plus = x, minus = x
            plus[i] += step; minus[i] -= step
            let numeric = (loss(plus) - loss(minus)) / Double(2 * step)
            let scale = max(abs(numeric), abs(Double(analytic[i])), 1)
            let error = abs(numeric - Double(analytic[i])) / scale
            worst = max(worst, error)
            checked += 1
            if error > threshold {
                XCTFail("\(name): d/dx[\(i)] analytic \(analytic[i]) vs numeric \(numeric)", file: file, line: line)
                return
            }
        }
        XCTAssertGreaterThan(checked, 0, file: file, line: line)
    }
}
