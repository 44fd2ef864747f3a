// Central differences of the whole network's loss with dropout on: every layer's backward pass, the towers'
// exchanges and dropout's reuse of its forward mask, checked end to end on a tiny network, in both in-process layouts.
import AlexNet
import XCTest

final class NetworkGradientTests: XCTestCase {
    // Width 0.0625: 6, 16, 24, 24, 16 channels and 256 units in fc6/fc7; two images; dropout 0.5 in fc6 and fc7.
    let config = ModelConfig(width: 0.0625, classes: 10, dropout: 0.5)
    let batch = 2, labels: [Int32] = [3, 7]
    // The dropout masks are a pure function of (seed, step, layer, sample, unit): every evaluation of the loss
    // below draws the same masks, so the loss is a fixed function of the weights.
    let seed: UInt64 = 11, step = 5
    lazy var input = randomFloats(3 * batch * 227 * 227, seed: 31)   // (3, N, 227, 227)

    /// Where element `index` (row-major in the whole-model PyTorch tensor) lives: the store holding its row.
    func locate(_ replica: Replica, _ name: String, _ index: Int) -> (store: ParameterStore, offset: Int) {
        let t0 = replica.stores[0].tensor(name), row = index / t0.rowSize
        let store = replica.stores.first { $0.tensor(name).rows.contains(row) }!
        let t = store.tensor(name)
        return (store, t.offset + (row - t.rows.lowerBound) * t.rowSize + index % t.rowSize)
    }

    /// Mean loss over the batch; fills the stores' gradients.
    func loss(_ replica: Replica, step: Int? = nil) throws -> Double {
        try input.withUnsafeBufferPointer {
            try replica.computeGradients(input: $0.baseAddress!, batch: batch, labels: labels, normaliser: batch,
                                         seed: seed, step: step ?? self.step, firstSample: 0)
        } / Double(batch)
    }

    struct Check {
        let tensor: String, index: Int, analytic: Double
        /// Central, forward and backward differences.
        let central: Double, forward: Double, backward: Double
        /// Magnitude below which a difference counts against this floor instead (elements with tiny gradients).
        let floor: Double
        func error(_ numeric: Double) -> Double { abs(analytic - numeric) / max(abs(analytic), abs(numeric), floor) }
        /// A kink of ReLU or max-pool within ±h spoils the central difference and the one-sided difference on its
        /// side, not the other: the analytic gradient must match the slope on at least one side.
        var error: Double { min(error(central), error(forward), error(backward)) }
        var numeric: Double { [central, forward, backward].min { error($0) < error($1) }! }
    }

    /// For each tensor: the 2 elements with the largest analytic gradient and 2 at fixed places (whatever their
    /// gradient, measured against a floor of a tenth of the largest), each against central, forward and backward
    /// differences with the first step of `steps`, and with the next steps only while the error exceeds `bound`.
    func checks(_ layout: ReplicaLayout, steps: [Float], bound: Double) throws -> [Check] {
        let replica = Replica(config: config, maxBatch: batch, layout: layout)
        replica.initialise(.he, seed: 2)
        let base = try loss(replica)
        var picked: [(name: String, index: Int, analytic: Double, floor: Double)] = []
        for (name, shape) in config.tensors {
            let count = shape.reduce(1, *)
            let gradients = (0..<count).map { i -> Double in
                let (store, offset) = locate(replica, name, i)
                return Double(store.gradients[offset])
            }
            let largest = gradients.indices.sorted { abs(gradients[$0]) > abs(gradients[$1]) }
            let floor = abs(gradients[largest[0]]) / 10
            for i in Array(largest.prefix(2)) + [count / 3, 2 * count / 3] { picked.append((name, i, gradients[i], floor)) }
        }
        return try picked.map { p in
            let (store, offset) = locate(replica, p.name, p.index)
            let w = store.values[offset]
            defer { store.values[offset] = w }
            var best: Check? = nil
            for h in steps {
                store.values[offset] = w + h
                let plus = try loss(replica)
                store.values[offset] = w - h
                let minus = try loss(replica)
                let c = Check(tensor: p.name, index: p.index, analytic: p.analytic, central: (plus - minus) / Double(2 * h),
                              forward: (plus - base) / Double(h), backward: (base - minus) / Double(h), floor: p.floor)
                if best == nil || c.error < best!.error { best = c }
                if c.error <= bound { break }
            }
            return best!
        }
    }

    /// Acceptance: the analytic gradient of the whole network (dropout on, fixed masks) agrees with finite
    /// differences for every tensor, both towers in one thread and a tower a thread. Steps of 5e-4 (then 1e-3, 2e-4)
    /// sit between float32 noise in the loss (about 1e-6: errors of 2% at a step of 1e-4) and the kinks of ReLU and
    /// max-pool that larger steps cross (7% at 1e-2). Over init seeds 2–5 the worst error was 2.2%, with seed 2 0.8%;
    /// a backward pass with a flipped sign, a missing factor or the wrong dropout mask is off by tens of percent.
    /// Checked by breaking the library in a scratch copy: no dropout mask in backward (errors up to 75%), no ReLU mask
    /// after conv4 (110%), fc bias gradients negated (200%), fc input gradients 10% too large (24%) all fail here.
    /// LRN's cross term (2αβ·a·Σ with α = 1e-4) is below this check's resolution: flipping its sign moves conv1's and
    /// conv2's gradients by 0.3–0.6%, which LocalResponseNormTests (α = 1e-2) and the PyTorch fixture (1e-4) catch.
    func testWholeNetworkGradientWithDropoutOn() throws {
        let replica = Replica(config: config, maxBatch: batch, layout: .sequential)
        replica.initialise(.he, seed: 2)
        XCTAssertNotEqual(try loss(replica, step: step), try loss(replica, step: step + 1), "dropout should be on: other step, other masks")
        let bound = 0.05
        for layout in [ReplicaLayout.sequential, .threadedTowers] {
            let results = try checks(layout, steps: [5e-4, 1e-3, 2e-4], bound: bound)
            XCTAssertEqual(results.count, 4 * config.tensors.count)
            for c in results {
                XCTAssertLessThan(c.error, bound, "\(layout) \(c.tensor)[\(c.index)]: analytic \(c.analytic) vs central \(c.central), "
                                  + "forward \(c.forward), backward \(c.backward)")
            }
            XCTAssertTrue(results.contains { $0.numeric != 0 }, "\(layout): every numeric gradient is zero")
        }
    }
}
