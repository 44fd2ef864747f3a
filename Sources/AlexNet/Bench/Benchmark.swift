// `alexnet-mpi bench`: the training step of the paper-size network on synthetic input, against OpenBLAS's own
// sgemm rate measured in the same run (the sgemm-bound limit = sgemm GFLOP/s ÷ GFLOP per training image).
import Foundation

public struct BenchmarkSettings: Sendable {
    public var model = ModelConfig(width: 1, classes: 1000, dropout: 0.5)
    public var batch = 128
    public var steps = 3
    public var warmupSteps = 1
    public var threads = 2                          // threads of the process (BLAS and loops)
    public var threadsPerModel = 1                  // of which one model's loops use (threaded towers: half)
    public var columnBudget = Convolution.defaultColumnBudget   // floats an im2col chunk may hold
    public var winograd = WinogradUse.whereItPays                 // where stride-1 convolutions run as Winograd
    public var layout: ReplicaLayout = .threadedTowers
    public var ranks = 1                            // processes in the run (model parallelism: 2)
    public init() {}

    /// "2 threads", or "2 ranks × 1 thread".
    public var workers: String {
        let t = "\(threads) thread\(threads == 1 ? "" : "s")"
        return ranks == 1 ? t : "\(ranks) ranks × \(t)"
    }
}

public struct BenchmarkResult: Sendable {
    public var sgemmGflops: Double                  // with the kernels this run uses
    /// With the best kernels this CPU supports, when the run uses lower ones (nil: the run's kernels are the best).
    public var bestKernelGflops: Double? = nil
    /// What the limit is measured with: the best of the two (summed over ranks under MPI).
    public var limitGflops: Double
    public var stepSeconds: Double          // the fastest timed step
    public var meanStepSeconds: Double
    /// Every timed step, in order: the median of them is what a study compares (an outlier step — the shared machine
    /// stalling one rank — moves the mean, not the median).
    public var stepTimes: [Double] = []
    public var medianStepSeconds: Double {
        let sorted = stepTimes.sorted()
        guard !sorted.isEmpty else { return meanStepSeconds }
        let m = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2
    }
    public var imagesPerSecond: Double
    public var limitImagesPerSecond: Double
    public var fraction: Double { imagesPerSecond / limitImagesPerSecond }
    public var stageSeconds: [Stage: [Phase: Double]]
    /// Minor page faults a timed step (memory mapped afresh and zeroed by the kernel: none in a steady step; under
    /// MPI the most of any rank).
    public var pageFaultsPerStep: Double = 0
}

public enum Benchmark {
    /// Best sgemm rate of OpenBLAS on a large square product (n = 2048), in GFLOP/s.
    public static func sgemmGflops(size n: Int = 2048, seconds: Double = 1.5) -> Double {
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n), b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        for i in 0..<(n * n) { a[i] = Float(i % 7) * 0.1; b[i] = Float(i % 5) * 0.1; c[i] = 0 }
        Blas.sgemm(m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, c: c, ldc: n)   // warm-up
        var best = 0.0
        let start = PhaseClock.now()
        repeat {
            let t0 = PhaseClock.now()
            Blas.sgemm(m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, c: c, ldc: n)
            let dt = Double(PhaseClock.now() - t0) * 1e-9
            best = max(best, 2 * Double(n) * Double(n) * Double(n) / dt / 1e9)
        } while Double(PhaseClock.now() - start) * 1e-9 < seconds
        return best
    }

    /// Times `steps` training steps after `warmupSteps` on `replica` (by default one built from the settings' layout).
    /// `localBatch`: images this replica computes of each `s.batch` (data parallelism); `afterBackward` sums the
    /// replicas' gradients before the update, and `update` applies the paper's update (the replica's own by default;
    /// the layout's, e.g. shared-memory shares, under MPI) and returns the sum of the weights it updated.
    /// `bestKernelGflops` measures sgemm with the best kernels the CPU supports when this process runs lower ones
    /// (in a child process: OpenBLAS picks kernels once, when it loads); the limit takes the better rate.
    public static func run(_ s: BenchmarkSettings, replica given: Replica? = nil, localBatch: Int? = nil,
                           bestKernelGflops: () -> Double? = { nil },
                           afterBackward: () throws -> Void = {},
                           update: (Replica, _ learningRate: Float, _ momentum: Float, _ weightDecay: Float) throws -> Double
                               = { try $0.update(learningRate: $1, momentum: $2, weightDecay: $3) },
                           afterWarmup: () -> Void = {}, afterTimed: () -> Void = {}) throws -> BenchmarkResult {
        // The limit is OpenBLAS with every thread of the run on one product, whatever the layout then uses.
        let perTower = Blas.threads
        func sgemmWithAllThreads() -> Double {
            Blas.setThreads(s.threads)
            defer { Blas.setThreads(perTower) }
            return sgemmGflops()
        }
        let gflops = sgemmWithAllThreads()
        let bestBefore = bestKernelGflops()
        let local = localBatch ?? s.batch
        let replica = given ?? Replica(config: s.model, maxBatch: local, layout: s.layout, threads: s.threadsPerModel,
                                       columnBudget: s.columnBudget, winograd: s.winograd)
        replica.initialise(.paper, seed: 1)
        let count = 3 * local * 227 * 227
        let x = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { x.deallocate() }
        for i in 0..<count { x[i] = CounterRandom.normal(seed: 7, .embeddedImage, UInt64(i)) * 50 }
        let labels = (0..<local).map { Int32($0 % s.model.classes) }
        func step(_ k: Int) throws {
            _ = try replica.computeGradients(input: x, batch: local, labels: labels, normaliser: s.batch,
                                             seed: 1, step: k, firstSample: 0)
            try replica.clock.time(.update, .exchange) { try afterBackward() }
            _ = try update(replica, 0.001, 0.9, 5e-4)
        }
        for k in 0..<s.warmupSteps { try step(k) }
        for m in replica.models { m.clock.reset() }
        afterWarmup()
        // The machine is shared: both sides of the ratio take their best — the fastest step, and the fastest sgemm
        // measured before and after the steps (the mean step is reported too).
        var times: [Double] = []
        let t0 = PhaseClock.now(), faults0 = minorPageFaults
        for k in 0..<s.steps {
            let ts = PhaseClock.now()
            try step(s.warmupSteps + k)
            times.append(Double(PhaseClock.now() - ts) * 1e-9)
        }
        let fastest = times.min() ?? .infinity
        let meanSeconds = Double(PhaseClock.now() - t0) * 1e-9 / Double(s.steps)
        let faultsPerStep = Double(minorPageFaults - faults0) / Double(s.steps)
        afterTimed()
        let gflopsAfter = sgemmWithAllThreads()
        let bestAfter = bestKernelGflops()
        let seconds = fastest
        var stages: [Stage: [Phase: Double]] = [:]
        for st in Stage.allCases {
            for ph in Phase.allCases { stages[st, default: [:]][ph] = replica.clock.seconds(st, ph) / Double(s.steps) }
        }
        let peak = max(gflops, gflopsAfter)
        let best = [bestBefore, bestAfter].compactMap { $0 }.max()
        let limit = max(peak, best ?? 0)
        return BenchmarkResult(sgemmGflops: peak, bestKernelGflops: best, limitGflops: limit, stepSeconds: seconds,
                               meanStepSeconds: meanSeconds, stepTimes: times, imagesPerSecond: Double(s.batch) / seconds,
                               limitImagesPerSecond: limit * 1e9 / s.model.trainingFlopsPerImage, stageSeconds: stages,
                               pageFaultsPerStep: faultsPerStep)
    }

    /// Minor page faults of this process so far (getrusage's ru_minflt).
    public static var minorPageFaults: Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return usage.ru_minflt
    }

    /// The most memory this process has held resident so far (getrusage's ru_maxrss), in bytes.
    public static var peakResidentBytes: Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return usage.ru_maxrss * 1024   // Linux reports KiB
    }

    public static func report(_ r: BenchmarkResult, settings s: BenchmarkSettings, extra: [String: Any] = [:]) -> String {
        var lines: [String] = []
        if let best = r.bestKernelGflops {
            lines.append(String(format: "OpenBLAS sgemm (2048³, %@, best before/after the steps): %.1f GFLOP/s with the kernels in use, %.1f GFLOP/s with the best this CPU supports  →  sgemm-bound limit %.1f images/s (%.2f GFLOP per training image)",
                                s.workers, r.sgemmGflops, best, r.limitImagesPerSecond, s.model.trainingFlopsPerImage / 1e9))
        } else {
            lines.append(String(format: "OpenBLAS sgemm (2048³, %@, best before/after the steps): %.1f GFLOP/s  →  sgemm-bound limit %.1f images/s (%.2f GFLOP per training image)",
                                s.workers, r.sgemmGflops, r.limitImagesPerSecond, s.model.trainingFlopsPerImage / 1e9))
        }
        lines.append(String(format: "training step (W = %g, %d classes, batch %d, %@): fastest of %d %.1f ms (median %.1f, mean %.1f)  →  %.2f images/s  =  %.1f%% of the limit",
                            s.model.width, s.model.classes, s.batch, s.workers, s.steps, r.stepSeconds * 1e3, r.medianStepSeconds * 1e3, r.meanStepSeconds * 1e3,
                            r.imagesPerSecond, 100 * r.fraction))
        lines.append(String(format: "peak resident memory: %.2f GB%@; page faults a timed step: %.0f%@", Double(peakResidentBytes) / 1e9,
                            s.ranks > 1 ? " (rank 0)" : "", r.pageFaultsPerStep, s.ranks > 1 ? " (the most of any rank)" : ""))
        lines.append("ms per step (" + (s.ranks > 1 ? "rank 0" : s.layout == .threadedTowers ? "tower 0's thread" : "both towers") + "):")
        lines.append("stage           forward   backward   exchange")
        for st in Stage.allCases {
            let p = r.stageSeconds[st] ?? [:]
            let f = (p[.forward] ?? 0) * 1e3, b = (p[.backward] ?? 0) * 1e3, e = (p[.exchange] ?? 0) * 1e3
            if f + b + e == 0 { continue }
            lines.append(st.name.padding(toLength: 12, withPad: " ", startingAt: 0) + String(format: " %9.1f %10.1f %10.1f", f, b, e))
        }
        var json: [String: Any] = [
            "images_per_second": r.imagesPerSecond, "fraction_of_sgemm_limit": r.fraction,
            "sgemm_gflops": r.sgemmGflops, "limit_gflops": r.limitGflops, "limit_images_per_second": r.limitImagesPerSecond,
            "blas_core": Blas.coreName,
            "step_ms": r.stepSeconds * 1e3, "mean_step_ms": r.meanStepSeconds * 1e3,
            "median_step_ms": r.medianStepSeconds * 1e3, "step_times_ms": r.stepTimes.map { $0 * 1e3 }, "batch": s.batch, "threads": s.threads, "ranks": s.ranks, "width": s.model.width,
            "classes": s.model.classes, "peak_resident_bytes": peakResidentBytes, "page_faults_per_step": r.pageFaultsPerStep,
            "parameters": s.model.tensors.reduce(0) { $0 + $1.shape.reduce(1, *) },   // the whole network's, both towers
        ]
        // Per layer (the stages of the table above): [forward, backward, exchange] ms a step, the compute rates
        // `alexnet-mpi predict --bench` reads.
        var stages: [String: [Double]] = [:]
        for st in Stage.allCases {
            let p = r.stageSeconds[st] ?? [:]
            stages[st.name] = [(p[.forward] ?? 0) * 1e3, (p[.backward] ?? 0) * 1e3, (p[.exchange] ?? 0) * 1e3]
        }
        json["stage_ms"] = stages
        json["layout"] = s.ranks > 1 ? "ranks" : s.layout == .threadedTowers ? "threaded towers" : "sequential"
        for (k, v) in extra { json[k] = v }
        let data = try! JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        lines.append(String(data: data, encoding: .utf8)!)
        return lines.joined(separator: "\n")
    }
}
