// Convolution as im2col + sgemm over channel-major maps, forward and backward, split into tower parts (strided
// layers such as conv1 run as a direct convolution instead: StridedConvolution.swift).
//
// Part p (one local tower) owns output channels [p·M, (p+1)·M) and its weights (M, Cin, k, k) in PyTorch layout.
// A tower-local layer (conv2, conv4, conv5: `sharedInput == false`) gives part p the input channels [p·Cin, (p+1)·Cin);
// a layer after an exchange (conv1, conv3: `sharedInput == true`) gives every part all Cin input channels.

public struct Convolution: Sendable {
    public let geometry: ConvGeometry
    public let inputChannelsPerPart: Int      // Cin seen by one part's filters
    public let outputChannelsPerPart: Int     // M
    public let parts: Int                     // local towers
    public let sharedInput: Bool
    public let threads: Int                   // threads the loops may use (the caller's share of the cores)
    public let columnBudget: Int              // floats an im2col chunk may hold
    public let winogradUse: WinogradUse       // stride-1 layers with a known tile may run as Winograd (WinogradConvolution.swift)
    /// Lanes the direct strided kernel may use (StridedConvolution.swift): the best this CPU runs; 8 (AVX2) or 0
    /// (im2col + sgemm only) for comparisons.
    public var directKernelLanes = Convolution.bestDirectLanes

    /// Floats an im2col chunk may hold by default: small enough to stay in a core's L2 cache while sgemm reads it.
    public static let defaultColumnBudget = 1 << 17

    public init(geometry: ConvGeometry, inputChannelsPerPart: Int, outputChannelsPerPart: Int, parts: Int, sharedInput: Bool,
                threads: Int = 1, columnBudget: Int = Convolution.defaultColumnBudget, winograd: WinogradUse = .whereItPays) {
        self.geometry = geometry
        self.winogradUse = winograd
        self.inputChannelsPerPart = inputChannelsPerPart
        self.outputChannelsPerPart = outputChannelsPerPart
        self.parts = parts
        self.sharedInput = sharedInput
        self.threads = threads
        self.columnBudget = max(1, columnBudget)
    }

    public var patchSize: Int { inputChannelsPerPart * geometry.kernel * geometry.kernel }   // K
    public var inputChannels: Int { sharedInput ? inputChannelsPerPart : inputChannelsPerPart * parts }
    public var outputChannels: Int { outputChannelsPerPart * parts }
    public var weightCount: Int { outputChannels * patchSize }

    /// Output rows (image, oh) an im2col chunk covers: as many as the budget holds, but at least enough for
    /// `minimumColumns` columns and `columnsPerWeightRow` columns a weight row (a narrower sgemm spends its time
    /// packing the weights: at W = 1 conv3's 192 × 2304 weights are packed once a chunk).
    public func rowsPerChunk(batch: Int) -> Int {
        Self.rowsPerChunk(patchSize: patchSize, outputHeight: geometry.outputHeight, outputWidth: geometry.outputWidth,
                          batch: batch, columnBudget: columnBudget, rowsOfWeights: sharedInput ? outputChannels : outputChannelsPerPart)
    }
    public static let minimumColumns = 512
    public static let columnsPerWeightRow = 8
    public static func rowsPerChunk(patchSize: Int, outputHeight: Int, outputWidth: Int, batch: Int, columnBudget: Int,
                                    rowsOfWeights: Int) -> Int {
        let fromBudget = columnBudget / (patchSize * outputWidth)
        let forWidth = (max(minimumColumns, columnsPerWeightRow * rowsOfWeights) + outputWidth - 1) / outputWidth
        return max(1, min(batch * outputHeight, max(fromBudget, forWidth)))
    }
    /// Floats of scratch the column buffer needs for this batch.
    public func columnBufferSize(batch: Int) -> Int {
        winograd != nil ? winogradScratch(batch: batch) : patchSize * geometry.outputWidth * rowsPerChunk(batch: batch)
    }

    /// The output rows u = n·outH + oh of the batch, in chunks; chunk c covers the columns [u₀·outW, u₁·outW).
    private func chunks(batch: Int) -> [Range<Int>] {
        let step = rowsPerChunk(batch: batch), total = batch * geometry.outputHeight
        return stride(from: 0, to: total, by: step).map { $0..<min(total, $0 + step) }
    }

    private func im2col(_ input: UnsafePointer<Float>, part: Int, rows: Range<Int>, batch: Int, col: UnsafeMutablePointer<Float>) {
        let channelStride = batch * geometry.inputPlane
        let first = sharedInput ? 0 : part * inputChannelsPerPart
        Im2col.forward(input: input + first * channelStride, channelStride: channelStride, imageStride: geometry.inputPlane,
                       channels: inputChannelsPerPart, rows: rows, geometry: geometry, col: col, threads: threads)
    }

    /// output (parts·M, N, outH, outW) = conv(input (Cin_total, N, H, W)) + bias, then ReLU if `relu` (one pass).
    /// `keptInput` (`keptInputSize(batch:)` floats, Winograd only): where to keep the transformed input for `backward`.
    public func forward(input: UnsafePointer<Float>, batch: Int,
                        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                        output: UnsafeMutablePointer<Float>, col: UnsafeMutablePointer<Float>, relu: Bool = false,
                        keptInput: UnsafeMutablePointer<Float>? = nil) {
        if runsDirect {
            directForward(input: input, batch: batch, weight: weight, bias: bias, output: output, relu: relu)
            return
        }
        if winograd != nil {
            winogradForward(input: input, batch: batch, weight: weight, bias: bias, output: output, col: col, relu: relu,
                            keptInput: keptInput)
            return
        }
        let outW = geometry.outputWidth, ldc = batch * geometry.outputPlane, K = patchSize, M = outputChannelsPerPart
        for rows in chunks(batch: batch) {
            let columns = rows.count * outW, first = rows.lowerBound * outW
            if sharedInput {
                im2col(input, part: 0, rows: rows, batch: batch, col: col)
                Blas.sgemm(m: M * parts, n: columns, k: K, a: weight, lda: K, b: col, ldb: columns,
                           c: output + first, ldc: ldc)
            } else {
                for p in 0..<parts {
                    im2col(input, part: p, rows: rows, batch: batch, col: col)
                    Blas.sgemm(m: M, n: columns, k: K, a: weight + p * M * K, lda: K, b: col, ldb: columns,
                               c: output + p * M * ldc + first, ldc: ldc)
                }
            }
        }
        addBias(bias, to: output, rows: outputChannels, rowLength: ldc, relu: relu, threads: threads)
    }

    /// Weight and bias gradients (overwritten) and, if asked, input gradients (overwritten). `keptInput`: what the
    /// forward of this same input kept (Winograd only), or nil to transform the input again.
    /// `inputGradients[p]` receives part p's contribution: for a tower-local layer the gradient of its own input
    /// channels (C_in, N, H, W); for a shared-input layer a full-size partial (Cin, N, H, W) that an exchange sums.
    public func backward(input: UnsafePointer<Float>, batch: Int,
                         weight: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>,
                         inputGradients: [UnsafeMutablePointer<Float>]?,
                         col: UnsafeMutablePointer<Float>, colGradient: UnsafeMutablePointer<Float>,
                         keptInput: UnsafePointer<Float>? = nil, afterChunk: (() -> Void)? = nil) {
        if runsDirect && inputGradients == nil {
            directWeightGradient(input: input, batch: batch, outputGradient: outputGradient,
                                 weightGradient: weightGradient, biasGradient: biasGradient)
            afterChunk?()
            return
        }
        if winograd != nil {
            winogradBackward(input: input, batch: batch, weight: weight, outputGradient: outputGradient,
                             weightGradient: weightGradient, biasGradient: biasGradient, inputGradients: inputGradients,
                             col: col, colGradient: colGradient, keptInput: keptInput, afterChunk: afterChunk)
            return
        }
        let outW = geometry.outputWidth, ldc = batch * geometry.outputPlane, K = patchSize, M = outputChannelsPerPart
        let inChannelStride = batch * geometry.inputPlane
        if let grads = inputGradients {
            precondition(grads.count == parts)
            for g in grads { g.update(repeating: 0, count: inputChannelsPerPart * inChannelStride) }
        }
        for (index, rows) in chunks(batch: batch).enumerated() {
            let columns = rows.count * outW
            let beta: Float = index == 0 ? 0 : 1
            let dY = outputGradient + rows.lowerBound * outW
            for p in 0..<parts {
                if !sharedInput || p == 0 { im2col(input, part: p, rows: rows, batch: batch, col: col) }
                if !sharedInput || p == 0 {
                    // dW (rows of this part, or all rows when the input is shared) += dY · colᵀ
                    let rows = sharedInput ? M * parts : M
                    Blas.sgemm(transB: true, m: rows, n: K, k: columns, a: dY + p * M * ldc, lda: ldc, b: col, ldb: columns,
                               beta: beta, c: weightGradient + p * M * K, ldc: K)
                }
                if let grads = inputGradients {
                    // dcol = Wᵀ · dY, then scatter back onto the input planes.
                    Blas.sgemm(transA: true, m: K, n: columns, k: M, a: weight + p * M * K, lda: K,
                               b: dY + p * M * ldc, ldb: ldc, c: colGradient, ldc: columns)
                    Im2col.backward(col: colGradient, channelStride: inChannelStride, imageStride: geometry.inputPlane,
                                    channels: inputChannelsPerPart, rows: rows, geometry: geometry, inputGradient: grads[p], threads: threads)
                }
            }
            afterChunk?()   // e.g. lets a gradient allreduce in flight progress
        }
        sumRows(outputGradient, rows: outputChannels, rowLength: ldc, into: biasGradient, threads: threads)
    }
}

/// y[r, :] += bias[r] over `rows` rows of `rowLength`, clamped at zero if `relu` (ReLU.forward fused in).
@inline(__always)
func addBias(_ bias: UnsafePointer<Float>, to y: UnsafeMutablePointer<Float>, rows: Int, rowLength: Int, relu: Bool = false, threads: Int) {
    Parallel.forEachChunk(rows, threads: threads) { range in
        for r in range {
            let b = bias[r], row = y + r * rowLength
            if relu {
                for i in 0..<rowLength { row[i] = max(row[i] + b, 0) }
            } else {
                for i in 0..<rowLength { row[i] += b }
            }
        }
    }
}

/// out[r] = Σ_i x[r, i], accumulated in Double in eight lanes (vectorised; the order is fixed by the row alone).
@inline(__always)
func sumRows(_ x: UnsafePointer<Float>, rows: Int, rowLength: Int, into out: UnsafeMutablePointer<Float>, threads: Int) {
    Parallel.forEachChunk(rows, threads: threads) { range in
        for r in range {
            let row = x + r * rowLength
            var lanes = SIMD8<Double>(repeating: 0)
            let whole = rowLength / 8 * 8
            var i = 0
            while i < whole {
                let v = UnsafeRawPointer(row + i).loadUnaligned(as: SIMD8<Float>.self)
                lanes += SIMD8<Double>(v)
                i += 8
            }
            var s = lanes.sum()
            while i < rowLength { s += Double(row[i]); i += 1 }
            out[r] = Float(s)
        }
    }
}
