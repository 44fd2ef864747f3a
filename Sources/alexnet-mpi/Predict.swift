// `alexnet-mpi predict`: the cost model's table for each layout on 2 to 64 nodes, from a bench measurement and a
// network file (or flags).
import AlexNet
import AlexNetMPI
import ArgumentParser
import Foundation

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict the training step of every layout on N nodes from per-layer compute rates and a network.",
        discussion: "Rates come from `alexnet-mpi bench … | tail -n 1 > FILE` on one node (--bench FILE), or from a bench step run here. The network from --network (cluster-configs/network-*.conf) or --bandwidth-gbit and --latency-us.")

    @Option(help: "The JSON line of `alexnet-mpi bench` on one node (default: measure here, at --width and --classes, batch 32).")
    var bench: String?
    @Option(name: .customLong("tower-bench"), help: "The JSON line of `mpirun -np 2 alexnet-mpi bench --mode model` on two such nodes: a tower's per-layer rates, for the model and hybrid layouts (default: half a node's).")
    var towerBench: String?
    @Option(help: "Network file: `bandwidth_gbit`, `efficiency`, `latency_us` lines (cluster-configs/network-*.conf).")
    var network: String?
    @Option(name: .customLong("bandwidth-gbit"), help: "Link bandwidth in Gbit/s (instead of --network).")
    var bandwidthGbit: Double?
    @Option(name: .customLong("latency-us"), help: "Message latency in µs (with --bandwidth-gbit).")
    var latencyUs: Double = 20
    @Option(help: "Width multiplier W (1 = the paper).")
    var width: Double = 1
    @Option(help: "Number of classes.")
    var classes: Int = 1000
    @Option(help: "Global batch.")
    var batch: Int = 128
    @Option(help: "Node counts, comma-separated.")
    var nodes: String = "2,4,8,16,32,64"
    @Flag(help: "Print one JSON object (every layout on every node count) instead of the tables.")
    var json = false
    @OptionGroup var threadOptions: ThreadOptions

    var nodeCounts: [Int] { nodes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func validate() throws {
        try Limits.check(width: width, classes: classes, batch: batch)
        guard !nodeCounts.isEmpty, nodeCounts.count == nodes.split(separator: ",").count, nodeCounts.allSatisfy({ $0 >= 1 && $0 <= 65_536 }) else {
            throw ValidationError("--nodes must be node counts in 1…65536, comma-separated (got \(nodes))")
        }
        guard (network == nil) != (bandwidthGbit == nil) else { throw ValidationError("give --network FILE or --bandwidth-gbit (not both)") }
        if let b = bandwidthGbit, !(b > 0 && b.isFinite) { throw ValidationError("--bandwidth-gbit must be positive (got \(b))") }
        guard latencyUs >= 0, latencyUs.isFinite else { throw ValidationError("--latency-us must not be negative (got \(latencyUs))") }
    }

    func run() throws {
        let config = ModelConfig(width: width, classes: classes)
        let net = try network.map(NetworkModel.load)
            ?? NetworkModel(name: "\(bandwidthGbit!) Gbit/s", latency: latencyUs * 1e-6, bandwidth: bandwidthGbit! * 1e9 / 8)
        var rates: ComputeRates
        func benchLine(_ path: String) throws -> [String: Any] {
            guard let data = FileManager.default.contents(atPath: path),
                  let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last(where: { $0.hasPrefix("{") }),
                  let json = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw AlexNetError("\(path): no JSON line of `alexnet-mpi bench` in it; save one with `alexnet-mpi bench … | tail -n 1 > \(path)`")
            }
            return json
        }
        if let path = bench {
            rates = try ComputeRates.fromBench(benchLine(path), source: path)
        } else {
            var s = BenchmarkSettings()
            s.model = ModelConfig(width: width, classes: classes, dropout: 0.5)
            (s.batch, s.steps, s.threads) = (32, 2, threadOptions.count)
            let plan = ThreadPlan(threads: s.threads, holdsBothTowersInOneProcess: true)
            (s.layout, s.threadsPerModel) = (plan.replicaLayout, plan.threadsPerModel)
            if !json { print("measuring the compute rates here (bench: W = \(width), batch 32, \(s.threads) threads)…") }
            let r = try Benchmark.run(s)
            let json = try JSONSerialization.jsonObject(with: Data(Benchmark.report(r, settings: s).split(separator: "\n").last!.utf8)) as! [String: Any]
            rates = try ComputeRates.fromBench(json, source: "a bench step here")
        }
        if let path = towerBench { try rates.addTowerRates(fromBench: benchLine(path), source: path) }
        let model = CostModel(config: config, rates: rates, network: net)
        if json {
            let object: [String: Any] = ["rates": rates.source, "points": model.points(nodes: nodeCounts, batch: batch)]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print(model.report(nodes: nodeCounts, batch: batch))
        }
    }
}
