// Times the convolutions of one tower (conv1–conv5 at the model's width, one thread as in a tower's thread), forward
// and backward, with every algorithm a layer can run (im2col + sgemm or the direct conv1; Winograd for conv2–conv5),
// the algorithms interleaved round by round: this machine's speed drifts by tens of percent between minutes, so only
// ratios within one run mean anything.
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

    /// conv1–conv5 of one tower of `config`, as the model builds them.
    static func layers(_ config: ModelConfig, threads: Int, columnBudget: Int, winograd: WinogradUse) -> [(String, Convolution)] {
        let convs = TwoTowerAlexNet.convolutions(config: config, parts: 1, threads: threads, columnBudget: columnBudget, winograd: winograd)
        return convs.enumerated().map { ("conv\($0.offset + 1)", $0.element) }
    }

    public static func run(config: ModelConfig, batch: Int, rounds: Int, threads: Int,
                           columnBudget: Int = Convolution.defaultColumnBudget) -> [Row] {
        Blas.setThreads(threads)
        var rows: [Row] = []
        let plain = layers(config, threads: threads, columnBudget: columnBudget, winograd: .never)
        let model = layers(config, threads: threads, columnBudget: columnBudget, winograd: .whereItPays)
        for (index, (name, layer)) in plain.enumerated() {
            // A strided layer: the direct kernel at the lanes this CPU gives it, the eight-lane (AVX2) one if that
            // differs, and im2col + sgemm; a stride-1 layer: im2col + sgemm and Winograd.
            var im2col = layer
            im2col.directKernelLanes = 0
            var narrow = layer
            narrow.directKernelLanes = Convolution.narrowDirectLanes
            var candidates: [(String, Convolution)] = []
            if layer.geometry.stride > 1 {
                for c in [layer, narrow] where c.runsDirect && !candidates.contains(where: { $0.1.directLanesUsed == c.directLanesUsed }) {
                    candidates.append(("direct, \(c.directLanesUsed) lanes", c))
                }
            }
            candidates.append(("im2col", im2col))
            if let w = model[index].1.winograd {
                candidates.append(("Winograd F(\(w.outputTile)×\(w.outputTile), \(w.kernel)×\(w.kernel))", model[index].1))
            }
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
            func choice(_ c: Convolution) -> [Int] { [c.runsDirect ? c.directLanesUsed : 0, c.winograd == nil ? 0 : 1] }
            for (k, (algorithm, _)) in candidates.enumerated() {
                let chosen = choice(candidates[k].1) == choice(model[index].1)
                rows.append(Row(layer: name, algorithm: algorithm, forwardMs: best[k].0, backwardMs: best[k].1, chosen: chosen,
                                directGflop: gflop))
            }
        }
        return rows
    }
}
