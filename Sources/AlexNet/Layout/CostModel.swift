// The cost model behind `alexnet-mpi predict`: one training step's time for each layout on N nodes (one rank a node),
// from every layer's arithmetic (computed from the shapes at any width, batch and class count), per-layer compute
// rates measured by `bench` on the target machine, and a network described by latency and bandwidth.
import Foundation

/// A network as the model sees it: every message costs `latency` plus its bytes over `bandwidth`.
public struct NetworkModel: Sendable, Equatable {
    public var name: String
    /// Seconds a message takes before its first byte arrives (one way).
    public var latency: Double
    /// Bytes a second one link carries in each direction (the line rate times what MPI achieves of it).
    public var bandwidth: Double

    public init(name: String, latency: Double, bandwidth: Double) {
        self.name = name; self.latency = latency; self.bandwidth = bandwidth
    }

    /// Seconds one message of `bytes` takes.
    public func message(_ bytes: Double) -> Double { latency + bytes / bandwidth }

    /// Reads a network file: `key = value` lines (`#` starts a comment): `name`, `bandwidth_gbit` (line rate),
    /// `efficiency` (the fraction of it MPI achieves, default 1) and `latency_us`.
    public static func load(_ path: String) throws -> NetworkModel {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw AlexNetError("\(path): cannot read the network file (\(error.localizedDescription)); give one of cluster-configs/network-*.conf, or --bandwidth-gbit and --latency-us")
        }
        var fields: [String: String] = [:]
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty else {
                throw AlexNetError("\(path):\(number + 1): expected `key = value`, found `\(line)`")
            }
            fields[parts[0]] = parts[1]
        }
        func number(_ key: String, default value: Double? = nil) throws -> Double {
            guard let text = fields[key] else {
                if let value { return value }
                throw AlexNetError("\(path): no `\(key) = …` line (a network file needs bandwidth_gbit and latency_us)")
            }
            guard let v = Double(text), v.isFinite, v > 0 else {
                throw AlexNetError("\(path): \(key) = \(text) is not a positive number")
            }
            return v
        }
        let efficiency = try number("efficiency", default: 1)
        guard efficiency <= 1 else { throw AlexNetError("\(path): efficiency = \(efficiency) must be at most 1") }
        return NetworkModel(name: fields["name"] ?? (path as NSString).lastPathComponent,
                            latency: try number("latency_us") * 1e-6,
                            bandwidth: try number("bandwidth_gbit") * 1e9 / 8 * efficiency)
    }
}

/// Every layer's arithmetic, from the shapes.
public enum LayerArithmetic {
    public static let convolutions: [Stage] = [.conv1, .conv2, .conv3, .conv4, .conv5]
    public static let fullyConnected: [Stage] = [.fc6, .fc7, .fc8]
    public static var layers: [Stage] { convolutions + fullyConnected }

    /// FLOP (multiply–adds × 2) of one image through the whole layer (both towers): forward, and backward (the
    /// weight gradient, and the input gradient except at conv1).
    public static func flops(_ c: ModelConfig, _ stage: Stage) -> (forward: Double, backward: Double) {
        func conv(_ m: Int, _ k: Int, _ plane: Int) -> Double { 2 * Double(m) * Double(k) * Double(plane) }
        typealias M = ModelConfig
        let f: Double
        switch stage {
        case .conv1: let f = conv(c.conv1, 3 * M.conv1Window.area, M.conv1Plane); return (f, f)
        case .conv2: f = conv(c.conv2, c.conv1 / 2 * M.conv2Window.area, M.conv2Plane)
        case .conv3: f = conv(c.conv3, c.conv2 * M.conv3To5Window.area, M.conv3Plane)
        case .conv4: f = conv(c.conv4, c.conv3 / 2 * M.conv3To5Window.area, M.conv3Plane)
        case .conv5: f = conv(c.conv5, c.conv4 / 2 * M.conv3To5Window.area, M.conv3Plane)
        case .fc6: f = 2 * Double(c.fc6 * c.fc6Inputs)
        case .fc7: f = 2 * Double(c.fc7 * c.fc6)
        case .fc8: f = 2 * Double(c.classes * c.fc7)
        default: return (0, 0)
        }
        return (f, 2 * f)
    }

    /// Parameters (weights and biases) of a layer, both towers.
    public static func parameters(_ c: ModelConfig, _ stage: Stage) -> Int {
        c.tensors.filter { $0.name.hasPrefix(stage.name + ".") }.reduce(0) { $0 + $1.shape.reduce(1, *) }
    }
}

/// What one node computes a second on each layer, measured by `bench`.
public struct ComputeRates: Sendable {
    /// FLOP a second of one node on each layer's forward and backward (the layer's LRN, pooling, ReLU and dropout
    /// included: they are in the measured stage).
    public var forward: [Stage: Double] = [:]
    public var backward: [Stage: Double] = [:]
    /// The same for one tower's half of each layer (a rank of the model-parallel pair), when measured: smaller sgemms,
    /// and the im2col of conv1 and conv3, whose input both towers share, done whole by each rank.
    public var towerForward: [Stage: Double] = [:]
    public var towerBackward: [Stage: Double] = [:]
    /// Parameters the SGD update goes through a second, and seconds of the softmax and loss an image.
    public var updateRate: Double = 1e9
    public var lossPerImage: Double = 0
    /// Where the rates come from, for the printed assumptions.
    public var source = ""

    public init() {}

    /// From the JSON line `alexnet-mpi bench` prints last (one process: a node's rates).
    public static func fromBench(_ json: [String: Any], source: String) throws -> ComputeRates {
        guard let stages = json["stage_ms"] as? [String: [Double]], let batch = json["batch"] as? Int,
              let width = json["width"] as? Double, let classes = json["classes"] as? Int else {
            throw AlexNetError("\(source): not the JSON line of `alexnet-mpi bench` (no stage_ms, batch, width or classes); save it with `alexnet-mpi bench … | tail -n 1 > FILE`")
        }
        if let ranks = json["ranks"] as? Int, ranks != 1 {
            throw AlexNetError("\(source): measured on \(ranks) ranks; the rates of a node come from one process (`alexnet-mpi bench` without mpirun)")
        }
        let config = ModelConfig(width: width, classes: classes)
        var rates = ComputeRates()
        rates.source = "\(source) (W = \(width), batch \(batch)\((json["threads"] as? Int).map { ", \($0) threads" } ?? ""))"
        for stage in LayerArithmetic.layers {
            guard let ms = stages[stage.name], ms.count >= 2, ms[0] > 0, ms[1] > 0 else {
                throw AlexNetError("\(source): no forward and backward time for \(stage.name)")
            }
            let f = LayerArithmetic.flops(config, stage)
            rates.forward[stage] = f.forward * Double(batch) / (ms[0] * 1e-3)
            rates.backward[stage] = f.backward * Double(batch) / (ms[1] * 1e-3)
        }
        let parameters = config.tensors.reduce(0) { $0 + $1.shape.reduce(1, *) }
        if let update = stages[Stage.update.name], update.count >= 2, update[1] > 0 { rates.updateRate = Double(parameters) / (update[1] * 1e-3) }
        if let loss = stages[Stage.loss.name], loss.count >= 1 { rates.lossPerImage = loss[0] * 1e-3 / Double(batch) }
        return rates
    }

    /// Adds a tower's rates from the JSON line of `mpirun -np 2 alexnet-mpi bench --mode model` (rank 0's layers:
    /// half of each layer's arithmetic in its time).
    public mutating func addTowerRates(fromBench json: [String: Any], source: String) throws {
        guard json["mode"] as? String == "model", let stages = json["stage_ms"] as? [String: [Double]],
              let batch = json["batch"] as? Int, let width = json["width"] as? Double, let classes = json["classes"] as? Int else {
            throw AlexNetError("\(source): not the JSON line of `mpirun -np 2 alexnet-mpi bench --mode model` (no mode \"model\", stage_ms, batch, width or classes)")
        }
        let config = ModelConfig(width: width, classes: classes)
        for stage in LayerArithmetic.layers {
            guard let ms = stages[stage.name], ms.count >= 2, ms[0] > 0, ms[1] > 0 else {
                throw AlexNetError("\(source): no forward and backward time for \(stage.name)")
            }
            let f = LayerArithmetic.flops(config, stage)
            towerForward[stage] = f.forward / 2 * Double(batch) / (ms[0] * 1e-3)
            towerBackward[stage] = f.backward / 2 * Double(batch) / (ms[1] * 1e-3)
        }
        self.source += "; a tower's layers: \(source) (batch \(batch))"
    }
}

/// One layout's predicted training step on N nodes.
public struct StepPrediction: Sendable {
    public var mode: ParallelMode
    public var nodes: Int
    public var batch: Int
    /// Seconds of arithmetic on one rank, of tower exchanges or fc slice collectives (on the critical path), and of
    /// the gradient allreduce that backward does not hide.
    public var compute = 0.0, exchange = 0.0, allreduce = 0.0
    /// Bytes one rank sends in exchanges, and bytes of gradients its allreduce sums, a step.
    public var exchangeBytes = 0.0, allreduceBytes = 0.0
    /// Seconds of the allreduce if nothing hid it.
    public var allreduceAlone = 0.0
    public var step: Double { compute + exchange + allreduce }
    public var imagesPerSecond: Double { Double(batch) / step }
}

public struct CostModel: Sendable {
    public let config: ModelConfig
    public let rates: ComputeRates
    public let network: NetworkModel

    public init(config: ModelConfig, rates: ComputeRates, network: NetworkModel) {
        self.config = config; self.rates = rates; self.network = network
    }

    /// The gradient allreduce is MPI_Iallreduce, which Open MPI runs in libnbc; alexnet-mpi selects libnbc's ring
    /// (coll_libnbc_iallreduce_algorithm = 1): 2(G − 1) steps, each sending 1/G of the buffer to the next rank
    /// (reduce-scatter, then all-gather), every link busy in both directions.
    public func ringAllreduce(floats: Double, group: Int) -> Double {
        guard group > 1 else { return 0 }
        let g = Double(group)
        return 2 * (g - 1) * network.message(4 * floats / g)
    }

    /// Ring all-gather or reduce-scatter of parts of at most `partFloats`: G − 1 steps of one part each.
    public func ringCollective(partFloats: Double, group: Int) -> Double {
        guard group > 1 else { return 0 }
        return Double(group - 1) * network.message(4 * partFloats)
    }

    /// The step of `mode` on `nodes` nodes (one rank each) for a global batch; nil where the layout does not exist.
    public func predict(_ mode: ParallelMode, nodes: Int, batch: Int) -> StepPrediction? {
        guard let layout = try? ParallelLayout(mode: mode, ranks: nodes, underMPI: nodes > 1 || mode != .single),
              (try? layout.checkBatch(batch)) != nil, layout.localBatch(batch) >= 1 else { return nil }
        var p = StepPrediction(mode: mode, nodes: nodes, batch: batch)
        let b = Double(layout.localBatch(batch)), B = Double(batch), N = Double(nodes)
        let towerShare = layout.ranksPerReplica == 2 ? 0.5 : 1.0
        let slicesFC = layout.fullyConnected == .byNeuronSlice
        // Arithmetic of this rank, layer by layer; backward's layer times feed the allreduce's overlap.
        var backward: [(stage: Stage, seconds: Double)] = []
        for stage in LayerArithmetic.layers {
            let f = LayerArithmetic.flops(config, stage)
            let images = slicesFC && LayerArithmetic.fullyConnected.contains(stage) ? B / N : b * towerShare
            let towerRates = towerShare < 1 && rates.towerForward[stage] != nil
            p.compute += f.forward * images / (towerRates ? rates.towerForward[stage]! : rates.forward[stage, default: 1e12])
            let back = f.backward * images / (towerRates ? rates.towerBackward[stage, default: 1e12] : rates.backward[stage, default: 1e12])
            p.compute += back
            backward.append((stage, back))
        }
        let held = Double(ParallelLayout.parameterCount(config, towers: layout.role(of: 0).towers, slice: layout.role(of: 0).fullyConnectedSlice))
        p.compute += held / rates.updateRate + rates.lossPerImage * (slicesFC ? B : b)
        // Exchanges on the critical path.
        if layout.ranksPerReplica == 2 {
            for point in ExchangePoint.allCases where point != .imageLabels {
                let floats = Double(config.exchangeFloats(at: point, tower: 0, batch: Int(b)))
                p.exchange += network.latency + network.message(4 * floats)   // a (step, point) header, then the data
                p.exchangeBytes += 4 * floats
            }
        }
        if slicesFC {
            func largest(_ rows: Int) -> Double { Double((rows + nodes - 1) / nodes) }
            let features = Double(config.fc6Inputs)
            let gathers = [features * b, b, largest(config.fc6) * B, largest(config.fc7) * B, largest(config.classes) * B]
            let scatters = [largest(config.fc7) * B, largest(config.fc6) * B, features * b]
            for part in gathers + scatters { p.exchange += ringCollective(partFloats: part, group: nodes) }
            p.exchangeBytes = 4 * Double(layout.predictedTraffic(rank: 0, config: config, batch: batch).sliceExchangeFloats)
        }
        // The allreduce: buckets of the replicated gradients from the last layer back, each started when backward has
        // finished it (the network does one at a time), the rest when backward ends; exposed is what runs past it.
        // As in GradientAllreduce, what is ready goes as buckets of at most bucketFloats (fc6 as several).
        let group = layout.replicas
        if group > 1 {
            var clock = 0.0, networkFree = 0.0, pending = 0.0
            func send(_ floats: Double, at time: Double) {
                var left = floats
                while left > 0 {
                    let bucket = min(left, Double(layout.bucketFloats))
                    let start = max(time, networkFree)
                    networkFree = start + ringAllreduce(floats: bucket, group: group)
                    p.allreduceAlone += ringAllreduce(floats: bucket, group: group)
                    left -= bucket
                }
            }
            for (stage, seconds) in backward.reversed() {   // fc8 first
                clock += seconds
                if slicesFC && LayerArithmetic.fullyConnected.contains(stage) { continue }
                pending += Double(LayerArithmetic.parameters(config, stage)) * towerShare
                p.allreduceBytes += 4 * Double(LayerArithmetic.parameters(config, stage)) * towerShare
                if pending >= Double(layout.bucketFloats) { send(pending, at: clock); pending = 0 }
            }
            if pending > 0 { send(pending, at: clock) }
            p.allreduce = max(0, networkFree - clock)
        }
        return p
    }

    /// Every layout's prediction on each node count, as JSON objects (for scripts: `predict --json`).
    public func points(nodes: [Int], batch: Int) -> [[String: Any]] {
        let one = predict(.single, nodes: 1, batch: batch)
        var out: [[String: Any]] = []
        for mode in ParallelMode.allCases {
            for n in mode == .single ? [1] : nodes {
                guard let p = predict(mode, nodes: n, batch: batch) else { continue }
                out.append(["mode": mode.rawValue, "nodes": n, "batch": batch, "step_ms": p.step * 1e3, "compute_ms": p.compute * 1e3,
                            "exchange_ms": p.exchange * 1e3, "allreduce_ms": p.allreduce * 1e3, "allreduce_alone_ms": p.allreduceAlone * 1e3,
                            "images_per_second": p.imagesPerSecond,
                            "efficiency": one.map { p.imagesPerSecond / (Double(n) * $0.imagesPerSecond) } ?? 0,
                            "exchange_bytes": p.exchangeBytes, "allreduce_bytes": p.allreduceBytes,
                            "network": network.name, "latency_us": network.latency * 1e6, "bandwidth_gbit": network.bandwidth * 8 / 1e9])
            }
        }
        return out
    }

    /// The table `predict` prints: for each layout, its step on each node count, split, with images/s and the
    /// efficiency against N times one node; then the fastest layout at each N and why.
    public func report(nodes: [Int], batch: Int) -> String {
        var lines: [String] = []
        let one = predict(.single, nodes: 1, batch: batch)
        lines.append(String(format: "network: %@: latency %.1f µs, %.2f Gbit/s a direction; compute: %@",
                            network.name, network.latency * 1e6, network.bandwidth * 8 / 1e9, rates.source))
        if let one {
            lines.append(String(format: "one node: %.1f ms a step of %d, %.1f images/s", one.step * 1e3, batch, one.imagesPerSecond))
        }
        var all: [Int: [StepPrediction]] = [:]
        for mode in ParallelMode.allCases where mode != .single {
            lines.append("")
            lines.append("\(mode.rawValue): \(mode.summary)")
            lines.append("nodes   step ms   compute   exchange   allreduce   images/s   efficiency   MB sent + MB allreduced a rank")
            for n in nodes {
                guard let p = predict(mode, nodes: n, batch: batch) else { continue }
                all[n, default: []].append(p)
                let efficiency = one.map { p.imagesPerSecond / (Double(n) * $0.imagesPerSecond) } ?? .nan
                lines.append(String(format: "%5d %9.1f %9.1f %10.1f %11.1f %10.1f %11.0f%%   %.1f + %.1f",
                                    n, p.step * 1e3, p.compute * 1e3, p.exchange * 1e3, p.allreduce * 1e3, p.imagesPerSecond,
                                    100 * efficiency, p.exchangeBytes / 1e6, p.allreduceBytes / 1e6))
            }
        }
        lines.append("")
        lines.append("fastest, and why (communication = exposed exchange + exposed allreduce):")
        for n in nodes.sorted() {
            guard let ranked = all[n]?.sorted(by: { $0.step < $1.step }), let p = ranked.first else { continue }
            var text = String(format: "  %d nodes: %@, %.1f images/s (compute %.1f ms, communication %.1f ms)", n, p.mode.rawValue,
                              p.imagesPerSecond, p.compute * 1e3, (p.exchange + p.allreduce) * 1e3)
            if let next = ranked.dropFirst().first {
                let communication = (next.exchange + next.allreduce) - (p.exchange + p.allreduce), compute = next.compute - p.compute
                text += String(format: "; next %@ is %.1f%% slower: %@", next.mode.rawValue, 100 * (next.step / p.step - 1),
                               abs(communication) >= abs(compute)
                                   ? String(format: "%.1f ms more communication (%@)", communication * 1e3,
                                            next.allreduce > next.exchange ? String(format: "%.0f MB allreduced", next.allreduceBytes / 1e6)
                                                                           : String(format: "%.0f MB exchanged", next.exchangeBytes / 1e6))
                                   : String(format: "%.1f ms more compute", compute * 1e3))
            }
            lines.append(text)
        }
        lines.append("")
        lines.append("assumptions: one rank a node with the measured node's per-layer rates, whatever its batch share (smaller shares run slower than this says); model and hybrid exchanges and owt's collectives are blocking, on the critical path; the allreduce is Open MPI libnbc's ring, which alexnet-mpi selects (2(G − 1) messages of 1/G of a bucket), buckets of 26 MB (owt: 1 MB) start as backward finishes their layers and queue on the link, the last when backward ends; owt's gathers and reduce-scatters are rings; latency and bandwidth as given (links full duplex, no contention between nodes); the softmax of owt's whole batch is counted on every rank.")
        return lines.joined(separator: "\n")
    }
}
