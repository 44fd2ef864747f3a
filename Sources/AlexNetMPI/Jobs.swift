// The two jobs the command line runs, in any layout: training (`train`) and the step benchmark (`bench`). Each takes
// its settings, builds the rank's part through LayoutAssembly, and prints on rank 0.
import AlexNet
import Foundation

/// Failure injection for the robustness tests (hidden options).
public struct FailureInjection: Sendable {
    public var rank: Int, step: Int, kind: String
    public init(rank: Int, step: Int, kind: String) { self.rank = rank; self.step = step; self.kind = kind }
}

public struct TrainingJob {
    public var settings = TrainingSettings()
    public var mode: ParallelMode? = nil
    public var dataDirectory: String? = nil
    public var classes: Int? = nil
    /// Threads of the process; the replica layout and the threads a model's loops use (from ThreadPlan).
    public var threads = 1
    public var checkWeightsEvery = 50
    /// Data parallelism's gradient sum: shared memory on one node where it can (auto), or always the allreduce.
    public var gradientSum = GradientSum.auto
    /// Every option as (name, value), compared over the ranks before any work.
    public var options: [(String, String)] = []
    public var epochs: Int? = nil
    public var failure: FailureInjection? = nil
    public var perturb: (rank: Int, step: Int)? = nil
    /// --metrics FILE.jsonl, written by rank 0.
    public var metricsPath: String? = nil
    /// --trace FILE: a Chrome trace-event JSON of the steps `traceSteps` (nil: TraceFile.defaultWindow), written by rank 0.
    public var tracePath: String? = nil
    public var traceSteps: ClosedRange<Int>? = nil
    /// Tests: nanoseconds added to this rank's trace clock (alignment must take them out).
    public var traceSkew: (rank: Int, nanoseconds: Int64)? = nil
    /// Writes the first step's input and labels of this rank to PREFIX.rank<r>.input.npy / .labels.npy (tests).
    public var dumpFirstBatch: String? = nil
    public init() {}

    public func run(world: MPICommunicator?) throws {
        let rank = world?.rank ?? 0, size = world?.size ?? 1
        let say: (String) -> Void = { if rank == 0 { print($0); fflush(nil) } }
        let layout = try refusedBeforeWork { try ParallelLayout(mode: mode ?? ParallelLayout.defaultMode(ranks: size), ranks: size, underMPI: world != nil) }
        let plan = ThreadPlan(threads: threads, holdsBothTowersInOneProcess: layout.mode == .single)
        Oversubscription.warn(threads: plan.threads)
        let splits: DataSplits
        if let directory = dataDirectory {
            splits = try NumpyDataset.splits(directory: directory, classes: classes)
        } else {
            splits = EmbeddedShapes.splits(seed: settings.seed)
            if let c = classes, c < splits.classes {
                throw AlexNetError("--classes \(c) is fewer than the embedded dataset's \(splits.classes) classes")
            }
        }
        var s = settings
        s.model.classes = classes ?? splits.classes
        s.dataset = DatasetFingerprint.of(splits, directory: dataDirectory)
        s.rank = rank
        s.writesFiles = rank == 0
        s.layout = plan.replicaLayout
        s.dataThreads = plan.threads
        s.threadsPerModel = plan.threadsPerModel
        if let e = epochs { s.steps = e * (splits.train.count / s.batch) }
        if let world, layout.ranks > 1 {
            var fields = options + [("ranks", "\(size)"), ("layout", layout.mode.rawValue), ("dataset", s.dataset),
                                    ("training images", "\(splits.train.count)"), ("steps", "\(s.steps)")]
            for (name, shape) in s.model.tensors { fields.append((name, shape.map(String.init).joined(separator: "×"))) }
            try refusedBeforeWork { try SettingsHandshake.check(fields, on: world) }   // every rank sees the same difference
        }
        try refusedBeforeWork { try layout.checkBatch(s.batch) }
        let traceWindow = traceSteps ?? TraceFile.defaultWindow(steps: s.steps)
        if tracePath != nil, traceWindow.upperBound >= s.steps {
            throw RefusedBeforeWork(message: "--trace-steps \(traceWindow.lowerBound):\(traceWindow.upperBound): the run has steps 0…\(s.steps - 1); choose a window within them")
        }
        if let path = tracePath, rank == 0 { try OutputFiles.checkWritable(path, option: "--trace") }
        try MemoryCheck.refuseIfTooLarge(config: s.model, layout: layout, rank: rank, batch: s.batch, replicaLayout: plan.replicaLayout,
                                         inputs: s.prefetch ? 2 : 1, say: say)
        say("BLAS: " + BlasKernels.report)
        say("strided convolution (conv1): " + Convolution.directKernelReport)
        GracefulStop.install()
        let assembly = try LayoutAssembly(layout: layout, world: world, config: s.model, batch: s.batch, replicaLayout: plan.replicaLayout,
                                          threadsPerModel: plan.threadsPerModel, checkWeightsEvery: checkWeightsEvery,
                                          gradientSum: gradientSum)
        s.shard = assembly.shard
        s.unevenShards = layout.allowsUnevenShares
        if let p = perturb, p.rank == rank { assembly.perturbAfterStep = p.step }
        for line in assembly.describe(threads: plan.threads) { say("alexnet-mpi train: " + line) }
        say("data: \(splits.description)")
        say(LayerTable.render(s.model, localTowers: 0..<ModelConfig.towers, ranks: layout.ranksPerReplica == 2, batch: s.localBatch))
        let trainer = try Trainer(settings: s, data: splits, replica: assembly.replica, coordination: { _ in assembly })
        try assembly.startTraining(firstStep: trainer.firstStep)
        if let f = failure, f.rank == rank { inject(f, into: trainer) }
        if let path = metricsPath, rank == 0 {
            let log = try MetricsLog(path: path)
            var run: [String: Any] = ["kind": "run", "time": ISO8601DateFormatter().string(from: Date()), "layout": layout.mode.rawValue,
                                      "ranks": size, "threads": plan.threads, "first_step": trainer.firstStep, "steps": s.steps,
                                      "batch": s.batch, "width": s.model.width, "classes": s.model.classes, "dataset": s.dataset,
                                      "training_images": splits.train.count, "steps_per_epoch": trainer.batchesPerEpoch,
                                      "blas": BlasKernels.report]
            run["resumed_from"] = trainer.resumedFrom
            // The options as given: unset ones and the hidden test hooks left out, Optional("x") as x.
            var given: [String: String] = [:]
            for (name, value) in options where value != "nil" && !name.hasPrefix("--debug") {
                given[name] = value.hasPrefix("Optional(") ? String(value.dropFirst(9).dropLast()).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) : value
            }
            run["options"] = given
            log.write(run)
            trainer.metrics = log
        }
        if let prefix = dumpFirstBatch {
            let first = trainer.firstStep, local = s.localBatch
            trainer.inspectBatch = { step, input, labels in
                guard step == first else { return }
                try NpyArray.write(path: "\(prefix).rank\(rank).input.npy", dtype: .float32, shape: [3, local, 227, 227],
                                   bytes: UnsafeRawBufferPointer(start: input, count: 3 * local * 227 * 227 * 4))
                let wide = labels.map(Int64.init)
                try wide.withUnsafeBytes { try NpyArray.write(path: "\(prefix).rank\(rank).labels.npy", dtype: .int64, shape: [local], bytes: $0) }
            }
        }
        say(String(format: "batch %d, %d steps, lr %g, momentum %g, weight decay %g, dropout %g, seed %d, init %@, augmentation %@",
                   s.batch, s.steps, s.learningRate, s.momentum, s.weightDecay, s.model.dropout, s.seed, s.initialisation.rawValue,
                   s.augment ? "on" : "off"))
        say("learning rate: " + trainer.schedule.description)
        if let path = s.initFrom { say("weights from \(path)") }
        if let path = trainer.resumedFrom {
            say("resuming \(path) at step \(trainer.firstStep)"
                + (trainer.resumeChanges.isEmpty ? "" : "; changed: " + trainer.resumeChanges.joined(separator: "; ")))
        } else if s.autoResume, let dir = s.checkpointDirectory {
            say("--auto-resume: \(dir) holds no checkpoint yet; starting at step 0")
        }
        if let dir = s.checkpointDirectory {
            say("checkpoints: \(dir)/step-*.safetensors, the newest \(s.keepCheckpoints) kept"
                + (s.saveEvery > 0 ? ", every \(s.saveEvery) steps" : "") + (s.saveEachEpoch ? ", each epoch" : "") + " and at the end")
        }
        var recorder: TraceRecorder? = nil, clock = (offset: Int64(0), roundTrip: Int64(0))
        let skew = traceSkew.flatMap { $0.rank == rank ? $0.nanoseconds : nil } ?? 0
        if let path = tracePath {
            let traced = TraceRecorder(window: traceWindow)
            assembly.attach(trace: traced)
            trainer.trace = traced
            recorder = traced
            if let world, size > 1 { clock = try TraceGather.clockOffset(world: world, skew: skew) }   // every rank: a collective
            say("trace: steps \(traceWindow.lowerBound)…\(traceWindow.upperBound) to \(path)"
                + (traceWindow.upperBound < trainer.firstStep ? " (before the step this run starts at, \(trainer.firstStep): nothing will be traced)" : ""))
        }
        assembly.resetCounters()
        let r = try trainer.run()
        if let recorder, let path = tracePath {
            var mine = recorder.rankTrace(rank: rank, process: assembly.traceProcessName, offset: clock.offset, roundTrip: clock.roundTrip)
            if skew != 0 { mine.spans = mine.spans.map { $0.shifted(by: skew) } }
            let all: [RankTrace]?   // every rank's, on rank 0 only
            if let world, size > 1 { all = try TraceGather.gather(mine, world: world) } else { all = [mine] }
            if let all {
                let metadata: [String: Any] = ["layout": layout.mode.rawValue, "ranks": size, "steps": "\(traceWindow.lowerBound):\(traceWindow.upperBound)",
                                               "width": s.model.width, "batch": s.batch, "threads": plan.threads, "blas": BlasKernels.report]
                try TraceFile.write(all, metadata: metadata, to: path)
                say("trace: wrote \(path) (\(all.reduce(0) { $0 + $1.spans.count }) spans from \(all.count) rank\(all.count == 1 ? "" : "s"); open it in https://ui.perfetto.dev or chrome://tracing)")
            }
        }
        if let stopped = r.stoppedAtStep {
            say(String(format: "stopped at step %d of %d after %.1f s (asked to stop)%@", stopped, s.steps, r.seconds,
                       s.save.map { "; saved \($0): continue with --resume \($0)" } ?? "; nothing saved (no --save)"))
            return
        }
        let report = try assembly.communicationReport(steps: s.steps - trainer.firstStep, seconds: r.seconds)
        for line in report.lines { say(line) }
        say(String(format: "done: %d steps in %.1f s, %.1f images/s; train loss %.4f; %@ top-1 %.2f%%, top-5 %.2f%%",
                   s.steps - trainer.firstStep, r.seconds, r.imagesPerSecond, r.trainLoss,
                   (splits.heldOutIsTrainingSet ? "training-set" : "held-out") + (s.tenCrop ? " 10-crop" : ""), 100 * r.top1, 100 * r.top5)
            + (r.resumeChanges.isEmpty ? "" : "; resumed with changes: " + r.resumeChanges.joined(separator: "; ")))
    }

    func inject(_ f: FailureInjection, into trainer: Trainer) {
        let kind = f.kind, at = f.step
        if kind == "assemble" {   // thrown where the batch of that step is assembled (the background thread)
            trainer.beforeAssembling = { step in
                if step == at { throw AlexNetError("injected failure assembling the batch of step \(step) (--debug-fail-rank)") }
            }
        }
        trainer.beforeStep = { step in
            guard step == at else { return }
            switch kind {
            case "kill": kill(getpid(), SIGKILL)
            case "exit": Foundation.exit(3)
            case "assemble": break
            default: throw AlexNetError("injected failure at step \(step) (--debug-fail-rank)")
            }
        }
    }
}

public struct BenchmarkJob {
    public var settings = BenchmarkSettings()
    public var mode: ParallelMode? = nil
    public var options: [(String, String)] = []
    /// Measures sgemm with the best kernels the CPU supports when this process runs lower ones.
    public var bestKernelGflops: (Int) -> Double? = { _ in nil }
    /// --skip-gradient-sum: time the step of a layout with replicas without their gradient sum.
    public var skipGradientSum = false
    /// Data parallelism's gradient sum (--skip-gradient-sum times the allreduce's step without it, so it takes that).
    public var gradientSum = GradientSum.auto
    public init() {}

    public func run(world: MPICommunicator?) throws {
        let rank = world?.rank ?? 0, size = world?.size ?? 1
        let say: (String) -> Void = { if rank == 0 { print($0); fflush(nil) } }
        let layout = try refusedBeforeWork { try ParallelLayout(mode: mode ?? ParallelLayout.defaultMode(ranks: size), ranks: size, underMPI: world != nil) }
        if skipGradientSum && layout.replicas < 2 {
            throw RefusedBeforeWork(message: "--skip-gradient-sum: the \(layout.mode.rawValue) layout on \(size) rank\(size == 1 ? "" : "s") has no replicas whose gradients are summed; use it with --mode data, hybrid (4 or more ranks) or owt under mpirun")
        }
        if skipGradientSum && gradientSum == .sharedMemory {
            throw RefusedBeforeWork(message: "--skip-gradient-sum times the step of replicas that sum with the allreduce, without it; it cannot go with --gradient-sum shared-memory (leave that out)")
        }
        var s = settings
        let plan = ThreadPlan(threads: s.threads, holdsBothTowersInOneProcess: layout.mode == .single)
        Oversubscription.warn(threads: plan.threads)
        (s.layout, s.threadsPerModel, s.ranks) = (plan.replicaLayout, plan.threadsPerModel, size)
        if let world, size > 1 {
            try refusedBeforeWork { try SettingsHandshake.check(options + [("ranks", "\(size)"), ("layout", layout.mode.rawValue)], on: world) }
        }
        try refusedBeforeWork { try layout.checkBatch(s.batch) }
        try MemoryCheck.refuseIfTooLarge(config: s.model, layout: layout, rank: rank, batch: s.batch, replicaLayout: plan.replicaLayout,
                                         inputs: 1, say: say)
        say("BLAS: " + BlasKernels.report + " [\(Blas.configuration)]")
        say("strided convolution (conv1): " + Convolution.directKernelReport)
        let assembly = try LayoutAssembly(layout: layout, world: world, config: s.model, batch: s.batch, replicaLayout: plan.replicaLayout,
                                          threadsPerModel: plan.threadsPerModel, columnBudget: s.columnBudget,
                                          winograd: s.winograd, gradientSum: skipGradientSum ? .allreduce : gradientSum)
        for line in assembly.describe(threads: plan.threads) { say("alexnet-mpi bench: " + line) }
        if skipGradientSum, let allreduce = assembly.synchroniser?.allreduce {
            allreduce.skipped = true
            say("alexnet-mpi bench: --skip-gradient-sum: the replicas do not sum their gradients (they drift apart): this times the step without the allreduce")
        }
        let threads = s.threads, best = bestKernelGflops
        var timed = 0.0
        let r = try Benchmark.run(s, replica: assembly.replica, localBatch: assembly.localBatch, bestKernelGflops: { best(threads) },
                                  afterBackward: { try assembly.synchroniseGradients() },
                                  update: assembly.update,
                                  afterWarmup: { assembly.resetCounters(); timed = Double(PhaseClock.now()) * 1e-9 },
                                  afterTimed: { timed = Double(PhaseClock.now()) * 1e-9 - timed })
        guard let world, size > 1 else { return say(Benchmark.report(r, settings: s)) }
        let report = try assembly.communicationReport(steps: s.steps, seconds: timed)
        // The sgemm limit of a job of several ranks: every rank's sgemm rate (each measured on its own cores).
        var whole = r
        whole.limitGflops = try world.sum(r.limitGflops)
        whole.limitImagesPerSecond = whole.limitGflops * 1e9 / s.model.trainingFlopsPerImage
        whole.sgemmGflops = try world.sum(r.sgemmGflops)
        let bestSum = try world.sum(r.bestKernelGflops ?? 0)   // every rank calls it: a collective
        whole.bestKernelGflops = bestSum > 0 ? bestSum : nil
        whole.pageFaultsPerStep = try world.maximum(r.pageFaultsPerStep)
        say((report.lines + [Benchmark.report(whole, settings: s, extra: report.fields)]).joined(separator: "\n"))
    }
}

/// Threads a process uses: with two or more in a process that holds both towers alone, each tower runs on its own
/// thread with half of them (no BLAS worker spins against the loops); otherwise one model uses them all.
public struct ThreadPlan {
    public let threads: Int
    public let replicaLayout: ReplicaLayout
    public let threadsPerModel: Int
    public init(threads: Int, holdsBothTowersInOneProcess: Bool) {
        self.threads = threads
        replicaLayout = holdsBothTowersInOneProcess && threads >= 2 ? .threadedTowers : .sequential
        threadsPerModel = replicaLayout == .threadedTowers ? max(1, threads / 2) : threads
        Blas.setThreads(threadsPerModel)
    }
}

/// Says what one process will take and refuses (on this rank, which stops the job) a run whose processes on this node
/// would not fit in its memory.
public enum MemoryCheck {
    public static func refuseIfTooLarge(config: ModelConfig, layout: ParallelLayout, rank: Int, batch: Int, replicaLayout: ReplicaLayout,
                                        inputs: Int, say: (String) -> Void) throws {
        let role = layout.role(of: rank), local = layout.localBatch(batch)
        let onNode = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
        guard let bytes = MemoryBudget.bytes(config: config, maxBatch: max(1, local), layout: replicaLayout, localTowers: role.towers,
                                             fullyConnectedSlice: role.fullyConnectedSlice, inputs: inputs) else {
            throw AlexNetError("width \(config.width), \(config.classes) classes and a batch of \(batch) need more memory than can be counted; use a smaller --width, --classes or --batch")
        }
        let machine = MemoryBudget.machineBytes
        say("memory: \(MemoryBudget.gigabytes(bytes)) a process for the model and a batch of \(local)"
            + (onNode > 1 ? " (× \(onNode) processes on this node)" : "")
            + (machine.map { " of \(MemoryBudget.gigabytes($0)) on this machine" } ?? ""))
        if let machine, bytes.multipliedReportingOverflow(by: onNode).partialValue > machine * 9 / 10 || bytes > machine {
            throw AlexNetError("the model and batch need \(MemoryBudget.gigabytes(bytes)) a process"
                               + (onNode > 1 ? " × \(onNode) processes" : "") + ", more than 90% of this machine's \(MemoryBudget.gigabytes(machine)); use a smaller --batch or --width, or more nodes")
        }
    }
}

/// Runs a check every rank makes alike before any work; its error becomes a RefusedBeforeWork (all ranks exit
/// without an abort).
func refusedBeforeWork<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as AlexNetError { throw RefusedBeforeWork(message: e.description) }
}
