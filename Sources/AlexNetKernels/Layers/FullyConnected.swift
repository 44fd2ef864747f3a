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

    /// output (outputs, B) = W (outputs, Fin) · input + bias, then ReLU if `relu`. Without `blocks` the input is
    /// (Fin, N) and B = N. With them it is block-major: block k, images [blocks[k], blocks[k+1]) of B = blocks.last,
    /// is a (Fin, nₖ) matrix at input + blocks[k]·Fin (every rank's images gathered one block each under the
    /// conv-data/fc-model layout), landing in those output columns.
    public func forward(input: UnsafePointer<Float>, batch: Int, blocks: [Int]? = nil, weight: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, relu: Bool = false) {
        let starts = blocks ?? [0, batch], columns = starts.last!
        for k in 0..<(starts.count - 1) where starts[k + 1] > starts[k] {
            let n = starts[k + 1] - starts[k]
            Blas.sgemm(m: outputs, n: n, k: inputs, a: weight, lda: inputs, b: input + starts[k] * inputs, ldb: n,
                       c: output + starts[k], ldc: columns)
        }
        addBias(bias, to: output, rows: outputs, rowLength: columns, relu: relu, threads: threads)
    }

    /// dW = dY · Xᵀ, db = Σ dY (both overwritten); inputGradients[p] = W_pᵀ · dY_p when asked, laid out as the input
    /// (block-major with `blocks`, as forward). dY is (outputs, B).
    public func backward(input: UnsafePointer<Float>, batch: Int, blocks: [Int]? = nil, weight: UnsafePointer<Float>,
                         outputGradient: UnsafePointer<Float>,
                         weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>,
                         inputGradients: [UnsafeMutablePointer<Float>]?) {
        let starts = blocks ?? [0, batch], columns = starts.last!
        let nonEmpty = (0..<(starts.count - 1)).filter { starts[$0 + 1] > starts[$0] }
        for (i, k) in nonEmpty.enumerated() {
            let n = starts[k + 1] - starts[k]
            Blas.sgemm(transB: true, m: outputs, n: inputs, k: n, a: outputGradient + starts[k], lda: columns,
                       b: input + starts[k] * inputs, ldb: n, beta: i == 0 ? 0 : 1, c: weightGradient, ldc: inputs)
        }
        sumRows(outputGradient, rows: outputs, rowLength: columns, into: biasGradient, threads: threads)
        if let grads = inputGradients {
            precondition(grads.count == parts)
            var first = 0
            for p in 0..<parts {
                for k in nonEmpty {
                    let n = starts[k + 1] - starts[k]
                    Blas.sgemm(transA: true, m: inputs, n: n, k: partRows[p],
                               a: weight + first * inputs, lda: inputs,
                               b: outputGradient + first * columns + starts[k], ldb: columns,
                               c: grads[p] + starts[k] * inputs, ldc: n)
                }
                first += partRows[p]
            }
        }
    }
}
