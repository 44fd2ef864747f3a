// The cost model of `alexnet-mpi predict` on hand-computed cases: layer arithmetic, bytes per exchange and per
// allreduce for every layout at W = 1, batch 128, the ring allreduce, the overlap of buckets with backward, and
// network files.
import AlexNet
import Foundation
import XCTest

final class CostModelTests: XCTestCase {
    let paper = ModelConfig(width: 1, classes: 1000)

    /// Every layer at 100 GFLOP/s; the update and loss free.
    var flatRates: ComputeRates {
        var r = ComputeRates()
        for s in LayerArithmetic.layers { r.forward[s] = 1e11; r.backward[s] = 1e11 }
        r.updateRate = .infinity
        return r
    }

    func testLayerArithmeticAddsUpToTheTrainingStep() {
        for config in [paper, ModelConfig(width: 0.25, classes: 10)] {
            let total = LayerArithmetic.layers.reduce(0.0) { let f = LayerArithmetic.flops(config, $1); return $0 + f.forward + f.backward }
            XCTAssertEqual(total, config.trainingFlopsPerImage, accuracy: 1)
            let parameters = LayerArithmetic.layers.reduce(0) { $0 + LayerArithmetic.parameters(config, $1) }
            XCTAssertEqual(parameters, config.tensors.reduce(0) { $0 + $1.shape.reduce(1, *) })
        }
        XCTAssertEqual(LayerArithmetic.parameters(paper, .conv1), 96 * 3 * 11 * 11 + 96)
    }

    /// Bytes a rank sends in exchanges and bytes its allreduce sums, W = 1, batch 128, worked out by hand.
    func testBytesOfEveryLayoutAtThePapersBatch() throws {
        let model = CostModel(config: paper, rates: flatRates, network: NetworkModel(name: "test", latency: 1e-5, bandwidth: 1e9))
        func bytes(_ mode: ParallelMode, _ nodes: Int) throws -> (Double, Double) {
            let p = try XCTUnwrap(model.predict(mode, nodes: nodes, batch: 128), "\(mode) on \(nodes)")
            return (p.exchangeBytes, p.allreduceBytes)
        }
        // The paper's split, per rank: pool2 halves before conv3 (128 × 13 × 13 × 128 images) and their gradients,
        // pool5 halves (128 × 36 × 128) both ways, 2048 fc6 and 2048 fc7 outputs both ways, 500 logits.
        let towerFloats = 2 * 128 * 169 * 128 + 2 * 128 * 36 * 128 + 2 * 2 * 2048 * 128 + 500 * 128
        XCTAssertEqual(try bytes(.single, 1).0, 0)
        XCTAssertEqual(try bytes(.model, 2).0, Double(4 * towerFloats))
        XCTAssertEqual(try bytes(.model, 2).0, 31_320_064)
        XCTAssertEqual(try bytes(.model, 2).1, 0)
        // Data: every parameter, 60,965,224 of them.
        XCTAssertEqual(try bytes(.data, 2).1, 243_860_896)
        XCTAssertEqual(try bytes(.data, 8).1, 243_860_896)
        XCTAssertEqual(try bytes(.data, 2).0, 0)
        // Hybrid on 4: each pair at 64 images (half the paper split's activations); half of every layer summed.
        XCTAssertEqual(try bytes(.hybrid, 4).0, 31_320_064 / 2)
        XCTAssertEqual(try bytes(.hybrid, 4).1, 243_860_896 / 2)
        // owt on 2: the convolutions' 2,334,080 parameters summed; features and labels of 64 images out, half of fc6,
        // fc7 and fc8's outputs for 128 images out, the other halves of fc7's and fc6's input gradients and the
        // other rank's 64 images' fc6 input gradient back.
        XCTAssertEqual(try bytes(.owt, 2).1, 4 * 2_334_080)
        let owtFloats = 9216 * 64 + 64 + (2048 + 2048 + 500) * 128 + 2 * 2048 * 128 + 9216 * 64
        XCTAssertEqual(try bytes(.owt, 2).0, Double(4 * owtFloats))
        XCTAssertNil(model.predict(.model, nodes: 4, batch: 128), "model parallelism is two ranks")
        XCTAssertNil(model.predict(.data, nodes: 3, batch: 128), "data parallelism needs an even split")
        XCTAssertNotNil(model.predict(.owt, nodes: 3, batch: 128), "owt splits unevenly")
    }

    func testRingCollectives() {
        let model = CostModel(config: paper, rates: flatRates, network: NetworkModel(name: "test", latency: 1e-5, bandwidth: 1e9))
        // 2(G − 1) = 6 messages of 1/4 of 4 MB: 6 × (10 µs + 1 ms).
        XCTAssertEqual(model.ringAllreduce(floats: 1e6, group: 4), 6 * (1e-5 + 1e-3), accuracy: 1e-12)
        XCTAssertEqual(model.ringAllreduce(floats: 1e6, group: 1), 0)
        XCTAssertEqual(model.ringCollective(partFloats: 1e6, group: 3), 2 * (1e-5 + 4e-3), accuracy: 1e-12)
    }

    /// The allreduce hides behind backward on a fast link and shows on a slow one; what shows is at least the last
    /// bucket (it starts when backward ends) and at most the whole allreduce.
    func testBucketsOverlapBackward() throws {
        func predict(_ bandwidth: Double) throws -> StepPrediction {
            try XCTUnwrap(CostModel(config: paper, rates: flatRates, network: NetworkModel(name: "t", latency: 1e-5, bandwidth: bandwidth))
                .predict(.data, nodes: 2, batch: 128))
        }
        let fast = try predict(1e12), slow = try predict(1.25e8)
        // 2 ranks: 2 messages of half a bucket each. Buckets hold at most 6,553,600 floats (25 MB), as in
        // GradientAllreduce: fc8 + fc7 (20.9 M floats, ready together) go as 4, fc6 (37.7 M) as 6 and the
        // convolutions (2.3 M) as 1, 11 buckets in all. Backward of 64 images at 100 GFLOP/s takes ~1.7 s, its fc
        // layers the first ~0.15 s. At 1 TB/s the whole allreduce takes 0.25 ms: hidden, but for the last bucket
        // (conv5 … conv1, 9.3 MB, started when backward ends).
        let buckets = [(4_097_000 + 16_781_312, 4), (37_752_832, 6), (2_334_080, 1)]
        for (floats, count) in buckets { XCTAssertEqual((floats + 6_553_599) / 6_553_600, count, "buckets of \(floats) floats") }
        XCTAssertEqual(try ParallelLayout(mode: .data, ranks: 2, underMPI: true).bucketFloats, 6_553_600)
        XCTAssertEqual(fast.allreduceAlone, 11 * 2 * 1e-5 + 243_860_896 / 1e12, accuracy: 1e-9)
        XCTAssertEqual(fast.allreduce, 2 * 1e-5 + 9_336_320 / 1e12, accuracy: 1e-9)
        // At 1 Gbit/s: fc8 + fc7 (83.6 MB) take 0.67 s, fc6 (151 MB) 1.21 s more, so the link is busy until ~1.9 s,
        // past backward's end; the conv bucket (75 ms) then queues behind. Exposed: more than the last bucket, less
        // than the whole 1.95 s.
        XCTAssertEqual(slow.allreduceAlone, 11 * 2 * 1e-5 + 243_860_896 / 1.25e8, accuracy: 1e-9)
        XCTAssertGreaterThan(slow.allreduce, 9_336_320 / 1.25e8 + 0.1)
        XCTAssertLessThan(slow.allreduce, slow.allreduceAlone - 1)
        XCTAssertEqual(slow.step - fast.step, slow.allreduce - fast.allreduce, accuracy: 1e-9, "only the allreduce changes")
    }

    /// owt's convolution gradients go in 1 MB buckets, layer by layer: on a slow link most of their 9.3 MB hide behind
    /// the backward of the layers before them; only what conv1's backward cannot cover shows.
    func testConvDataFcModelBucketsOverlapTheConvolutionsBackward() throws {
        let slow = CostModel(config: paper, rates: flatRates, network: NetworkModel(name: "t", latency: 1e-5, bandwidth: 1.25e8))
        let p = try XCTUnwrap(slow.predict(.owt, nodes: 2, batch: 128))
        XCTAssertEqual(p.allreduceBytes, 4 * 2_334_080)
        // Alone: 9.3 MB over 1 Gbit/s (74.7 ms) and 2 latencies a bucket. The buckets of conv5–conv3 go while conv2's
        // backward runs (64 images at 100 GFLOP/s: 0.57 s), conv2's during conv1's (0.13 s): only conv1's 140 KB show.
        XCTAssertGreaterThan(p.allreduceAlone, 9_336_320 / 1.25e8)
        XCTAssertLessThan(p.allreduce, 0.2 * p.allreduceAlone)
        XCTAssertEqual(try ParallelLayout(mode: .owt, ranks: 2, underMPI: true).bucketFloats, 1 << 18)
        XCTAssertEqual(try ParallelLayout(mode: .data, ranks: 2, underMPI: true).bucketFloats, 25 << 18)
    }

    func testNetworkFiles() throws {
        let dir = Paths.temporaryDirectory("networks")
        let good = dir + "/ten.conf"
        try "# ten\nname = ten\nbandwidth_gbit = 10\nefficiency = 0.9   # TCP\nlatency_us = 20\n".write(toFile: good, atomically: true, encoding: .utf8)
        let n = try NetworkModel.load(good)
        XCTAssertEqual(n.name, "ten")
        XCTAssertEqual(n.bandwidth, 10e9 / 8 * 0.9, accuracy: 1)
        XCTAssertEqual(n.latency, 20e-6, accuracy: 1e-12)
        for (text, says) in [("bandwidth_gbit = 10\n", "latency_us"), ("bandwidth_gbit = -1\nlatency_us = 2\n", "positive"),
                             ("bandwidth_gbit 10\n", ":1:"), ("bandwidth_gbit = 1\nlatency_us = 1\nefficiency = 2\n", "at most 1")] {
            let path = dir + "/bad.conf"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try NetworkModel.load(path)) { XCTAssertTrue("\($0)".contains(path) && "\($0)".contains(says), "\($0)") }
        }
        // The files in cluster-configs load.
        for name in ["1gbe", "10gbe", "25gbe", "ib100"] {
            XCTAssertNoThrow(try NetworkModel.load(Paths.repository + "/cluster-configs/network-\(name).conf"), name)
        }
    }
}

extension CostModelTests {
    /// A tower's measured rates replace half a node's for the layouts split by tower, and only for them.
    func testTowerRatesApplyToTowerLayouts() throws {
        var rates = flatRates
        let plain = CostModel(config: paper, rates: rates, network: NetworkModel(name: "t", latency: 1e-5, bandwidth: 1e12))
        var json: [String: Any] = ["mode": "model", "batch": 128, "width": 1.0, "classes": 1000]
        var stages: [String: [Double]] = [:]
        for s in LayerArithmetic.layers {   // a tower at half the node's rate: each half layer takes a whole layer's time
            let f = LayerArithmetic.flops(paper, s)
            stages[s.name] = [f.forward * 128 / 1e11 * 1e3, f.backward * 128 / 1e11 * 1e3, 0]
        }
        json["stage_ms"] = stages
        try rates.addTowerRates(fromBench: json, source: "tower.json")
        let towers = CostModel(config: paper, rates: rates, network: plain.network)
        let before = try XCTUnwrap(plain.predict(.model, nodes: 2, batch: 128)), after = try XCTUnwrap(towers.predict(.model, nodes: 2, batch: 128))
        let arithmetic = LayerArithmetic.layers.reduce(0.0) { let f = LayerArithmetic.flops(paper, $1); return $0 + (f.forward + f.backward) * 128 / 1e11 }
        XCTAssertEqual(after.compute - before.compute, arithmetic / 2, accuracy: 1e-6, "each half layer now takes twice as long")
        XCTAssertEqual(try XCTUnwrap(towers.predict(.data, nodes: 2, batch: 128)).compute,
                       try XCTUnwrap(plain.predict(.data, nodes: 2, batch: 128)).compute, "data parallelism keeps a node's rates")
        json["mode"] = "data"
        XCTAssertThrowsError(try rates.addTowerRates(fromBench: json, source: "data.json")) { XCTAssertTrue("\($0)".contains("data.json")) }
    }
}
