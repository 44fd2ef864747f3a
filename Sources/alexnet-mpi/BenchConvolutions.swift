// `alexnet-mpi bench-convolutions`: each convolution of one tower with each algorithm it can run, back to back.
import AlexNet
import ArgumentParser
import Foundation

struct BenchConvolutions: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-convolutions",
        abstract: "Time conv1–conv5 of one tower, forward and backward, as im2col + sgemm and as Winograd where it applies (interleaved; fastest of the rounds).")

    @Option(help: "Width multiplier W (1 = the paper).")
    var width: Double = 1
    @Option(help: "Images a step.")
    var batch: Int = 128
    @Option(help: "Timed rounds (after one warm-up round); each round runs every algorithm once.")
    var rounds: Int = 3
    @Option(help: ArgumentHelp("Threads for OpenBLAS and the loops (a tower's thread in training has 1).", valueName: "n"))
    var threads: Int = 1
    @Option(name: .customLong("im2col-budget"), help: "Floats a chunk may hold (im2col columns; Winograd takes ÷ 256 tiles).")
    var columnBudget: Int = Convolution.defaultColumnBudget

    func validate() throws {
        try Limits.check(width: width, classes: 10, batch: batch)
        guard rounds >= 1, rounds <= 1000 else { throw ValidationError("--rounds must be in 1…1000 (got \(rounds))") }
        guard columnBudget >= 1 else { throw ValidationError("--im2col-budget must be at least 1 (got \(columnBudget))") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1 (got \(threads))") }
    }

    func run() throws {
        print("BLAS: " + BlasKernels.report)
        print("strided convolution (conv1): " + Convolution.directKernelReport)
        let rows = ConvolutionBenchmark.run(config: ModelConfig(width: width), batch: batch, rounds: rounds, threads: threads,
                                              columnBudget: columnBudget)
        print(String(format: "one tower, W = %g, batch %d, %d thread%@, fastest of %d rounds:", width, batch, threads,
                     threads == 1 ? "" : "s", rounds))
        print("layer  algorithm                forward ms  backward ms   GFLOP/s (direct arithmetic)")
        for r in rows {
            print(String(format: "%@ %@ %10.1f %12.1f %9.1f%@", r.layer.padding(toLength: 6, withPad: " ", startingAt: 0),
                         r.algorithm.padding(toLength: 24, withPad: " ", startingAt: 0), r.forwardMs, r.backwardMs, r.gflops,
                         r.chosen ? "   ← training runs this" : ""))
        }
        let json = rows.map { ["layer": $0.layer, "algorithm": $0.algorithm, "forward_ms": $0.forwardMs, "backward_ms": $0.backwardMs,
                               "gflops": $0.gflops, "chosen": $0.chosen] as [String: Any] }
        print(String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self))
    }
}
