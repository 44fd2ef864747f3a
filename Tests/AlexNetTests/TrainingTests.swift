// Training as a whole: bit-identical reruns, the exchange's reduce-scatter, checkpoints, and learning the embedded set.
import AlexNet
import Foundation
import XCTest

final class TrainingTests: XCTestCase {
    func settings(steps: Int, seed: UInt64 = 5, layout: ReplicaLayout = .sequential) -> TrainingSettings {
        var s = TrainingSettings()
        s.layout = layout
        s.model = ModelConfig(width: 0.125, classes: 10, dropout: 0.5)
        s.batch = 8
        s.steps = steps
        s.seed = seed
        s.augment = true
        s.progressEvery = 1e9
        return s
    }

    func weights(after s: TrainingSettings) throws -> (losses: [Double], weights: [Float]) {
        let t = try Trainer(settings: s, data: .smallEmbedded(seed: s.seed))
        t.log = { _ in }
        var cache = (epoch: -1, order: [Int]())
        let losses = try (0..<s.steps).map { try t.trainStep($0, cache: &cache).loss }
        return (losses, t.replica.wholeModel())
    }

    /// Acceptance: same seed and settings → bit-identical weights after N steps (dropout and augmentation on).
    func testSameSeedGivesBitIdenticalWeights() throws {
        let a = try weights(after: settings(steps: 4)), b = try weights(after: settings(steps: 4))
        XCTAssertEqual(a.losses, b.losses)
        XCTAssertTrue(a.weights == b.weights, "weights differ between two runs with the same seed")
        let c = try weights(after: settings(steps: 4, seed: 6))
        XCTAssertFalse(a.weights == c.weights, "another seed should give other weights")
        XCTAssertTrue(a.losses.allSatisfy { $0.isFinite })
    }

    /// Two towers in two threads (each a single-tower model behind the shared-memory exchange) train the same
    /// numbers as both towers in one model.
    func testThreadedTowersMatchOneModel() throws {
        let one = try weights(after: settings(steps: 4)), two = try weights(after: settings(steps: 4, layout: .threadedTowers))
        for (a, b) in zip(one.losses, two.losses) { XCTAssertEqual(a, b, accuracy: 1e-5 * abs(a)) }
        XCTAssertLessThan(relativeError(two.weights, one.weights), 1e-5)
    }

    func testCheckpointRoundTripKeepsWeightsAndMomentum() throws {
        let s = settings(steps: 2)
        let t = try Trainer(settings: s, data: .smallEmbedded(seed: s.seed))
        var cache = (epoch: -1, order: [Int]())
        for step in 0..<2 { _ = try t.trainStep(step, cache: &cache) }
        let path = Paths.temporaryDirectory("checkpoint") + "/c.safetensors"
        try t.saveCheckpoint(path, step: 2)
        let store = ParameterStore(config: s.model, towers: 0..<2)
        let state = try Checkpoint.load(path, into: store, momentum: true)
        XCTAssertEqual(state?.step, 2)
        XCTAssertEqual(state?.model, s.model)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: store.values, count: store.count)), t.replica.wholeModel())
        XCTAssertEqual(Array(UnsafeBufferPointer(start: store.momentum, count: store.count)), t.replica.wholeModel(momentum: true))
        // One tower's store reads exactly its rows of every tensor.
        let tower1 = ParameterStore(config: s.model, towers: 1..<2)
        try Checkpoint.load(path, into: tower1)
        for t1 in tower1.tensors {
            let whole = store.tensor(t1.name)
            let first = whole.offset + t1.rows.lowerBound * t1.rowSize
            XCTAssertEqual(Array(UnsafeBufferPointer(start: tower1.values + t1.offset, count: t1.count)),
                           Array(UnsafeBufferPointer(start: store.values + first, count: t1.count)), t1.name)
        }
    }

    func testLocalReduceScatterAddsOwnThenPartner() throws {
        let exchange = LocalTowerExchange()
        var a: [Float] = [1, 2, 3, 4, 5], b: [Float] = [10, 20, 30, 40, 50]
        var out = [Float](repeating: 0, count: 5)
        try a.withUnsafeMutableBufferPointer { ap in try b.withUnsafeMutableBufferPointer { bp in
            try out.withUnsafeMutableBufferPointer { op in
                try exchange.reduceScatter(partials: [ap.baseAddress!, bp.baseAddress!], offsets: [0, 2, 5],
                                           into: op.baseAddress!, at: .fc6InputGradient)
            }
        } }
        XCTAssertEqual(out, [11, 22, 33, 44, 55])
    }

    /// Shared-memory data parallelism: a rank's update of its share from every rank's gradients (added in rank order)
    /// is, bit for bit, the plain update with their sum, there and only there; its returned sum is the share's.
    func testTheUpdateOfAShareFromSeveralGradientsIsThePlainUpdateOfTheirSum() {
        let count = 1_001, share = 13..<700   // neither end on a multiple of 8: the scalar tails run too
        func filled(_ seed: UInt64, scale: Float) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: count)
            for i in 0..<count { p[i] = scale * CounterRandom.normal(seed: seed, .initialisation, 0, UInt64(i)) }
            return p
        }
        let grads = [filled(1, scale: 1e-2), filled(2, scale: 1e-2), filled(3, scale: 1e-2)]
        let (w, v, wPlain, vPlain) = (filled(4, scale: 0.1), filled(5, scale: 1e-3), filled(4, scale: 0.1), filled(5, scale: 1e-3))
        let summed = UnsafeMutablePointer<Float>.allocate(capacity: count)
        for i in 0..<count { summed[i] = grads[0][i] + grads[1][i] + grads[2][i] }
        defer { for p in grads + [w, v, wPlain, vPlain, summed] { p.deallocate() } }
        let sum = SGD.step(values: w, summing: grads.map { UnsafePointer($0) }, momentum: v, range: share,
                           learningRate: 0.01, momentum: 0.9, weightDecay: 5e-4)
        _ = SGD.step(values: wPlain + share.lowerBound, gradients: summed + share.lowerBound, momentum: vPlain + share.lowerBound,
                     count: share.count, learningRate: 0.01, momentum: 0.9, weightDecay: 5e-4, threads: 1)
        let before = filled(4, scale: 0.1), momentumBefore = filled(5, scale: 1e-3)
        defer { before.deallocate(); momentumBefore.deallocate() }
        for i in 0..<count {
            XCTAssertEqual(w[i].bitPattern, (share.contains(i) ? wPlain[i] : before[i]).bitPattern, "weight \(i)")
            XCTAssertEqual(v[i].bitPattern, (share.contains(i) ? vPlain[i] : momentumBefore[i]).bitPattern, "momentum \(i)")
        }
        XCTAssertEqual(sum, share.reduce(0.0) { $0 + Double(w[$1]) }, accuracy: 1e-4)   // float lanes, then a double
    }

    func testPaperInitialisation() {
        let store = ParameterStore(config: ModelConfig(width: 0.25, classes: 10), towers: 0..<2)
        store.initialisePaper(seed: 3)
        let w = store.tensor("fc6.weight")
        let values = Array(UnsafeBufferPointer(start: store.values + w.offset, count: w.count))
        let mean = values.reduce(0, +) / Float(values.count)
        let std = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(values.count)).squareRoot()
        XCTAssertEqual(std, 0.01, accuracy: 0.0005)
        XCTAssertEqual(mean, 0, accuracy: 0.0005)
        for name in ["conv1.bias", "conv3.bias", "fc8.bias"] {
            let t = store.tensor(name)
            XCTAssertTrue(UnsafeBufferPointer(start: store.values + t.offset, count: t.count).allSatisfy { $0 == 0 }, name)
        }
        for name in ["conv2.bias", "conv4.bias", "conv5.bias", "fc6.bias", "fc7.bias"] {
            let t = store.tensor(name)
            XCTAssertTrue(UnsafeBufferPointer(start: store.values + t.offset, count: t.count).allSatisfy { $0 == 1 }, name)
        }
        // Tower 1 alone draws the same numbers as the whole model for its rows.
        let tower1 = ParameterStore(config: store.config, towers: 1..<2)
        tower1.initialisePaper(seed: 3)
        let t1 = tower1.tensor("conv3.weight"), whole = store.tensor("conv3.weight")
        XCTAssertEqual(Array(UnsafeBufferPointer(start: tower1.values + t1.offset, count: t1.count)),
                       Array(UnsafeBufferPointer(start: store.values + whole.offset + t1.rows.lowerBound * t1.rowSize, count: t1.count)))
    }

    func testChannelCountsUnderWidth() {
        let c = ModelConfig(width: 0.125, classes: 10)
        XCTAssertEqual([c.conv1, c.conv2, c.conv3, c.conv4, c.conv5, c.fc6, c.fc7], [12, 32, 48, 48, 32, 512, 512])
        let paper = ModelConfig(width: 1, classes: 1000)
        XCTAssertEqual([paper.conv1, paper.conv2, paper.conv3, paper.conv4, paper.conv5, paper.fc6, paper.fc7],
                       [96, 256, 384, 384, 256, 4096, 4096])
        XCTAssertEqual(paper.trainingFlopsPerImage / 1e9, 4.14, accuracy: 0.01)
    }
}
