// Times the convolutions of one tower (conv1–conv5 at the model's width, one thread as in a tower's thread), forward
// and backward, with every algorithm a layer can run (im2col + sgemm; Winograd for the 3 × 3 layers), the algorithms
// interleaved round by round: this machine's speed drifts by tens of percent between minutes, so only ratios within
// one run mean anything.
import AlexNetKernels
import Foundation

public enum ConvolutionBenchmark {
    public struct Row: Sendable {
        public var layer: String
        public var algorithm: String
        public var forwardMs: Double      // fastest of the rounds
        public var backwardMs: Double     // with input gradients where training needs them (all but conv1)
        public var chosen: Bool           // the algorithm the model runs this layer with
        public var directGflop: Double    // the direct convolution's arithmetic, forward + backward (3 × forward; 2 × for conv1)
        public var gflops: Double { directGflop / ((forwardMs + backwardMs) * 1e-3) }
    }

    /// The stride-1 layers of one tower of `config`, as the model builds them (shapes from the layer table).
    static func layers(_ config: ModelConfig, threads: Int, columnBudget: Int, winograd: WinogradUse) -> [(String, Convolution)] {
        let T = ModelConfig.towers
        let c1 = config.conv1 / T, c2 = config.conv2 / T, c3 = config.conv3 / T, c4 = config.conv4 / T, c5 = config.conv5 / T
        let g227 = ConvGeometry(inputHeight: ModelConfig.inputSize, inputWidth: ModelConfig.inputSize, kernel: 11, stride: 4, pad: 0)
        let g27 = ConvGeometry(inputHeight: 27, inputWidth: 27, kernel: 5, stride: 1, pad: 2)
        let g13 = ConvGeometry(inputHeight: 13, inputWidth: 13, kernel: 3, stride: 1, pad: 1)
        func conv(_ g: ConvGeometry, _ cin: Int, _ cout: Int, shared: Bool) -> Convolution {
            Convolution(geometry: g, inputChannelsPerPart: cin, outputChannelsPerPart: cout, parts: 1, sharedInput: shared,
                        threads: threads, columnBudget: columnBudget, winograd: winograd)
        }
        return [("conv1", conv(g227, 3, c1, shared: true)), ("conv2", conv(g27, c1, c2, shared: false)), ("conv3", conv(g13, 2 * c2, c3, shared: true)),
                ("conv4", conv(g13, c3, c4, shared: false)), ("conv5", conv(g13, c4, c5, shared: false))]
    }

    public static func run(config: ModelConfig, batch: Int, rounds: Int, threads: Int,
                           columnBudget: Int = Convolution.defaultColumnBudget) -> [Row] {
        Blas.setThreads(threads)
        var rows: [Row] = []
        let plain = layers(config, threads: threads, columnBudget: columnBudget, winograd: .never)
        let fast = layers(config, threads: threads, columnBudget: columnBudget, winograd: .always)
        let model = layers(config, threads: threads, columnBudget: columnBudget, winograd: .whereItPays)
        for (index, (name, layer)) in plain.enumerated() {
            let candidates = [(layer.runsDirect ? "direct" : "im2col", layer)] + (fast[index].1.winograd.map { w in
                [("Winograd F(\(w.outputTile)×\(w.outputTile), \(w.kernel)×\(w.kernel))", fast[index].1)] } ?? [])
            let g = layer.geometry
            let inputCount = layer.inputChannels * batch * g.inputPlane, outputCount = layer.outputChannels * batch * g.outputPlane
            let scratch = candidates.map { $0.1.columnBufferSize(batch: batch) }.max()!
            let buffers = [inputCount, outputCount, outputCount, inputCount, layer.weightCount, layer.outputChannels,
                           layer.weightCount, layer.outputChannels, scratch, scratch].map { count -> UnsafeMutablePointer<Float> in
                let p = UnsafeMutablePointer<Float>.allocate(capacity: count)
                for i in 0..<count { p[i] = Float(CounterRandom.uniform(seed: 7, .dropout, UInt64(count), UInt64(i))) - 0.5 }
                return p
            }
            defer { buffers.forEach { $0.deallocate() } }
            let (x, y, dy, dx, w, b, dw, db, col, dcol) = (buffers[0], buffers[1], buffers[2], buffers[3], buffers[4],
                                                          buffers[5], buffers[6], buffers[7], buffers[8], buffers[9])
            var best = [(Double, Double)](repeating: (.infinity, .infinity), count: candidates.count)
            for round in 0...rounds {   // round 0 warms up
                for (k, (_, c)) in candidates.enumerated() {
                    let t0 = PhaseClock.now()
                    c.forward(input: x, batch: batch, weight: w, bias: b, output: y, col: col, relu: true)
                    let t1 = PhaseClock.now()
                    c.backward(input: x, batch: batch, weight: w, outputGradient: dy, weightGradient: dw, biasGradient: db,
                               inputGradients: name == "conv1" ? nil : [dx], col: col, colGradient: dcol)   // conv1 has no input gradient
                    let t2 = PhaseClock.now()
                    if round > 0 { best[k] = (min(best[k].0, Double(t1 - t0) * 1e-6), min(best[k].1, Double(t2 - t1) * 1e-6)) }
                }
            }
            let gflop = (name == "conv1" ? 2 : 3) * 2 * Double(layer.outputChannels * layer.patchSize) * Double(batch * g.outputPlane) * 1e-9
            for (k, (algorithm, _)) in candidates.enumerated() {
                let chosen = (k == 1) == (model[index].1.winograd != nil)
                rows.append(Row(layer: name, algorithm: algorithm, forwardMs: best[k].0, backwardMs: best[k].1, chosen: chosen,
                                directGflop: gflop))
            }
        }
        return rows
    }
}
