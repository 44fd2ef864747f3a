// Fully connected layer on feature-major activations (features, N): Y = W·X + b as one sgemm.
//
// Part p (one local tower) owns a contiguous block of output neurons, i.e. rows of W (outputs, Fin) in PyTorch layout
// (fc8 with an odd class count gives the towers ⌊C/2⌋ and ⌈C/2⌉ rows).
// Every part sees all Fin inputs, so each part's input gradient is a full-size partial that an exchange sums.

public struct FullyConnected: Sendable {
    public let inputs: Int            // Fin
    public let partRows: [Int]        // output rows of each local part
    public let threads: Int           // threads the bias loops may use (the caller's share of the cores)

    public init(inputs: Int, partRows: [Int], threads: Int = 1) {
        self.inputs = inputs; self.partRows = partRows; self.threads = threads
    }
    public var parts: Int { partRows.count }
    public var outputs: Int { partRows.reduce(0, +) }
    public var weightCount: Int { outputs * inputs }

    /// output (outputs, N) = W (outputs, Fin) · input (Fin, N) + bias, then ReLU if `relu`.
    public func forward(input: UnsafePointer<Float>, batch: Int, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                        output: UnsafeMutablePointer<Float>, relu: Bool = false) {
        Blas.sgemm(m: outputs, n: batch, k: inputs, a: weight, lda: inputs, b: input, ldb: batch, c: output, ldc: batch)
        addBias(bias, to: output, rows: outputs, rowLength: batch, relu: relu, threads: threads)
    }

    /// dW = dY · Xᵀ, db = Σ dY (both overwritten); inputGradients[p] (Fin, N) = W_pᵀ · dY_p when asked.
    public func backward(input: UnsafePointer<Float>, batch: Int, weight: UnsafePointer<Float>,
                         outputGradient: UnsafePointer<Float>,
                         weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>,
                         inputGradients: [UnsafeMutablePointer<Float>]?) {
        Blas.sgemm(transB: true, m: outputs, n: inputs, k: batch, a: outputGradient, lda: batch, b: input, ldb: batch,
                   c: weightGradient, ldc: inputs)
        sumRows(outputGradient, rows: outputs, rowLength: batch, into: biasGradient, threads: threads)
        if let grads = inputGradients {
            precondition(grads.count == parts)
            var first = 0
            for p in 0..<parts {
                Blas.sgemm(transA: true, m: inputs, n: batch, k: partRows[p],
                           a: weight + first * inputs, lda: inputs,
                           b: outputGradient + first * batch, ldb: batch, c: grads[p], ldc: batch)
                first += partRows[p]
            }
        }
    }
}
