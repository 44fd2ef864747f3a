// Winograd F(m, r): the transform matrices against a plain 1-D correlation, and the layer's forward and backward against
// the same layer run as im2col + sgemm (itself checked against plain loops and central differences in ConvolutionTests).
import AlexNet
import XCTest

final class WinogradConvolutionTests: XCTestCase {
    func testTransformsComputeTheCorrelation() {
        for (m, r) in [(2, 3), (4, 3), (2, 5), (4, 5), (3, 3)] {
            let w = WinogradTransform(outputTile: m, kernel: r)
            let a = w.tile
            let d = randomFloats(a, seed: 4).map(Double.init), g = randomFloats(r, seed: 5).map(Double.init)
            let bt = w.inputTransform.map(Double.init), gm = w.filterTransform.map(Double.init), at = w.outputTransform.map(Double.init)
            let product = (0..<a).map { j in
                (0..<r).reduce(0.0) { $0 + gm[j * r + $1] * g[$1] } * (0..<a).reduce(0.0) { $0 + bt[j * a + $1] * d[$1] }
            }
            for i in 0..<m {
                let y = (0..<a).reduce(0.0) { $0 + at[i * a + $1] * product[$1] }
                let reference = (0..<r).reduce(0.0) { $0 + d[i + $1] * g[$1] }
                XCTAssertEqual(y, reference, accuracy: 1e-5 * max(1, abs(reference)), "F(\(m), \(r)) output \(i)")
            }
        }
    }

    /// The maps written out term by term for the tiles the layers run (WinogradF2x3, WinogradF4x5)
    /// against the matrices `WinogradTransform` derives from the interpolation points: Bᵀ, B, Aᵀ and A on eight lanes.
    func testWrittenOutMapsAreTheDerivedMatrices() {
        func check<K: WinogradAxis>(_ axis: K.Type, outputTile m: Int = 2, kernel r: Int) {
            let w = WinogradTransform(outputTile: m, kernel: r), a = w.tile, lanes = 8
            XCTAssertEqual(K.alpha, a)
            let bt = w.inputTransform, at = w.outputTransform
            // (name, map, rows out, columns in, the matrix's entry (i, j))
            let maps: [(String, (UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>, Int) -> Void, Int, Int, (Int, Int) -> Float)] = [
                ("Bᵀ", K.inputMap, a, a, { bt[$0 * a + $1] }),
                ("B", K.inputAdjoint, a, a, { bt[$1 * a + $0] }),
                ("Aᵀ", K.outputMap, m, a, { at[$0 * a + $1] }),
                ("A", K.outputAdjoint, a, m, { at[$1 * a + $0] }),
            ]
            for (name, map, rows, columns, entry) in maps {
                let x = randomFloats(columns * lanes, seed: UInt64(17 + r))
                var y = [Float](repeating: .nan, count: rows * lanes)
                y.withUnsafeMutableBufferPointer { map(x, lanes, $0.baseAddress!, lanes) }
                for i in 0..<rows {
                    for lane in 0..<lanes {
                        let reference = (0..<columns).reduce(0.0) { $0 + Double(entry(i, $1)) * Double(x[$1 * lanes + lane]) }
                        XCTAssertEqual(Double(y[i * lanes + lane]), reference, accuracy: 1e-5 * max(1, abs(reference)),
                                       "F(\(m), \(r)) \(name) row \(i) lane \(lane)")
                    }
                }
            }
        }
        check(WinogradF2x3.self, kernel: 3)
        check(WinogradF4x5.self, outputTile: 4, kernel: 5)
    }

    /// Forward and all three gradients of `layer` against the same layer without Winograd.
    func compare(_ layer: Convolution, batch: Int, _ name: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotNil(layer.winograd, name)
        let plain = Convolution(geometry: layer.geometry, inputChannelsPerPart: layer.inputChannelsPerPart,
                                outputChannelsPerPart: layer.outputChannelsPerPart, parts: layer.parts,
                                sharedInput: layer.sharedInput, threads: 1, winograd: .never)
        XCTAssertNil(plain.winograd)
        let g = layer.geometry
        let inputCount = layer.inputChannels * batch * g.inputPlane, outputCount = layer.outputChannels * batch * g.outputPlane
        let x = randomFloats(inputCount, seed: 11), w = randomFloats(layer.weightCount, seed: 12, scale: 0.3)
        let b = randomFloats(layer.outputChannels, seed: 13), dy = randomFloats(outputCount, seed: 14)
        let perPart = layer.inputChannelsPerPart * batch * g.inputPlane
        func run(_ c: Convolution) -> (y: [Float], dx: [Float], dw: [Float], db: [Float]) {
            var y = [Float](repeating: 0, count: outputCount)
            var col = [Float](repeating: .nan, count: c.columnBufferSize(batch: batch)), dcol = col
            var dx = [Float](repeating: .nan, count: perPart * c.parts)
            var dw = [Float](repeating: .nan, count: c.weightCount), db = [Float](repeating: .nan, count: c.outputChannels)
            y.withUnsafeMutableBufferPointer { yp in col.withUnsafeMutableBufferPointer { cp in
                dcol.withUnsafeMutableBufferPointer { dp in dx.withUnsafeMutableBufferPointer { xp in
                    dw.withUnsafeMutableBufferPointer { wp in db.withUnsafeMutableBufferPointer { bp in
                        c.forward(input: x, batch: batch, weight: w, bias: b, output: yp.baseAddress!, col: cp.baseAddress!, relu: true)
                        c.backward(input: x, batch: batch, weight: w, outputGradient: dy, weightGradient: wp.baseAddress!,
                                   biasGradient: bp.baseAddress!,
                                   inputGradients: (0..<c.parts).map { xp.baseAddress! + $0 * perPart },
                                   col: cp.baseAddress!, colGradient: dp.baseAddress!)
                    } }
                } }
            } }
            return (y, dx, dw, db)
        }
        let fast = run(layer), reference = run(plain)
        // float32 rounding of the transforms: F(2, 3)'s matrices hold 0, ±1, ±½; F(4, 5)'s fractions down to 1/360
        let tolerance = layer.geometry.kernel == 3 ? 2e-6 : 2e-5
        XCTAssertLessThan(relativeError(fast.y, reference.y), tolerance, "\(name): output", file: file, line: line)
        XCTAssertLessThan(relativeError(fast.dx, reference.dx), tolerance, "\(name): input gradient", file: file, line: line)
        XCTAssertLessThan(relativeError(fast.dw, reference.dw), tolerance, "\(name): weight gradient", file: file, line: line)
        XCTAssertLessThan(relativeError(fast.db, reference.db), tolerance, "\(name): bias gradient", file: file, line: line)
    }

    /// The forward's kept transformed inputs give the backward the same gradients, and the backward reads them instead
    /// of the input: the input is overwritten with NaN between the two passes.
    func testTheBackwardUsesTheKeptTransformedInput() {
        let cases = [
            (Convolution(geometry: ConvGeometry(inputHeight: 13, inputWidth: 13, kernel: 3, stride: 1, pad: 1), inputChannelsPerPart: 6,
                         outputChannelsPerPart: 5, parts: 2, sharedInput: false, columnBudget: 2048), "3 × 3, tower-local, chunks of one image"),
            (Convolution(geometry: ConvGeometry(inputHeight: 27, inputWidth: 27, kernel: 5, stride: 1, pad: 2), inputChannelsPerPart: 4,
                         outputChannelsPerPart: 3, parts: 2, sharedInput: true), "5 × 5, shared input"),
        ]
        for (layer, name) in cases {
            let batch = 3, g = layer.geometry
            let inputCount = layer.inputChannels * batch * g.inputPlane, outputCount = layer.outputChannels * batch * g.outputPlane
            let perPart = layer.inputChannelsPerPart * batch * g.inputPlane
            let w = randomFloats(layer.weightCount, seed: 42, scale: 0.3), b = randomFloats(layer.outputChannels, seed: 43)
            let dy = randomFloats(outputCount, seed: 44)
            XCTAssertGreaterThan(layer.keptInputSize(batch: batch), 0, name)
            func run(keep: Bool) -> (y: [Float], dx: [Float], dw: [Float]) {
                var x = randomFloats(inputCount, seed: 41), y = [Float](repeating: 0, count: outputCount)
                var col = [Float](repeating: .nan, count: layer.columnBufferSize(batch: batch)), dcol = col
                var kept = [Float](repeating: .nan, count: layer.keptInputSize(batch: batch))
                var dx = [Float](repeating: .nan, count: perPart * layer.parts), dw = [Float](repeating: .nan, count: layer.weightCount)
                var db = [Float](repeating: .nan, count: layer.outputChannels)
                x.withUnsafeMutableBufferPointer { xp in kept.withUnsafeMutableBufferPointer { kp in
                    col.withUnsafeMutableBufferPointer { cp in dcol.withUnsafeMutableBufferPointer { dp in
                        layer.forward(input: xp.baseAddress!, batch: batch, weight: w, bias: b, output: &y, col: cp.baseAddress!,
                                      relu: true, keptInput: keep ? kp.baseAddress! : nil)
                        if keep { xp.update(repeating: .nan) }
                        dx.withUnsafeMutableBufferPointer { xg in
                            layer.backward(input: xp.baseAddress!, batch: batch, weight: w, outputGradient: dy, weightGradient: &dw,
                                           biasGradient: &db, inputGradients: (0..<layer.parts).map { xg.baseAddress! + $0 * perPart },
                                           col: cp.baseAddress!, colGradient: dp.baseAddress!, keptInput: keep ? UnsafePointer(kp.baseAddress!) : nil)
                        }
                    } }
                } }
                return (y, dx, dw)
            }
            let kept = run(keep: true), again = run(keep: false)
            XCTAssertEqual(kept.y, again.y, name + ": output")
            XCTAssertEqual(kept.dw, again.dw, name + ": weight gradient from the kept V")
            XCTAssertEqual(kept.dx, again.dx, name + ": input gradient")
        }
    }

    func testMatchesIm2colAtTheSizeOfConv2() {
        // 27 × 27 outputs: F(4 × 4, 5 × 5), 7 tiles a row in one vector of 8 (one lane unused), 7 tile rows (the last
        // cropped to 3 output rows); α = 8.
        let g = ConvGeometry(inputHeight: 27, inputWidth: 27, kernel: 5, stride: 1, pad: 2)
        for (budget, threads) in [(2048, 2), (Convolution.defaultColumnBudget, 1)] {
            let layer = Convolution(geometry: g, inputChannelsPerPart: 6, outputChannelsPerPart: 5, parts: 2, sharedInput: false,
                                    threads: threads, columnBudget: budget, winograd: .whereItPays)
            XCTAssertEqual(layer.winograd?.outputTile, 4)
            compare(layer, batch: 3, "conv2-like, budget \(budget), \(threads) threads")
        }
        // Rows of 5 tiles, the last covering one output column; 8 × 8 outputs: two whole tiles each way; and a layer
        // too wide for one vector of tiles (im2col).
        let seventeen = ConvGeometry(inputHeight: 17, inputWidth: 17, kernel: 5, stride: 1, pad: 2)
        compare(Convolution(geometry: seventeen, inputChannelsPerPart: 4, outputChannelsPerPart: 3, parts: 2, sharedInput: true,
                            threads: 2, winograd: .whereItPays), batch: 2, "17 × 17, shared input")
        let eight = ConvGeometry(inputHeight: 8, inputWidth: 8, kernel: 5, stride: 1, pad: 2)
        compare(Convolution(geometry: eight, inputChannelsPerPart: 3, outputChannelsPerPart: 4, parts: 1, sharedInput: false,
                            threads: 1, winograd: .whereItPays), batch: 2, "8 × 8")
        let wide = ConvGeometry(inputHeight: 40, inputWidth: 40, kernel: 5, stride: 1, pad: 2)
        XCTAssertNil(Convolution(geometry: wide, inputChannelsPerPart: 2, outputChannelsPerPart: 2, parts: 1, sharedInput: false,
                                 winograd: .whereItPays).winograd)
    }

    func testTrainingUsesWinogradWhereItPays() {
        // conv2–conv5 as Winograd at every width (conv1's stride is 4).
        func layers(_ width: Double) -> [Bool] {
            let model = TwoTowerAlexNet(config: ModelConfig(width: width, classes: 10), maxBatch: 1, exchange: LocalTowerExchange())
            return [model.conv1, model.conv2, model.conv3, model.conv4, model.conv5].map { $0.winograd != nil }
        }
        XCTAssertEqual(layers(1), [false, true, true, true, true])
        XCTAssertEqual(layers(0.125), [false, true, true, true, true])
        let plain = TwoTowerAlexNet(config: ModelConfig(width: 1, classes: 10), maxBatch: 1, exchange: LocalTowerExchange(), winograd: .never)
        XCTAssertEqual([plain.conv1, plain.conv2, plain.conv3, plain.conv4, plain.conv5].map { $0.winograd != nil }, [false, false, false, false, false])
    }

    func testMatchesIm2colAtTheSizesOfConv3ToConv5() {
        let g = ConvGeometry(inputHeight: 13, inputWidth: 13, kernel: 3, stride: 1, pad: 1)
        // One image a chunk (budget 2048); the default chunk holds the whole batch.
        for (budget, threads) in [(2048, 1), (2048, 2), (Convolution.defaultColumnBudget, 2)] {
            compare(Convolution(geometry: g, inputChannelsPerPart: 12, outputChannelsPerPart: 10, parts: 2, sharedInput: true,
                                threads: threads, columnBudget: budget, winograd: .whereItPays), batch: 3, "shared input, budget \(budget), \(threads) threads")
            compare(Convolution(geometry: g, inputChannelsPerPart: 6, outputChannelsPerPart: 5, parts: 2, sharedInput: false,
                                threads: threads, columnBudget: budget, winograd: .whereItPays), batch: 3, "tower-local, budget \(budget), \(threads) threads")
            compare(Convolution(geometry: g, inputChannelsPerPart: 7, outputChannelsPerPart: 9, parts: 1, sharedInput: false,
                                threads: threads, columnBudget: budget, winograd: .whereItPays), batch: 2, "one part, budget \(budget), \(threads) threads")
        }
    }
}
