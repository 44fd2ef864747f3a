// The paper's SGD update with momentum and weight decay as one vectorised pass over a contiguous parameter buffer,
// returning the sum of the new weights (the non-finite guard's check, taken in the same pass).

public enum SGD {
    /// v ← μ·v − λ·ε·w − ε·g;  w ← w + v, for `count` parameters. Returns Σ w after the update: finite exactly when
    /// no weight became NaN or infinite (or the sum overflowed, a blow-up too).
    public static func step(values w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>,
                            momentum v: UnsafeMutablePointer<Float>, count: Int,
                            learningRate lr: Float, momentum mu: Float, weightDecay decay: Float, threads: Int) -> Double {
        Parallel.sumOverChunks(count, minimumPerThread: 1 << 16, threads: threads) { r in
            update(w, v, r, learningRate: lr, momentum: mu, weightDecay: decay,
                   gradients: { UnsafeRawPointer(g + $0).loadUnaligned(as: SIMD8<Float>.self) }, gradient: { g[$0] })
        }
    }

    /// The same update on parameters `range` with the gradient the sum of `gradients` (one buffer a replica, added in
    /// their order): data parallelism's shared-memory replicas, where each rank updates its share of the one copy of
    /// the weights from every rank's gradients. Returns Σ w over `range` after the update.
    public static func step(values w: UnsafeMutablePointer<Float>, summing gradients: [UnsafePointer<Float>],
                            momentum v: UnsafeMutablePointer<Float>, range: Range<Int>,
                            learningRate lr: Float, momentum mu: Float, weightDecay decay: Float) -> Double {
        precondition(!gradients.isEmpty)
        let n = gradients.count
        return update(w, v, range, learningRate: lr, momentum: mu, weightDecay: decay, gradients: { i in
            var sum = UnsafeRawPointer(gradients[0] + i).loadUnaligned(as: SIMD8<Float>.self)
            for k in 1..<n { sum += UnsafeRawPointer(gradients[k] + i).loadUnaligned(as: SIMD8<Float>.self) }
            return sum
        }, gradient: { i in
            var sum = gradients[0][i]
            for k in 1..<n { sum += gradients[k][i] }
            return sum
        })
    }

    /// The update of w[range] and v[range], eight lanes at a time, then the tail; `gradients(i)` gives the gradient of
    /// parameters i..<i+8, `gradient(i)` of parameter i. Returns Σ w over the range after the update.
    @inline(__always)
    static func update(_ w: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ range: Range<Int>,
                       learningRate lr: Float, momentum mu: Float, weightDecay decay: Float,
                       gradients: (Int) -> SIMD8<Float>, gradient: (Int) -> Float) -> Double {
        let decayRate = decay * lr
        var lanes = SIMD8<Float>(repeating: 0)
        var i = range.lowerBound
        while i + 8 <= range.upperBound {
            let vw = UnsafeRawPointer(w + i).loadUnaligned(as: SIMD8<Float>.self)
            let vv = UnsafeRawPointer(v + i).loadUnaligned(as: SIMD8<Float>.self)
            let nv = mu * vv - decayRate * vw - lr * gradients(i)
            let nw = vw + nv
            UnsafeMutableRawPointer(v + i).storeBytes(of: nv, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(w + i).storeBytes(of: nw, as: SIMD8<Float>.self)
            lanes += nw
            i += 8
        }
        var sum = Double(lanes.sum())
        while i < range.upperBound {
            let nv = mu * v[i] - decayRate * w[i] - lr * gradient(i)
            v[i] = nv
            w[i] += nv
            sum += Double(w[i])
            i += 1
        }
        return sum
    }
}
