// Fully connected layer on (features, N): against plain loops and central differences, with an uneven tower split.
import AlexNet
import XCTest

/// A fully connected layer over Swift arrays: forward, and backward as (dx summed over the parts, dW, db).
struct FullyConnectedHarness {
    let layer: FullyConnected
    let batch: Int

    func forward(_ x: [Float], _ w: [Float], _ b: [Float]) -> [Float] {
        var y = [Float](repeating: 0, count: layer.outputs * batch)
        y.withUnsafeMutableBufferPointer { layer.forward(input: x, batch: batch, weight: w, bias: b, output: $0.baseAddress!) }
        return y
    }

    func backward(_ x: [Float], _ w: [Float], _ dy: [Float]) -> ([Float], [Float], [Float]) {
        var dw = [Float](repeating: 0, count: layer.weightCount), db = [Float](repeating: 0, count: layer.outputs)
        var parts = [Float](repeating: 0, count: layer.parts * layer.inputs * batch)
        let n = layer.inputs * batch
        dw.withUnsafeMutableBufferPointer { wp in db.withUnsafeMutableBufferPointer { bp in parts.withUnsafeMutableBufferPointer { pp in
            layer.backward(input: x, batch: batch, weight: w, outputGradient: dy, weightGradient: wp.baseAddress!,
                           biasGradient: bp.baseAddress!, inputGradients: (0..<layer.parts).map { pp.baseAddress! + $0 * n })
        } } }
        return ((0..<n).map { i in (0..<layer.parts).reduce(0) { $0 + parts[$1 * n + i] } }, dw, db)
    }
}

final class FullyConnectedTests: XCTestCase {
    let layer = FullyConnected(inputs: 11, partRows: [3, 4])   // e.g. fc8 with 7 classes: 3 + 4
    let batch = 5
    var harness: FullyConnectedHarness { FullyConnectedHarness(layer: layer, batch: batch) }

    func forward(_ x: [Float], _ w: [Float], _ b: [Float]) -> [Float] { harness.forward(x, w, b) }
    func backward(_ x: [Float], _ w: [Float], _ dy: [Float]) -> ([Float], [Float], [Float]) { harness.backward(x, w, dy) }

    func testForwardMatchesPlainLoops() {
        let x = randomFloats(11 * batch, seed: 1), w = randomFloats(layer.weightCount, seed: 2), b = randomFloats(7, seed: 3)
        XCTAssertLessThan(relativeError(forward(x, w, b), Naive.fullyConnected(x, inputs: 11, batch: batch, weight: w, bias: b, outputs: 7)), 1e-6)
    }

    func testGradients() {
        let x = randomFloats(11 * batch, seed: 1), w = randomFloats(layer.weightCount, seed: 2), b = randomFloats(7, seed: 3)
        let out = layer.outputs * batch
        GradientCheck().check("fc input", input: x, outputCount: out, forward: { self.forward($0, w, b) }) { self.backward($0, w, $1).0 }
        GradientCheck().check("fc weight", input: w, outputCount: out, forward: { self.forward(x, $0, b) }) { self.backward(x, $0, $1).1 }
        GradientCheck().check("fc bias", input: b, outputCount: out, forward: { self.forward(x, w, $0) }) { self.backward(x, w, $1).2 }
    }
}
