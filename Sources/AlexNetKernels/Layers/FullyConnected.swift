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

    /// output (outputs, blocks·N) = W (outputs, Fin) · input + bias, then ReLU if `relu`. The input is (Fin, N) when
    /// `blocks` is 1, else block-major (blocks, Fin, N): the images of `blocks` ranks gathered one block each (the
    /// conv-data/fc-model layout), block k's images landing in output columns [k·N, (k+1)·N).
    public func forward(input: UnsafePointer<Float>, batch: Int, blocks: Int = 1, weight: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, relu: Bool = false) {
        for k in 0..<blocks {
            Blas.sgemm(m: outputs, n: batch, k: inputs, a: weight, lda: inputs, b: input + k * inputs * batch, ldb: batch,
                       c: output + k * batch, ldc: blocks * batch)
        }
        addBias(bias, to: output, rows: outputs, rowLength: blocks * batch, relu: relu, threads: threads)
    }

    /// dW = dY · Xᵀ, db = Σ dY (both overwritten); inputGradients[p] = W_pᵀ · dY_p when asked, laid out as the input
    /// (block-major (blocks, Fin, N) when `blocks` > 1). dY is (outputs, blocks·N).
    public func backward(input: UnsafePointer<Float>, batch: Int, blocks: Int = 1, weight: UnsafePointer<Float>,
                         outputGradient: UnsafePointer<Float>,
                         weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>,
                         inputGradients: [UnsafeMutablePointer<Float>]?) {
        let columns = blocks * batch
        for k in 0..<blocks {
            Blas.sgemm(transB: true, m: outputs, n: inputs, k: batch, a: outputGradient + k * batch, lda: columns,
                       b: input + k * inputs * batch, ldb: batch, beta: k == 0 ? 0 : 1, c: weightGradient, ldc: inputs)
        }
        sumRows(outputGradient, rows: outputs, rowLength: columns, into: biasGradient, threads: threads)
        if let grads = inputGradients {
            precondition(grads.count == parts)
            var first = 0
            for p in 0..<parts {
                for k in 0..<blocks {
                    Blas.sgemm(transA: true, m: inputs, n: batch, k: partRows[p],
                               a: weight + first * inputs, lda: inputs,
                               b: outputGradient + first * columns + k * batch, ldb: columns,
                               c: grads[p] + k * inputs * batch, ldc: batch)
                }
                first += partRows[p]
            }
        }
    }
}
