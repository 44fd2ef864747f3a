// Rectified linear unit, in place: forward clamps at zero, backward passes the gradient where the output was positive.

public enum ReLU {
    public static func forward(_ x: UnsafeMutablePointer<Float>, count: Int, threads: Int = 1) {
        Parallel.forEachChunk(count, minimumPerThread: 1 << 16, threads: threads) { r in
            for i in r { x[i] = max(x[i], 0) }
        }
    }

    /// gradient *= (output > 0); `output` is what forward left.
    public static func backward(output: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, count: Int, threads: Int = 1) {
        Parallel.forEachChunk(count, minimumPerThread: 1 << 16, threads: threads) { r in
            for i in r { gradient[i] = output[i] > 0 ? gradient[i] : 0 }
        }
    }
}
