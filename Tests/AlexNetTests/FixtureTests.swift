// Acceptance: the PyTorch fixture in Tests/Fixtures/tiny reproduces (logits, loss, gradients, two updates).
import AlexNet
import Foundation
import XCTest

final class FixtureTests: XCTestCase {
    struct Fixture {
        let config: ModelConfig
        let batch: Int
        let input: [Float]         // (3, N, 227, 227) channel-major
        let labels: [Int32]
        let expected: SafetensorsFile
        let weights: String
    }

    static func loadFixture() throws -> Fixture {
        try Paths.requireFixture()
        let dir = Paths.fixture
        let data = try NumpyDataset.splits(directory: dir, classes: 10)
        let n = data.train.count
        var x = [Float](repeating: 0, count: 3 * n * 227 * 227)
        let assembler = BatchAssembler(training: data.train, seed: 1)
        let labels = x.withUnsafeMutableBufferPointer {
            assembler.assemble(data.train, indices: Array(0..<n), epoch: 0, augment: false, into: $0.baseAddress!)
        }
        return Fixture(config: ModelConfig(width: 0.125, classes: 10, dropout: 0), batch: n, input: x, labels: labels,
                       expected: try SafetensorsFile(path: dir + "/expected.safetensors"), weights: dir + "/weights.safetensors")
    }

    /// Forward, loss, gradients and two SGD steps against PyTorch; `budget` forces im2col chunking when small.
    func checkFixture(columnBudget budget: Int, winograd: WinogradUse = .whereItPays) throws {
        let f = try Self.loadFixture()
        let model = TwoTowerAlexNet(config: f.config, maxBatch: f.batch, exchange: LocalTowerExchange(), columnBudget: budget,
                                    winograd: winograd)
        try Checkpoint.load(f.weights, into: model.parameters)
        // The fixture holds exactly the model's tensors, with the model's shapes: none is left out of the checks below.
        let file = try SafetensorsFile(path: f.weights)
        XCTAssertEqual(Set(file.entries.keys), Set(model.parameters.tensors.map(\.name)), "tensors of the fixture vs the model")
        for t in model.parameters.tensors { XCTAssertEqual(file.entries[t.name]?.shape, t.shape, t.name) }
        try f.input.withUnsafeBufferPointer { x in
            for step in 1...2 {
                let logits = try model.forward(input: x.baseAddress!, batch: f.batch, training: true)
                let loss = try model.loss(labels: f.labels, batch: f.batch, normaliser: f.batch) / Double(f.batch)
                if step == 1 {
                    // logits: ours (classes, N), PyTorch's (N, classes)
                    let ref = try f.expected.readAll("logits").values
                    var mine = [Float](repeating: 0, count: ref.count)
                    for n in 0..<f.batch { for c in 0..<10 { mine[n * 10 + c] = logits[c * f.batch + n] } }
                    XCTAssertLessThan(relativeError(mine, ref), 1e-4, "logits")
                    let refLoss = try f.expected.readAll("loss").values[0]
                    XCTAssertLessThan(abs(loss - Double(refLoss)) / Double(refLoss), 1e-4, "loss")
                } else {
                    let refLoss = try f.expected.readAll("step2.loss_before").values[0]
                    XCTAssertLessThan(abs(loss - Double(refLoss)) / Double(refLoss), 1e-4, "loss before step 2")
                }
                try model.backward(input: x.baseAddress!, batch: f.batch, training: true)
                if step == 1 {
                    for t in model.parameters.tensors {
                        let ref = try f.expected.readAll("grad." + t.name).values
                        let mine = Array(UnsafeBufferPointer(start: model.parameters.gradients + t.offset, count: t.count))
                        XCTAssertLessThan(relativeError(mine, ref), 1e-4, "gradient of \(t.name)")
                    }
                }
                model.parameters.sgdStep(learningRate: 0.01, momentum: 0.9, weightDecay: 5e-4)
                let weights = try SafetensorsFile(path: f.weights)
                for t in model.parameters.tensors {
                    let w0 = try weights.readAll(t.name).values
                    let ref = try f.expected.readAll("step\(step).\(t.name)").values
                    let mine = Array(UnsafeBufferPointer(start: model.parameters.values + t.offset, count: t.count))
                    let refUpdate = zip(ref, w0).map { $0 - $1 }
                    let update = zip(mine, w0).map { $0 - $1 }
                    XCTAssertLessThan(relativeError(update, refUpdate), 1e-3, "update \(step) of \(t.name)")
                }
            }
        }
    }

    func testFixtureReproducesPyTorch() throws { try checkFixture(columnBudget: Convolution.defaultColumnBudget) }

    /// Every convolution as im2col + sgemm (no Winograd), split into many chunks, must give the same numbers.
    func testFixtureReproducesPyTorchWithSmallIm2colChunks() throws { try checkFixture(columnBudget: 1000, winograd: .never) }

    /// conv2–conv5 as Winograd (as training runs them) with one image a chunk.
    func testFixtureReproducesPyTorchWithSmallWinogradChunks() throws { try checkFixture(columnBudget: 20_000) }
}
