// The direct strided convolution (conv1's path: phase planes, no im2col): forward against plain loops, the weight
// gradient against a plain-loop sum and central differences, with and without padding, shared and tower-local
// input, channel counts that leave a remainder after the kernel's blocks of six, a plane whose odd number of vectors a
// row makes the forward's pairs span rows and whose rows span two weight-gradient bands, stride 4 (whose split deals
// 32 columns at a time) with and without padding, and the same numbers on any thread count; each with the eight-lane
// (AVX2) kernel and, where the CPU has AVX-512, the sixteen-lane one (AlexNetKernelsWide) on every case at least 16
// outputs wide, among them rows of three 16-lane vectors.
import AlexNet
import XCTest

final class StridedConvolutionTests: XCTestCase {
    struct Case {
        let name: String
        let conv: Convolution
        let batch: Int
        var inputCount: Int { conv.inputChannels * batch * conv.geometry.inputPlane }
        var outputCount: Int { conv.outputChannels * batch * conv.geometry.outputPlane }
    }

    static func make(_ name: String, size: Int, kernel: Int, stride: Int, pad: Int, inputs: Int, outputs: Int,
                     sharedInput: Bool, threads: Int = 1) -> Case {
        let g = ConvGeometry(inputHeight: size, inputWidth: size + 3, kernel: kernel, stride: stride, pad: pad)
        return Case(name: name, conv: Convolution(geometry: g, inputChannelsPerPart: inputs, outputChannelsPerPart: outputs,
                                                  parts: 2, sharedInput: sharedInput, threads: threads), batch: 3)
    }

    let cases: [Case] = [
        make("conv1-like 11/4/0, 5 channels a tower", size: 43, kernel: 11, stride: 4, pad: 0, inputs: 3, outputs: 5, sharedInput: true),
        make("5/2/2 padded, tower-local", size: 21, kernel: 5, stride: 2, pad: 2, inputs: 2, outputs: 4, sharedInput: false),
        make("3/3/1, 2 channels a tower", size: 26, kernel: 3, stride: 3, pad: 1, inputs: 3, outputs: 2, sharedInput: true),
        make("11/4/0 to 17 × 17, 7 channels a tower", size: 75, kernel: 11, stride: 4, pad: 0, inputs: 3, outputs: 7, sharedInput: true),
        make("7/4/3 padded, tower-local (stride 4's vector split starts at column 1)", size: 40, kernel: 7, stride: 4, pad: 3,
             inputs: 2, outputs: 3, sharedInput: false),
        Case(name: "11/4/0 to 4 × 35 (three 16-lane vectors a row), 7 channels a tower",
             conv: Convolution(geometry: ConvGeometry(inputHeight: 23, inputWidth: 147, kernel: 11, stride: 4, pad: 0),
                               inputChannelsPerPart: 3, outputChannelsPerPart: 7, parts: 2, sharedInput: true), batch: 1),
    ]

    /// Each case with the eight-lane kernel, and with the sixteen-lane one where the CPU and the case's width allow it.
    var variants: [Case] {
        cases.flatMap { c -> [Case] in
            var narrow = c.conv, wide = c.conv
            narrow.directKernelLanes = Convolution.narrowDirectLanes
            wide.directKernelLanes = 16
            return [Case(name: c.name + " (8 lanes)", conv: narrow, batch: c.batch)]
                + (wide.directLanesUsed == 16 ? [Case(name: c.name + " (16 lanes)", conv: wide, batch: c.batch)] : [])
        }
    }

    func forward(_ c: Case, _ x: [Float], _ w: [Float], _ b: [Float], relu: Bool = false) -> [Float] {
        var y = [Float](repeating: .nan, count: c.outputCount)
        var col = [Float](repeating: 0, count: c.conv.columnBufferSize(batch: c.batch))
        y.withUnsafeMutableBufferPointer { yp in col.withUnsafeMutableBufferPointer { cp in
            c.conv.forward(input: x, batch: c.batch, weight: w, bias: b, output: yp.baseAddress!, col: cp.baseAddress!, relu: relu)
        } }
        return y
    }

    /// (dW, db) without input gradients: the direct path.
    func weightGradient(_ c: Case, _ x: [Float], _ w: [Float], _ dy: [Float]) -> ([Float], [Float]) {
        var dw = [Float](repeating: .nan, count: c.conv.weightCount), db = [Float](repeating: .nan, count: c.conv.outputChannels)
        var col = [Float](repeating: 0, count: c.conv.columnBufferSize(batch: c.batch)), dcol = col
        dw.withUnsafeMutableBufferPointer { wp in db.withUnsafeMutableBufferPointer { bp in
            col.withUnsafeMutableBufferPointer { cp in dcol.withUnsafeMutableBufferPointer { dp in
                c.conv.backward(input: x, batch: c.batch, weight: w, outputGradient: dy,
                                weightGradient: wp.baseAddress!, biasGradient: bp.baseAddress!, inputGradients: nil,
                                col: cp.baseAddress!, colGradient: dp.baseAddress!)
            } }
        } }
        return (dw, db)
    }

    /// dW[o, ci, a, b] = Σ_(n, i, j) dy[o, n, i, j] · x[c, n, i·s − p + a, j·s − p + b], in plain loops.
    func naiveWeightGradient(_ c: Case, _ x: [Float], _ dy: [Float]) -> [Float] {
        let g = c.conv.geometry, conv = c.conv, k = g.kernel
        var dw = [Float](repeating: 0, count: conv.weightCount)
        for o in 0..<conv.outputChannels {
            let part = o / conv.outputChannelsPerPart
            for ci in 0..<conv.inputChannelsPerPart { for a in 0..<k { for b in 0..<k {
                let channel = conv.sharedInput ? ci : part * conv.inputChannelsPerPart + ci
                var sum = 0.0
                for n in 0..<c.batch { for i in 0..<g.outputHeight { for j in 0..<g.outputWidth {
                    let yy = i * g.stride - g.pad + a, xx = j * g.stride - g.pad + b
                    guard yy >= 0 && yy < g.inputHeight && xx >= 0 && xx < g.inputWidth else { continue }
                    sum += Double(dy[((o * c.batch + n) * g.outputHeight + i) * g.outputWidth + j])
                        * Double(x[((channel * c.batch + n) * g.inputHeight + yy) * g.inputWidth + xx])
                } } }
                dw[((o * conv.inputChannelsPerPart + ci) * k + a) * k + b] = Float(sum)
            } } }
        }
        return dw
    }

    func testTheCasesRunDirect() throws {
        for c in variants { XCTAssertTrue(c.conv.runsDirect, c.name) }
        XCTAssertEqual(variants.filter { $0.conv.directLanesUsed == 16 }.count, CPUFeatures.hasAVX512 ? 2 : 0)
        // More than 24 channels a part: direct only with sixteen lanes (up to 48), else im2col + sgemm.
        let g = ConvGeometry(inputHeight: 43, inputWidth: 75, kernel: 11, stride: 4, pad: 0)
        for (channels, lanes, direct) in [(30, 16, CPUFeatures.hasAVX512), (30, 8, false), (48, 16, CPUFeatures.hasAVX512), (49, 16, false),
                                          (24, 8, true), (8, 0, false)] {
            var conv = Convolution(geometry: g, inputChannelsPerPart: 3, outputChannelsPerPart: channels, parts: 1, sharedInput: true)
            conv.directKernelLanes = lanes
            XCTAssertEqual(conv.runsDirect, direct, "\(channels) channels, \(lanes) lanes")
        }
        // The last case: 3 vectors a row (odd), 17 rows (more than one band of 16).
        XCTAssertEqual([cases[3].conv.geometry.outputHeight, cases[3].conv.geometry.outputWidth], [17, 17])
        // Layers with stride 1, or too narrow for a vector, keep im2col.
        XCTAssertFalse(Convolution(geometry: .init(inputHeight: 13, inputWidth: 13, kernel: 3, stride: 1, pad: 1),
                                   inputChannelsPerPart: 4, outputChannelsPerPart: 4, parts: 1, sharedInput: true).runsDirect)
        XCTAssertFalse(Convolution(geometry: .init(inputHeight: 11, inputWidth: 11, kernel: 3, stride: 2, pad: 0),
                                   inputChannelsPerPart: 4, outputChannelsPerPart: 4, parts: 1, sharedInput: true).runsDirect)
    }

    func testForwardMatchesPlainLoops() {
        for c in variants {
            let x = randomFloats(c.inputCount, seed: 11), w = randomFloats(c.conv.weightCount, seed: 12)
            let b = randomFloats(c.conv.outputChannels, seed: 13)
            let g = c.conv.geometry
            let reference = Naive.conv(x, channels: c.conv.inputChannels, batch: c.batch, height: g.inputHeight, width: g.inputWidth,
                                       weight: w, bias: b, outChannels: c.conv.outputChannels, kernel: g.kernel, stride: g.stride,
                                       pad: g.pad, groups: c.conv.sharedInput ? 1 : 2)
            XCTAssertLessThan(relativeError(forward(c, x, w, b), reference), 1e-5, c.name)
            XCTAssertLessThan(relativeError(forward(c, x, w, b, relu: true), reference.map { max($0, 0) }), 1e-5, c.name + " + ReLU")
        }
    }

    func testWeightGradientMatchesPlainLoopsAndCentralDifferences() {
        for c in variants {
            let x = randomFloats(c.inputCount, seed: 21), w = randomFloats(c.conv.weightCount, seed: 22, scale: 0.5)
            let b = randomFloats(c.conv.outputChannels, seed: 23), dy = randomFloats(c.outputCount, seed: 24)
            let (dw, db) = weightGradient(c, x, w, dy)
            XCTAssertLessThan(relativeError(dw, naiveWeightGradient(c, x, dy)), 1e-5, c.name + " weight")
            let rowLength = c.batch * c.conv.geometry.outputPlane
            let expectedBias = (0..<c.conv.outputChannels).map { o in (0..<rowLength).reduce(Float(0)) { $0 + dy[o * rowLength + $1] } }
            XCTAssertLessThan(relativeError(db, expectedBias), 1e-5, c.name + " bias")
            // Central differences once a case (the eight-lane kernel): the plain-loop sum above checks every variant.
            guard c.conv.directLanesUsed == Convolution.narrowDirectLanes else { continue }
            GradientCheck(step: 1e-2, threshold: 2e-2, maxChecked: 150).check(c.name + " weight", input: w, outputCount: c.outputCount,
                                                                             forward: { self.forward(c, x, $0, b) }) {
                self.weightGradient(c, x, $0, $1).0
            }
        }
    }

    func testTheSameNumbersOnAnyThreadCount() {
        for c in variants {
            var threaded = Convolution(geometry: c.conv.geometry, inputChannelsPerPart: c.conv.inputChannelsPerPart,
                                       outputChannelsPerPart: c.conv.outputChannelsPerPart, parts: c.conv.parts,
                                       sharedInput: c.conv.sharedInput, threads: 3)
            threaded.directKernelLanes = c.conv.directKernelLanes
            let two = Case(name: c.name, conv: threaded, batch: c.batch)
            let x = randomFloats(c.inputCount, seed: 31), w = randomFloats(c.conv.weightCount, seed: 32)
            let b = randomFloats(c.conv.outputChannels, seed: 33), dy = randomFloats(c.outputCount, seed: 34)
            XCTAssertEqual(forward(c, x, w, b), forward(two, x, w, b), c.name)
            XCTAssertEqual(weightGradient(c, x, w, dy).0, weightGradient(two, x, w, dy).0, c.name)
        }
    }
}
