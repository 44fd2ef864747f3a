// Softmax cross-entropy on (classes, N): loss against the plain formula, gradient against central differences, top-k.
import AlexNet
import XCTest

final class SoftmaxCrossEntropyTests: XCTestCase {
    let classes = 7, batch = 5
    let labels: [Int32] = [0, 6, 3, 3, 1]

    func loss(_ z: [Float], gradient: UnsafeMutablePointer<Float>? = nil) -> Double {
        SoftmaxCrossEntropy.forwardBackward(logits: z, classes: classes, batch: batch, labels: labels,
                                            normaliser: batch, logitsGradient: gradient) / Double(batch)
    }

    func testLossAndGradient() {
        let z = randomFloats(classes * batch, seed: 11, scale: 3)
        XCTAssertEqual(loss(z), Naive.crossEntropy(z, classes: classes, batch: batch, labels: labels), accuracy: 1e-5)
        GradientCheck(step: 1e-2, threshold: 1e-3).check("softmax cross-entropy", input: z, outputCount: 1,
                                                         forward: { [Float(self.loss($0))] }) { z, dy in
            var g = [Float](repeating: 0, count: z.count)
            g.withUnsafeMutableBufferPointer { _ = self.loss(z, gradient: $0.baseAddress!) }
            return g.map { $0 * dy[0] }
        }
    }

    func testTopK() {
        // image 0: logits 0..6 increasing with the class, so class 6 is first and class 0 last.
        let z: [Float] = (0..<classes).map { Float($0) }
        XCTAssertTrue(SoftmaxCrossEntropy.inTopK(logits: z, classes: classes, batch: 1, image: 0, label: 6, k: 1))
        XCTAssertFalse(SoftmaxCrossEntropy.inTopK(logits: z, classes: classes, batch: 1, image: 0, label: 5, k: 1))
        XCTAssertTrue(SoftmaxCrossEntropy.inTopK(logits: z, classes: classes, batch: 1, image: 0, label: 2, k: 5))
        XCTAssertFalse(SoftmaxCrossEntropy.inTopK(logits: z, classes: classes, batch: 1, image: 0, label: 1, k: 5))
    }

    /// Ties rank by class index (the lower first, a fixed rule that every layout and rank applies alike), in the
    /// (classes, N) layout of a batch: image 1 of 2 has all scores equal, image 0 a tie between classes 2 and 5 on top.
    func testTopKTiesAndTheBatchLayout() {
        let batch = 2
        var z = [Float](repeating: 0, count: classes * batch)
        for c in 0..<classes { z[c * batch] = Float(c % 3); z[c * batch + 1] = 0.5 }
        z[5 * batch] = 2   // image 0: classes 2 and 5 both score 2, the rest less
        func top(_ label: Int, _ k: Int, image: Int) -> Bool {
            SoftmaxCrossEntropy.inTopK(logits: z, classes: classes, batch: batch, image: image, label: label, k: k)
        }
        XCTAssertTrue(top(2, 1, image: 0))
        XCTAssertFalse(top(5, 1, image: 0))
        XCTAssertTrue(top(5, 2, image: 0))
        XCTAssertTrue(top(0, 1, image: 1))
        XCTAssertFalse(top(1, 1, image: 1))
        XCTAssertTrue(top(4, 5, image: 1))
        XCTAssertFalse(top(5, 5, image: 1))
        XCTAssertTrue(top(classes - 1, classes, image: 1))
    }
}

final class SoftmaxProbabilityTests: XCTestCase {
    /// addProbabilities adds each column's softmax: columns sum to 1 per call, and match exp(z)/Σexp(z).
    func testAddsEachImagesSoftmax() {
        let z: [Float] = [1, 0, 2, 5, 3, -1]   // 3 classes × 2 images, (classes, N)
        var scores = [Float](repeating: 1, count: 6)
        scores.withUnsafeMutableBufferPointer { SoftmaxCrossEntropy.addProbabilities(logits: z, classes: 3, batch: 2, to: $0.baseAddress!) }
        for n in 0..<2 {
            let e = (0..<3).map { expf(z[$0 * 2 + n]) }, total = e.reduce(0, +)
            for c in 0..<3 { XCTAssertEqual(scores[c * 2 + n], 1 + e[c] / total, accuracy: 1e-6) }
        }
    }
}
