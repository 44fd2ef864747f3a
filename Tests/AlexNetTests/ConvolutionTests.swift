// Convolution (im2col + sgemm, and Winograd for 3 × 3 and 5 × 5; tower parts): against a plain-loop grouped convolution, and central differences
// for input, weight and bias gradients, both for tower-local layers (groups) and for layers after an exchange.
import AlexNet
import XCTest

final class ConvolutionTests: XCTestCase {
    struct Case {
        let conv: Convolution
        let batch: Int
        var cin: Int { conv.inputChannels }
        var inputCount: Int { cin * batch * conv.geometry.inputPlane }
        var outputCount: Int { conv.outputChannels * batch * conv.geometry.outputPlane }
        /// The same layer with another chunk budget and thread count (and Winograd as the case says).
        func with(columnBudget: Int, threads: Int) -> Case {
            Case(conv: Convolution(geometry: conv.geometry, inputChannelsPerPart: conv.inputChannelsPerPart,
                                   outputChannelsPerPart: conv.outputChannelsPerPart, parts: conv.parts,
                                   sharedInput: conv.sharedInput, threads: threads, columnBudget: columnBudget,
                                   winograd: conv.winogradUse), batch: batch)
        }
    }

    static func make(sharedInput: Bool, kernel: Int, stride: Int, pad: Int, size: Int = 9, winograd: WinogradUse = .whereItPays) -> Case {
        let g = ConvGeometry(inputHeight: size, inputWidth: size, kernel: kernel, stride: stride, pad: pad)
        return Case(conv: Convolution(geometry: g, inputChannelsPerPart: sharedInput ? 4 : 2, outputChannelsPerPart: 3,
                                      parts: 2, sharedInput: sharedInput, winograd: winograd), batch: 3)
    }

    func forward(_ c: Case, _ x: [Float], _ w: [Float], _ b: [Float], relu: Bool = false) -> [Float] {
        var y = [Float](repeating: 0, count: c.outputCount)
        var col = [Float](repeating: 0, count: c.conv.columnBufferSize(batch: c.batch))
        y.withUnsafeMutableBufferPointer { yp in col.withUnsafeMutableBufferPointer { cp in
            c.conv.forward(input: x, batch: c.batch, weight: w, bias: b, output: yp.baseAddress!, col: cp.baseAddress!, relu: relu)
        } }
        return y
    }

    /// (dx summed over parts, dW, db)
    func backward(_ c: Case, _ x: [Float], _ w: [Float], _ dy: [Float]) -> ([Float], [Float], [Float]) {
        var dw = [Float](repeating: 0, count: c.conv.weightCount), db = [Float](repeating: 0, count: c.conv.outputChannels)
        let size = c.conv.columnBufferSize(batch: c.batch)
        var col = [Float](repeating: 0, count: size), dcol = col
        let perPart = c.conv.inputChannelsPerPart * c.batch * c.conv.geometry.inputPlane
        var parts = [Float](repeating: 0, count: c.conv.sharedInput ? 2 * perPart : perPart * 2)
        dw.withUnsafeMutableBufferPointer { wp in db.withUnsafeMutableBufferPointer { bp in
            col.withUnsafeMutableBufferPointer { cp in dcol.withUnsafeMutableBufferPointer { dp in
                parts.withUnsafeMutableBufferPointer { pp in
                    c.conv.backward(input: x, batch: c.batch, weight: w, outputGradient: dy,
                                    weightGradient: wp.baseAddress!, biasGradient: bp.baseAddress!,
                                    inputGradients: [pp.baseAddress!, pp.baseAddress! + perPart],
                                    col: cp.baseAddress!, colGradient: dp.baseAddress!)
                }
            } }
        } }
        // Tower-local: the parts are the two halves of dx. Shared input: two full-size partials to add.
        let dx = c.conv.sharedInput ? (0..<perPart).map { parts[$0] + parts[perPart + $0] } : parts
        return (dx, dw, db)
    }

    func naive(_ c: Case, _ x: [Float], _ w: [Float], _ b: [Float]) -> [Float] {
        let g = c.conv.geometry
        if c.conv.sharedInput {   // every output sees all input channels
            return Naive.conv(x, channels: c.cin, batch: c.batch, height: g.inputHeight, width: g.inputWidth, weight: w, bias: b,
                              outChannels: c.conv.outputChannels, kernel: g.kernel, stride: g.stride, pad: g.pad, groups: 1)
        }
        return Naive.conv(x, channels: c.cin, batch: c.batch, height: g.inputHeight, width: g.inputWidth, weight: w, bias: b,
                          outChannels: c.conv.outputChannels, kernel: g.kernel, stride: g.stride, pad: g.pad, groups: 2)
    }

    let cases: [(String, Case)] = [
        ("tower-local 3/1/1 (Winograd)", make(sharedInput: false, kernel: 3, stride: 1, pad: 1)),
        ("shared input 3/1/1 (Winograd)", make(sharedInput: true, kernel: 3, stride: 1, pad: 1)),
        ("tower-local 3/1/1 (im2col)", make(sharedInput: false, kernel: 3, stride: 1, pad: 1, winograd: .never)),
        ("shared input 3/1/1, 10 × 10 (Winograd, no cropped tiles)", make(sharedInput: true, kernel: 3, stride: 1, pad: 1, size: 10)),
        ("tower-local 5/1/2 (Winograd)", make(sharedInput: false, kernel: 5, stride: 1, pad: 2)),
        ("tower-local 5/1/2 (im2col)", make(sharedInput: false, kernel: 5, stride: 1, pad: 2, winograd: .never)),
        ("shared input 3/2/0 (strided)", make(sharedInput: true, kernel: 3, stride: 2, pad: 0, size: 11)),
        ("shared input 4/3/1 (strided, padded)", make(sharedInput: true, kernel: 4, stride: 3, pad: 1, size: 11)),
    ]

    func testForwardMatchesPlainLoops() {
        for (budget, threads) in [(1 << 21, 2), (50, 1), (700, 2)] {   // one chunk on two threads; one output row a chunk; chunks of a few rows that cross images
            for (name, whole) in cases {
                let c = whole.with(columnBudget: budget, threads: threads)
                let x = randomFloats(c.inputCount, seed: 1), w = randomFloats(c.conv.weightCount, seed: 2)
                let b = randomFloats(c.conv.outputChannels, seed: 3)
                let reference = naive(c, x, w, b)
                XCTAssertLessThan(relativeError(forward(c, x, w, b), reference), 1e-5, name)
                XCTAssertLessThan(relativeError(forward(c, x, w, b, relu: true), reference.map { max($0, 0) }), 1e-5, name + " + ReLU")
            }
        }
    }

    func testGradients() {
        for (budget, threads) in [(1 << 21, 2), (50, 1), (700, 2)] {
            for (name, whole) in cases {
                let c = whole.with(columnBudget: budget, threads: threads)
                let x = randomFloats(c.inputCount, seed: 1), w = randomFloats(c.conv.weightCount, seed: 2, scale: 0.5)
                let b = randomFloats(c.conv.outputChannels, seed: 3)
                let check = GradientCheck(step: 1e-2, threshold: 2e-2, maxChecked: 150)
                check.check("\(name) input", input: x, outputCount: c.outputCount, forward: { self.forward(c, $0, w, b) }) {
                    self.backward(c, $0, w, $1).0
                }
                check.check("\(name) weight", input: w, outputCount: c.outputCount, forward: { self.forward(c, x, $0, b) }) {
                    self.backward(c, x, $0, $1).1
                }
                check.check("\(name) bias", input: b, outputCount: c.outputCount, forward: { self.forward(c, x, w, $0) }) {
                    self.backward(c, x, w, $1).2
                }
            }
        }
    }
}
