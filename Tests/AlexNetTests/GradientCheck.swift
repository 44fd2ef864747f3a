// A Caffe-style central-difference gradient check: L = Σ r·f(x) for a fixed random r, dL/dx from the layer's
// backward pass against (L(x + h) − L(x − h)) / 2h, element by element.
import AlexNet
import XCTest

struct GradientCheck {
    var step: Float = 1e-2
    var threshold: Double = 1e-2
    var maxChecked = 400

    /// The largest error |numeric − analytic| / max(|numeric|, |analytic|, 1) over the checked indices, where it
    /// occurred, and how many indices were checked.
    struct Report {
        var worst = 0.0, index = -1, analytic: Float = 0, numeric = 0.0, checked = 0
    }

    /// `forward(x)` → y; `backward(x, dy)` → dx. Measures dx at up to `maxChecked` indices spread over x.
    func measure(input x: [Float], outputCount: Int, forward: ([Float]) -> [Float],
                 backward: ([Float], [Float]) -> [Float]) -> Report {
        let r = randomFloats(outputCount, seed: 4242)
        let analytic = backward(x, r)
        precondition(analytic.count == x.count, "gradient size \(analytic.count) for \(x.count) inputs")
        func loss(_ v: [Float]) -> Double { zip(forward(v), r).reduce(0) { $0 + Double($1.0) * Double($1.1) } }
        let stride = max(1, x.count / maxChecked)
        var report = Report()
        for i in Swift.stride(from: 0, to: x.count, by: stride) {
            var plus = x, minus = x
            plus[i] += step; minus[i] -= step
            let numeric = (loss(plus) - loss(minus)) / Double(2 * step)
            let scale = max(abs(numeric), abs(Double(analytic[i])), 1)
            let error = abs(numeric - Double(analytic[i])) / scale
            if error > report.worst { report = Report(worst: error, index: i, analytic: analytic[i], numeric: numeric, checked: report.checked) }
            report.checked += 1
        }
        return report
    }

    /// Fails the test when the worst error exceeds `threshold`.
    func check(_ name: String, input x: [Float], outputCount: Int,
               forward: ([Float]) -> [Float], backward: ([Float], [Float]) -> [Float],
               file: StaticString = #filePath, line: UInt = #line) {
        let report = measure(input: x, outputCount: outputCount, forward: forward, backward: backward)
        XCTAssertGreaterThan(report.checked, 0, "\(name): nothing checked", file: file, line: line)
        if report.worst > threshold {
            XCTFail("\(name): d/dx[\(report.index)] analytic \(report.analytic) vs numeric \(report.numeric) "
                    + "(error \(report.worst) > \(threshold))", file: file, line: line)
        }
    }
}

/// The check itself must be able to fail: a backward pass that is wrong by a sign, a factor or a misplaced element
/// is rejected, on a layer whose gradients are far from the absolute floor of 1 in the error's denominator.
final class GradientCheckTests: XCTestCase {
    let layer = FullyConnected(inputs: 6, partRows: [2, 3])
    let batch = 4

    var harness: FullyConnectedHarness { FullyConnectedHarness(layer: layer, batch: batch) }

    func forward(_ x: [Float], _ w: [Float]) -> [Float] {
        harness.forward(x, w, [Float](repeating: 0.1, count: layer.outputs))
    }

    /// dW of L = Σ r·y (the layer's own backward).
    func weightGradient(_ x: [Float], _ w: [Float], _ dy: [Float]) -> [Float] { harness.backward(x, w, dy).1 }

    func testRejectsWrongBackwardPasses() {
        let x = randomFloats(6 * batch, seed: 21, scale: 2), w = randomFloats(layer.weightCount, seed: 22)
        let check = GradientCheck()
        func worst(_ backward: @escaping ([Float], [Float]) -> [Float]) -> Double {
            check.measure(input: w, outputCount: layer.outputs * batch, forward: { self.forward(x, $0) }, backward: backward).worst
        }
        let right = worst { self.weightGradient(x, $0, $1) }
        XCTAssertLessThan(right, check.threshold / 10, "the true gradient")
        let wrong: [(String, ([Float]) -> [Float])] = [
            ("sign flipped", { $0.map { -$0 } }),
            ("5% too large", { $0.map { $0 * 1.05 } }),
            ("halved (a missing factor 2)", { $0.map { $0 / 2 } }),
            ("two elements swapped", { var g = $0; g.swapAt(0, 1); return g }),
            ("zero", { $0.map { _ in 0 } }),
        ]
        for (name, corrupt) in wrong {
            XCTAssertGreaterThan(worst { corrupt(self.weightGradient(x, $0, $1)) }, check.threshold, name)
        }
    }
}
