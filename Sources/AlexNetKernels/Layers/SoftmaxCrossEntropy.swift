// Softmax over all classes and cross-entropy against integer labels, on logits laid out (classes, N).

public enum SoftmaxCrossEntropy {
    /// Returns the summed loss over the N images (or over the images `lossOf` when given); writes
    /// dlogits = (softmax − onehot) / normaliser for all N. `normaliser` is the global batch size, so the loss and
    /// gradients are means over every rank's images.
    public static func forwardBackward(logits: UnsafePointer<Float>, classes: Int, batch: Int, labels: [Int32],
                                       normaliser: Int, logitsGradient: UnsafeMutablePointer<Float>?,
                                       lossOf counted: Range<Int>? = nil) -> Double {
        var total: Double = 0
        let counted = counted ?? 0..<batch
        for n in 0..<batch {
            var m = -Float.infinity
            for c in 0..<classes { m = max(m, logits[c * batch + n]) }
            var sum: Double = 0
            for c in 0..<classes { sum += Double(expf(logits[c * batch + n] - m)) }
            let label = Int(labels[n])
            if counted.contains(n) { total += (sum.logValue) - Double(logits[label * batch + n] - m) }
            if let g = logitsGradient {
                let inv = 1 / (Float(sum) * Float(normaliser))
                for c in 0..<classes {
                    let p = expf(logits[c * batch + n] - m) * inv
                    g[c * batch + n] = c == label ? p - 1 / Float(normaliser) : p
                }
            }
        }
        return total
    }

    /// scores (classes, N) += softmax of each image's logits (ten-crop evaluation averages views this way).
    public static func addProbabilities(logits: UnsafePointer<Float>, classes: Int, batch: Int,
                                        to scores: UnsafeMutablePointer<Float>) {
        for n in 0..<batch {
            var m = -Float.infinity
            for c in 0..<classes { m = max(m, logits[c * batch + n]) }
            var sum: Float = 0
            for c in 0..<classes { sum += expf(logits[c * batch + n] - m) }
            for c in 0..<classes { scores[c * batch + n] += expf(logits[c * batch + n] - m) / sum }
        }
    }

    /// Whether the label is among the `k` largest logits of image n (ties count against). A non-finite score anywhere
    /// in the image's row is a miss: NaN compares false with everything and would otherwise rank first.
    public static func inTopK(logits: UnsafePointer<Float>, classes: Int, batch: Int, image n: Int, label: Int, k: Int) -> Bool {
        let target = logits[label * batch + n]
        guard target.isFinite else { return false }
        var above = 0
        for c in 0..<classes where c != label {
            let v = logits[c * batch + n]
            guard v.isFinite else { return false }
            if v > target || (v == target && c < label) { above += 1 }
        }
        return above < k
    }
}

import Foundation
extension Double { @inline(__always) var logValue: Double { Foundation.log(self) } }
