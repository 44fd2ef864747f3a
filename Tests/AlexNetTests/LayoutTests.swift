// Layouts as data, in process: the five presets and their refusals, what each rank holds (every row of the model,
// once per replica; fc slices disjoint and complete), the traffic predicted from the shapes, and the conv-data/
// fc-model layout's arithmetic on R threads against one process.
import AlexNet
import Foundation
import XCTest

final class LayoutTests: XCTestCase {
    func testPresetsRefuseWhatCannotWork() throws {
        for (mode, ranks, mpi) in [(ParallelMode.single, 1, false), (.model, 2, true), (.data, 3, true), (.hybrid, 4, true), (.owt, 3, true)] {
            XCTAssertNoThrow(try ParallelLayout(mode: mode, ranks: ranks, underMPI: mpi), "\(mode) on \(ranks)")
        }
        let refused: [(ParallelMode, Int, Bool, String)] = [
            (.single, 2, true, "one process"), (.model, 3, true, "exactly 2 ranks"), (.hybrid, 3, true, "even number"),
            (.owt, 1, true, "at least 2"), (.owt, 2, false, "under mpirun"), (.data, 1, false, "under mpirun")]
        for (mode, ranks, mpi, says) in refused {
            XCTAssertThrowsError(try ParallelLayout(mode: mode, ranks: ranks, underMPI: mpi), "\(mode) on \(ranks)") { error in
                XCTAssertTrue("\(error)".contains("--mode \(mode.rawValue)") && "\(error)".contains(says), "\(error)")
            }
        }
        let owt = try ParallelLayout(mode: .owt, ranks: 3, underMPI: true)
        XCTAssertNoThrow(try owt.checkBatch(10), "owt gathers blocks of any size: 3, 3 and 4 images")
        XCTAssertEqual((0..<3).map { owt.share(of: 10, replica: $0).count }, [3, 3, 4])
        XCTAssertThrowsError(try owt.checkBatch(2)) { XCTAssertTrue("\($0)".contains("--batch 2") && "\($0)".contains("no image")) }
        let data = try ParallelLayout(mode: .data, ranks: 3, underMPI: true)
        XCTAssertThrowsError(try data.checkBatch(10)) { XCTAssertTrue("\($0)".contains("--batch 10") && "\($0)".contains("3 replicas")) }
        XCTAssertEqual(owt.localBatch(12), 4)
        XCTAssertEqual(try ParallelLayout(mode: .hybrid, ranks: 6, underMPI: true).localBatch(12), 4)
    }

    /// Every layout's checkpoint contributors hold every row of every tensor; each rank's store is as large as the
    /// layout says; owt's fc slices are disjoint and complete, and its convolutions whole on every rank.
    func testRolesHoldTheWholeModel() throws {
        let config = ModelConfig(width: 0.125, classes: 11)   // 11 classes: slices of fc8 are uneven on 2, 3 and 4 ranks
        let cases: [(ParallelMode, [Int])] = [(.single, [1]), (.model, [2]), (.data, [2, 3]), (.hybrid, [2, 4, 6]), (.owt, [2, 3, 4, 5])]
        for (mode, counts) in cases {
            for ranks in counts {
                let layout = try ParallelLayout(mode: mode, ranks: ranks, underMPI: true)
                var stores: [ParameterStore] = []
                for r in 0..<ranks {
                    let role = layout.role(of: r)
                    let s = ParameterStore(config: config, towers: role.towers, fullyConnectedSlice: role.fullyConnectedSlice)
                    XCTAssertEqual(s.count, ParallelLayout.parameterCount(config, towers: role.towers, slice: role.fullyConnectedSlice))
                    stores.append(s)
                }
                XCTAssertTrue(ParameterStore.coverWholeModel(layout.checkpointContributors.map { stores[$0] }), "\(mode) on \(ranks)")
                if mode == .owt {
                    for t in config.tensors where ModelConfig.isFullyConnected(t.name) {
                        var rows: [Int] = []
                        for s in stores { rows += Array(s.tensor(t.name).rows) }
                        XCTAssertEqual(rows, Array(0..<t.shape[0]), "\(t.name): slices in rank order, each row once")
                    }
                    for s in stores { XCTAssertEqual(s.tensor("conv3.weight").rows, 0..<config.conv3) }
                }
            }
        }
        let pair = try ParallelLayout(mode: .model, ranks: 2, underMPI: true)
        XCTAssertFalse(ParameterStore.coverWholeModel([ParameterStore(config: config, towers: pair.role(of: 1).towers)]),
                       "one tower is not the model")
    }

    /// The allreduce of the conv-data/fc-model layout sums only the convolutions: under 5% of data parallelism's at
    /// W = 1, and the slice exchange moves what its all-gathers and reduce-scatters need.
    func testPredictedTraffic() throws {
        let paper = ModelConfig(width: 1, classes: 1000)
        let data = try ParallelLayout(mode: .data, ranks: 2, underMPI: true).predictedTraffic(rank: 0, config: paper, batch: 128)
        let owt = try ParallelLayout(mode: .owt, ranks: 2, underMPI: true).predictedTraffic(rank: 0, config: paper, batch: 128)
        var all = 0, conv = 0
        for t in paper.tensors {
            let n = t.shape.reduce(1, *)
            all += n
            if !ModelConfig.isFullyConnected(t.name) { conv += n }
        }
        XCTAssertEqual(data.allreduceFloats, all)
        XCTAssertEqual(owt.allreduceFloats, conv)
        XCTAssertLessThan(Double(owt.allreduceFloats), 0.05 * Double(data.allreduceFloats))
        XCTAssertEqual(owt.towerExchangeFloats, 0)
        // Two ranks of 64 images: pool5 features (9216 × 64) and labels out, 2048 fc6 + 2048 fc7 + 500 fc8 outputs
        // × 128 out; back: the other half of fc7's and fc6's input gradients (2048 × 128 each) and 9216 × 64.
        let forward: Int = 9216 * 64 + 64 + (2048 + 2048 + 500) * 128
        let backward: Int = 2 * 2048 * 128 + 9216 * 64
        XCTAssertEqual(owt.sliceExchangeFloats, forward + backward)
        let model = try ParallelLayout(mode: .model, ranks: 2, underMPI: true).predictedTraffic(rank: 1, config: paper, batch: 128)
        XCTAssertEqual(model.towerExchangeFloats, paper.exchangeFloatsPerStep(tower: 1, batch: 128))
        XCTAssertEqual(model.allreduceFloats, 0)
    }

    /// owt on 3 threads (4 images each, and 4, 4 and 5 of 13; uneven fc8 slices) against one process on the batch:
    /// the same loss, the convolutions' gradients summed over the threads equal one process's, each fc slice's
    /// gradients equal those rows of one process's; evaluation logits of each thread's images equal one process's columns.
    func testConvDataFcModelMatchesOneProcess() throws {
        try checkConvDataFcModel(batch: 12)
        try checkConvDataFcModel(batch: 13)
    }

    func checkConvDataFcModel(batch: Int) throws {
        let config = ModelConfig(width: 0.0625, classes: 11, dropout: 0.5)
        let ranks = 3
        let starts = (0...ranks).map { ModelConfig.sliceStart($0, of: batch, slices: ranks) }
        let labels = (0..<batch).map { Int32($0 * 7 % config.classes) }
        let input = randomFloats(3 * batch * 227 * 227, seed: 5)
        let one = Replica(config: config, maxBatch: batch, layout: .sequential)
        one.initialise(.he, seed: 3)
        let loss = try input.withUnsafeBufferPointer {
            try one.computeGradients(input: $0.baseAddress!, batch: batch, labels: labels, normaliser: batch, seed: 9, step: 4, firstSample: 0)
        }
        let exchanges = ThreadSliceExchange.group(ranks)
        let replicas = exchanges.map {
            Replica(config: config, maxBatch: (batch + ranks - 1) / ranks, exchange: LocalTowerExchange(), fullyConnectedExchange: $0)
        }
        for r in replicas { r.initialise(.he, seed: 3) }
        // Rank r's images: block r of every channel plane of the (3, N, 227, 227) input.
        let plane = 227 * 227
        var blocks: [[Float]] = []
        for r in 0..<ranks {
            var block: [Float] = []
            for c in 0..<3 {
                let lo: Int = (c * batch + starts[r]) * plane, hi: Int = (c * batch + starts[r + 1]) * plane
                block += input[lo..<hi]
            }
            blocks.append(block)
        }
        let results = ThreadResults(ranks), group = DispatchGroup()
        for r in 0..<ranks {
            let local = starts[r + 1] - starts[r], evaluated = batch / ranks
            let job = SharedForTest((replicas[r], blocks[r], Array(labels[starts[r]..<starts[r + 1]])))
            group.enter()
            Thread {
                let (replica, block, mine) = job.value
                let l = try! block.withUnsafeBufferPointer {
                    try replica.computeGradients(input: $0.baseAddress!, batch: local, labels: mine, normaliser: batch,
                                                 seed: 9, step: 4, firstSample: starts[r])
                }
                // Evaluation passes are alike on every rank: each evaluates the first batch / ranks of its images.
                let logits = try! block.withUnsafeBufferPointer { try replica.evaluate(input: $0.baseAddress!, batch: evaluated) }
                let classes = replica.config.classes
                results.record(r, loss: l, logits: Array(UnsafeBufferPointer(start: logits, count: classes * evaluated)))
                group.leave()
            }.start()
        }
        group.wait()
        let (losses, evaluated) = results.taken
        XCTAssertEqual(losses.reduce(0, +), loss, accuracy: 1e-5 * abs(loss), "batch \(batch)")
        let reference = one.stores[0]
        for (index, t) in reference.tensors.enumerated() {
            let expected = Array(UnsafeBufferPointer(start: reference.gradients + t.offset, count: t.count))
            var got: [Float] = []
            if ModelConfig.isFullyConnected(t.name) {
                for r in replicas {
                    let p = r.stores[0].tensors[index]
                    got += Array(UnsafeBufferPointer(start: r.stores[0].gradients + p.offset, count: p.count))
                }
            } else {
                got = [Float](repeating: 0, count: t.count)
                for r in replicas { for i in 0..<t.count { got[i] += r.stores[0].gradients[t.offset + i] } }
            }
            XCTAssertLessThan(relativeError(got, expected), 1e-5, "batch \(batch): \(t.name)")
        }
        // Each thread evaluated the first batch / ranks images of its block, read as a batch of that many: the same
        // images only when the blocks are that size.
        guard batch % ranks == 0 else { return }
        let all = try input.withUnsafeBufferPointer { try one.evaluate(input: $0.baseAddress!, batch: batch) }
        for r in 0..<ranks {
            var columns: [Float] = []
            for c in 0..<config.classes { for i in 0..<(batch / ranks) { columns.append(all[c * batch + starts[r] + i]) } }
            XCTAssertLessThan(relativeError(evaluated[r], columns), 1e-5, "evaluation logits of rank \(r)'s images")
        }
    }
}

/// What the test threads hand back, under a lock.
final class ThreadResults: @unchecked Sendable {
    private let lock = NSLock()
    private var losses: [Double], logits: [[Float]]
    init(_ n: Int) { losses = Array(repeating: 0, count: n); logits = Array(repeating: [], count: n) }
    func record(_ r: Int, loss: Double, logits l: [Float]) { lock.withLock { losses[r] = loss; logits[r] = l } }
    var taken: ([Double], [[Float]]) { lock.withLock { (losses, logits) } }
}

/// Hands a value to a test thread that the test thread alone then uses.
final class SharedForTest<T>: @unchecked Sendable { let value: T; init(_ value: T) { self.value = value } }

final class OversubscriptionTests: XCTestCase {
    func testWarnsWhenRanksTimesThreadsExceedTheCores() {
        let two = ["OMPI_COMM_WORLD_LOCAL_SIZE": "2"]
        XCTAssertNil(Oversubscription.warning(threads: 1, environment: two, allowed: 1, online: 2), "2 ranks × 1 thread on 2 cores")
        XCTAssertNil(Oversubscription.warning(threads: 2, environment: [:], allowed: 2, online: 2), "one process, 2 threads, 2 cores")
        let bound = Oversubscription.warning(threads: 2, environment: two, allowed: 1, online: 2)
        XCTAssertTrue(bound?.contains("may run on 1 core") == true && bound?.contains("--threads 1") == true, bound ?? "no warning")
        let crowded = Oversubscription.warning(threads: 1, environment: ["OMPI_COMM_WORLD_LOCAL_SIZE": "4"], allowed: 2, online: 2)
        XCTAssertTrue(crowded?.contains("4 ranks on this node") == true && crowded?.contains("2 cores") == true, crowded ?? "no warning")
    }
}
