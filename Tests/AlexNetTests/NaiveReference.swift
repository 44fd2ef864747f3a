// Plain-loop references for the fast kernels: the obvious formulas, no im2col, no BLAS, no blocking.
// Maps are channel-major (C, N, H, W) like the model's.
import AlexNet
import Foundation

enum Naive {
    /// Grouped convolution: group g's outputs see input channels [g·Cin/groups, (g+1)·Cin/groups).
    static func conv(_ x: [Float], channels: Int, batch: Int, height: Int, width: Int,
                     weight: [Float], bias: [Float], outChannels: Int, kernel k: Int, stride s: Int, pad p: Int,
                     groups: Int) -> [Float] {
        let oh = (height + 2 * p - k) / s + 1, ow = (width + 2 * p - k) / s + 1
        let cinG = channels / groups, coutG = outChannels / groups
        var y = [Float](repeating: 0, count: outChannels * batch * oh * ow)
        for o in 0..<outChannels {
            let g = o / coutG
            for n in 0..<batch { for i in 0..<oh { for j in 0..<ow {
                var acc = Double(bias[o])
                for ci in 0..<cinG { for a in 0..<k { for b in 0..<k {
                    let yy = i * s - p + a, xx = j * s - p + b
                    if yy < 0 || yy >= height || xx < 0 || xx >= width { continue }
                    let c = g * cinG + ci
                    acc += Double(weight[((o * cinG + ci) * k + a) * k + b]) * Double(x[((c * batch + n) * height + yy) * width + xx])
                } } }
                y[((o * batch + n) * oh + i) * ow + j] = Float(acc)
            } } }
        }
        return y
    }

    /// The paper's LRN with the window inside groups of `groupChannels`; x is (C, pixels).
    static func lrn(_ x: [Float], channels: Int, groupChannels: Int, pixels: Int, _ l: LocalResponseNorm) -> [Float] {
        var y = x
        for c in 0..<channels {
            let g0 = c / groupChannels * groupChannels
            let lo = max(g0, c - l.size / 2), hi = min(g0 + groupChannels - 1, c + l.size / 2)
            for q in 0..<pixels {
                var s = 0.0
                for j in lo...hi { s += Double(x[j * pixels + q]) * Double(x[j * pixels + q]) }
                y[c * pixels + q] = Float(Double(x[c * pixels + q]) / pow(Double(l.k) + Double(l.alpha) * s, Double(l.beta)))
            }
        }
        return y
    }

    /// The input gradient of `lrn`, in Double from its formula: with s[i] = k + α·Σ_{win(i)} x[j]²,
    /// dx[j] = dy[j]·s[j]^−β − 2αβ·x[j]·Σ_{i ∈ win(j)} dy[i]·x[i]·s[i]^(−β−1); times (x > 0) when `throughReLU`.
    static func lrnBackward(_ x: [Float], _ dy: [Float], channels: Int, groupChannels: Int, pixels: Int,
                            _ l: LocalResponseNorm, throughReLU: Bool = false) -> [Float] {
        let half = l.size / 2, alpha = Double(l.alpha), beta = Double(l.beta)
        func window(_ c: Int) -> ClosedRange<Int> {
            let g0 = c / groupChannels * groupChannels
            return max(g0, c - half)...min(g0 + groupChannels - 1, c + half)
        }
        var s = [Double](repeating: 0, count: x.count)
        for c in 0..<channels { for q in 0..<pixels {
            s[c * pixels + q] = Double(l.k) + alpha * window(c).reduce(0.0) { $0 + Double(x[$1 * pixels + q]) * Double(x[$1 * pixels + q]) }
        } }
        var dx = [Float](repeating: 0, count: x.count)
        for c in 0..<channels { for q in 0..<pixels {
            let e = c * pixels + q
            let cross = window(c).reduce(0.0) { sum, i in
                let f = i * pixels + q
                return sum + Double(dy[f]) * Double(x[f]) * pow(s[f], -beta - 1)
            }
            let v = Double(dy[e]) * pow(s[e], -beta) - 2 * alpha * beta * Double(x[e]) * cross
            dx[e] = throughReLU && x[e] <= 0 ? 0 : Float(v)
        } }
        return dx
    }

    static func maxPool(_ x: [Float], planes: Int, height: Int, width: Int, size: Int, stride: Int) -> [Float] {
        let oh = (height - size) / stride + 1, ow = (width - size) / stride + 1
        var y = [Float](repeating: 0, count: planes * oh * ow)
        for pl in 0..<planes { for i in 0..<oh { for j in 0..<ow {
            var m = -Float.infinity
            for a in 0..<size { for b in 0..<size { m = max(m, x[(pl * height + i * stride + a) * width + j * stride + b]) } }
            y[(pl * oh + i) * ow + j] = m
        } } }
        return y
    }

    /// y (out, N) = W (out, in) · x (in, N) + b
    static func fullyConnected(_ x: [Float], inputs: Int, batch: Int, weight: [Float], bias: [Float], outputs: Int) -> [Float] {
        var y = [Float](repeating: 0, count: outputs * batch)
        for o in 0..<outputs { for n in 0..<batch {
            var acc = Double(bias[o])
            for i in 0..<inputs { acc += Double(weight[o * inputs + i]) * Double(x[i * batch + n]) }
            y[o * batch + n] = Float(acc)
        } }
        return y
    }

    /// Mean softmax cross-entropy over N of logits (classes, N).
    static func crossEntropy(_ logits: [Float], classes: Int, batch: Int, labels: [Int32]) -> Double {
        var total = 0.0
        for n in 0..<batch {
            let column = (0..<classes).map { Double(logits[$0 * batch + n]) }
            let m = column.max()!
            let lse = log(column.reduce(0) { $0 + exp($1 - m) }) + m
            total += lse - column[Int(labels[n])]
        }
        return total / Double(batch)
    }
}
