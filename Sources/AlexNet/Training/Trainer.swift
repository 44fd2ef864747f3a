// The training loop: batches from the sampler, forward, loss, backward, the paper's SGD, progress and evaluation.
import Foundation

public struct TrainingSettings: Sendable {
    public var model = ModelConfig(width: 0.25, classes: 10, dropout: 0.5)
    public var batch = 64
    public var steps = 300
    public var learningRate: Float = 0.01
    /// The learning-rate schedule (its base is learningRate); nil: constant.
    public var schedule: LearningRateSchedule? = nil
    public var momentum: Float = 0.9
    public var weightDecay: Float = 5e-4
    public var seed: UInt64 = 1
    public var augment = true
    public var initialisation: Initialisation = .paper
    public var initFrom: String? = nil
    public var save: String? = nil
    public var progressEvery: Double = 2           // seconds between progress lines in a log (a terminal's line is rewritten)
    public var layout: ReplicaLayout = .sequential
    public var dataThreads = 1                      // threads that assemble batches
    /// Assemble the next step's batch on a background thread while this one trains (BatchPrefetcher): the same
    /// numbers, and the step waits only for what is not ready.
    public var prefetch = true
    public var threadsPerModel = 1                  // threads one model's loops use (threaded towers: each tower's)
    public var lossLog: String? = nil               // file that receives each step's loss, one a line
    public var resume: String? = nil                // checkpoint to continue from (weights, momentum, step)
    public var saveEvery = 0                        // also write --save every this many steps (0: only at the end)
    /// --checkpoint-dir: step-numbered checkpoints (every saveEvery steps, each epoch with saveEachEpoch, and at the
    /// end) and a `latest` pointer; the newest keepCheckpoints are kept.
    public var checkpointDirectory: String? = nil
    public var keepCheckpoints = 3
    public var saveEachEpoch = false
    /// With checkpointDirectory: continue from its newest checkpoint that loads, or start afresh when it holds none.
    public var autoResume = false
    public var tenCrop = false                      // evaluate on 10 crops (corners, centre, and their mirrors)
    public var evalEvery = 0                        // also evaluate the held-out set every this many steps (0: at the end only)
    /// What mean-subtracted pixels are multiplied by, when given (evaluate: the checkpoint's); else from --init.
    public var inputScale: Float? = nil
    public var writesFiles = true                   // whether this process writes --save and --loss-log (rank 0 does)
    public var rank = 0                             // this process's rank (named in messages)
    public var dataset = ""                         // the dataset's fingerprint (DatasetFingerprint), kept in checkpoints
    /// What --resume may change from the checkpoint's settings ("seed", "data", "dropout"); anything else is refused.
    public var resumeAllowedChanges: Set<String> = []
    /// Data parallelism: this replica is shard `index` of `count`, and takes that share of every global batch:
    /// images [⌊index·batch/count⌋, ⌊(index+1)·batch/count⌋).
    public var shard = (index: 0, count: 1)
    /// Whether the shares may differ by an image (the conv-data/fc-model layout); else the batch must split evenly.
    public var unevenShards = false
    public var localBatch: Int { firstSample(of: shard.index + 1) - firstSample }
    public var firstSample: Int { firstSample(of: shard.index) }
    func firstSample(of index: Int) -> Int { ModelConfig.sliceStart(index, of: batch, slices: shard.count) }
    public init() {}
}

public enum Initialisation: String, CaseIterable, Sendable {
    /// The paper: weights N(0, 0.01²), biases 1 in conv2, conv4, conv5, fc6, fc7.
    case paper
    /// He: weights N(0, 2/fan-in), those biases 0.1 (as the PyTorch fixture), and pixel inputs scaled to unit variance.
    case he
}

public struct TrainingSummary: Sendable {
    public var losses: [Double] = []                // per step, mean over the global batch
    public var trainLoss: Double = .nan             // mean of the last steps
    public var top1: Double = .nan, top5: Double = .nan
    public var imagesPerSecond: Double = 0
    public var seconds: Double = 0
    /// The step a stop request (SIGTERM, SIGINT) ended training at, if one did; evaluation is then skipped.
    public var stoppedAtStep: Int? = nil
    /// What a --resume changed from the checkpoint's settings (allowed by --resume-allow-changes), for the summary.
    public var resumeChanges: [String] = []
    /// The evaluations during training (--eval-every): after which step, top-1 and top-5 accuracy.
    public var evaluations: [(step: Int, top1: Double, top5: Double)] = []
}

public final class Trainer {
    public let settings: TrainingSettings
    public let data: DataSplits
    public let replica: Replica
    public let assembler: BatchAssembler
    /// What the layout does around each step (gradient sums, agreement, checkpoints); one process by default.
    public let coordination: RankCoordination
    /// Prints progress (on the rank that prints; a no-op elsewhere).
    public var log: (String) -> Void
    /// Whether this process writes files (rank 0 does; its partner only helps).
    public var writesFiles: Bool { settings.writesFiles }
    /// Whether this process has been asked to stop (SIGTERM, SIGINT).
    public var stopRequested: () -> Bool = { GracefulStop.requested }
    /// Called before each step with the step number (failure injection in tests).
    public var beforeStep: ((Int) throws -> Void)? = nil
    /// Called on the thread that assembles a step's batch (the background thread when prefetching), with the step
    /// number, before it does; what it throws stops training at that step, on the training thread (failure injection).
    public var beforeAssembling: (@Sendable (Int) throws -> Void)? = nil
    /// Seconds the background thread spent assembling batches ahead of their step, and how many images it did, in
    /// the last run() (zero without prefetch).
    public private(set) var assembledAhead: (seconds: Double, images: Int) = (0, 0)
    /// Called after each update with the step number (tests).
    public var afterUpdate: ((Int) throws -> Void)? = nil
    /// --metrics: a JSON line a step and an evaluation (rank 0 only; nil elsewhere).
    public var metrics: MetricsLog? = nil
    /// Called with each step's assembled input (3, localBatch, 227, 227) and labels before the network sees them
    /// (tests: every layout must feed the same pixels).
    public var inspectBatch: ((Int, UnsafePointer<Float>, [Int32]) throws -> Void)? = nil
    /// --trace: opens and closes its step window, gets a "step N" span a step and the prefetch thread's spans
    /// (the clocks record into it by themselves once attached).
    public var trace: TraceRecorder? = nil
    /// The step the run starts from (0, or the step stored in a --resume checkpoint).
    public private(set) var firstStep = 0
    /// The learning-rate schedule and its state (from the checkpoint when resuming), saved in every checkpoint.
    public private(set) var schedule: LearningRateSchedule
    /// The last step after which the held-out set was evaluated (nil: none yet in this run), and the result.
    var lastEvaluation: (step: Int, top1: Double, top5: Double)? = nil
    /// Whether the checkpoint resumed from owes the evaluation due at its step.
    var evaluationOwed = false
    /// The checkpoint the run continues from, and the newer ones of its folder passed over (why), if it resumed.
    public private(set) var resumedFrom: String? = nil
    public private(set) var resumeSkipped: [String] = []
    /// What a --resume changed from the checkpoint's settings (allowed by --resume-allow-changes).
    public private(set) var resumeChanges: [String] = []
    /// The step of the last checkpoint this run wrote (or resumed from), for messages.
    public private(set) var lastSavedStep: Int? = nil
    let input: UnsafeMutablePointer<Float>          // (3, N, 227, 227)
    var evaluationInput: UnsafeMutablePointer<Float>? = nil   // (3, N, 227, 227), with --eval-every
    /// The loss log, opened before the first step (nil on ranks that do not write files).
    var lossFile: FileHandle? = nil

    /// `replica` defaults to one built from `settings.layout` (a process that holds the whole model), `coordination`
    /// to one process's.
    public init(settings: TrainingSettings, data: DataSplits, replica: Replica? = nil,
                coordination: ((Replica) -> RankCoordination)? = nil) throws {
        guard settings.batch <= data.train.count else {
            throw AlexNetError("--batch \(settings.batch) is larger than the training set (\(data.train.count) images in \(data.train.name)); use --batch \(data.train.count) or less")
        }
        self.settings = settings
        self.data = data
        guard settings.batch % settings.shard.count == 0 || (settings.unevenShards && settings.batch >= settings.shard.count) else {
            throw AlexNetError("--batch \(settings.batch) does not split evenly over \(settings.shard.count) replicas; use a multiple of \(settings.shard.count)")
        }
        let replica = replica ?? Replica(config: settings.model, maxBatch: settings.localBatch, layout: settings.layout,
                                         threads: settings.threadsPerModel)
        self.replica = replica
        let coordination = coordination?(replica) ?? OneProcess(replica: replica)
        self.coordination = coordination
        log = coordination.prints ? { print($0); fflush(nil) } : { _ in }
        // Weights first: a bad file is reported before the pass over the data.
        if let path = settings.initFrom { _ = try self.replica.load(path) }
        let wanted = try settings.schedule ?? LearningRateSchedule(base: settings.learningRate, kind: .constant)
        schedule = wanted
        if let (path, state) = try Self.resumePoint(settings: settings, replica: self.replica) {
            resumeChanges = try Self.checkResume(state, path: path, settings: settings)
            evaluationOwed = state.pendingEvaluation == true
            // The schedule continues where it was (its drops, best error, history) when it is the same schedule.
            // (--lr may change on resume, as before schedules: the schedule's multiplier then applies to the new base.)
            if let saved = state.schedule {
                var settingsOnly = saved
                (settingsOnly.state, settingsOnly.base) = (wanted.state, wanted.base)
                if settingsOnly == wanted {
                    schedule = saved
                    schedule.base = wanted.base
                } else if !settings.resumeAllowedChanges.contains("schedule") {
                    throw AlexNetError("\(path): saved with the learning-rate schedule \(saved.description); this run asks for \(wanted.description); use the checkpoint's schedule options, or allow a new schedule with --resume-allow-changes schedule")
                } else {
                    resumeChanges.append("learning-rate schedule \(saved.description) → \(wanted.description) (starting afresh)")
                }
            }
            firstStep = state.step
            lastSavedStep = state.step
            resumedFrom = path
        }
        if let dir = settings.checkpointDirectory, settings.writesFiles { try CheckpointDirectory(path: dir).prepare() }
        // Output files before any work: a bad path refuses in seconds instead of after the training.
        if settings.writesFiles {
            if let path = settings.save { try OutputFiles.checkWritable(path, option: "--save") }
            if let path = settings.lossLog { lossFile = try OutputFiles.openLossLog(path, firstStep: firstStep) }
        }
        assembler = BatchAssembler(training: data.train, seed: settings.seed, sampleLimit: data.statisticsSamples)
        if let scale = settings.inputScale {
            assembler.inputScale = scale
        } else if settings.initialisation == .he {
            assembler.inputScale = 1 / max(assembler.inputStd, 1e-6)
        }
        assembler.threads = settings.dataThreads
        input = .allocate(capacity: 3 * settings.localBatch * 227 * 227)
        input.initialize(repeating: 0, count: 3 * settings.localBatch * 227 * 227)
        // Evaluations between steps get their own input: the prefetcher is filling `input` or its spare meanwhile.
        if settings.evalEvery > 0 {
            evaluationInput = .allocate(capacity: 3 * settings.localBatch * 227 * 227)
            evaluationInput!.initialize(repeating: 0, count: 3 * settings.localBatch * 227 * 227)
        }
        if settings.initFrom == nil && resumedFrom == nil { self.replica.initialise(settings.initialisation, seed: settings.seed) }
    }

    deinit { input.deallocate(); evaluationInput?.deallocate(); try? lossFile?.close() }

    /// What a resumed run may differ in from its checkpoint: the step must lie in [0, --steps), the model's shapes
    /// must match, and seed, dataset and dropout may change only when --resume-allow-changes names them.
    /// Returns the allowed changes, described for the summary.
    /// The checkpoint to continue from, loaded into `replica` (weights and momentum) with its state: --resume FILE,
    /// --resume DIR (the newest checkpoint there that loads and verifies), or with --auto-resume the newest in
    /// --checkpoint-dir if it holds one. Nil: start afresh.
    static func resumePoint(settings: TrainingSettings, replica: Replica) throws -> (String, TrainingState)? {
        func loadState(_ path: String) throws -> TrainingState {
            guard let state = try replica.load(path, momentum: true) else {
                throw AlexNetError("\(path): no training state in the file (written by --save of alexnet-mpi?); use --init-from to start from its weights")
            }
            return state
        }
        if let path = settings.resume, !CheckpointDirectory.isDirectory(path) { return (path, try loadState(path)) }
        guard let folder = settings.resume ?? (settings.autoResume ? settings.checkpointDirectory : nil) else { return nil }
        var state: TrainingState? = nil
        let found = CheckpointDirectory(path: folder).newest { state = try loadState($0) }
        guard let found, let state else {
            if settings.resume == nil { return nil }   // --auto-resume with an empty folder: a fresh start
            throw AlexNetError("--resume \(folder): the folder holds no checkpoint that loads (step-*.safetensors); resume from a file, or start without --resume")
        }
        if !found.skipped.isEmpty, settings.writesFiles {
            print("resume: passed over " + found.skipped.joined(separator: "; ")); fflush(nil)
        }
        return (found.path, state)
    }

    static func checkResume(_ state: TrainingState, path: String, settings: TrainingSettings) throws -> [String] {
        guard state.step >= 0 else {
            throw AlexNetError("\(path): the stored step \(state.step) is negative (a damaged or hand-edited file); resume from another checkpoint")
        }
        // --auto-resume of a run that already finished (a requeued job): nothing left to train, not an error.
        guard state.step < settings.steps || (settings.autoResume && settings.resume == nil && state.step == settings.steps) else {
            throw AlexNetError("\(path): already at step \(state.step); ask for more --steps (now \(settings.steps))")
        }
        var network = state.model
        network.dropout = settings.model.dropout   // dropout is a training setting, compared below; the rest is the network
        if network != settings.model {
            throw AlexNetError("\(path): saved for width \(state.model.width) and \(state.model.classes) classes, but these settings make width \(settings.model.width) and \(settings.model.classes) classes; resume with the same --width and --classes (start a new run with --init-from to change the network)")
        }
        var differences: [(name: String, text: String)] = []
        if state.seed != settings.seed { differences.append(("seed", "--seed \(state.seed) → \(settings.seed) (a different data order, augmentation and dropout from here on)")) }
        if state.model.dropout != settings.model.dropout { differences.append(("dropout", "--dropout \(state.model.dropout) → \(settings.model.dropout)")) }
        if let saved = state.dataset, !settings.dataset.isEmpty, saved != settings.dataset {
            differences.append(("data", "dataset \(saved) → \(settings.dataset)"))
        }
        let refused = differences.filter { !settings.resumeAllowedChanges.contains($0.name) }
        guard refused.isEmpty else {
            throw AlexNetError("\(path): this run differs from the checkpoint's: " + refused.map(\.text).joined(separator: "; ")
                               + "; use the checkpoint's settings, or allow it with --resume-allow-changes "
                               + refused.map(\.name).joined(separator: ","))
        }
        return differences.map(\.text)
    }

    public var batchesPerEpoch: Int { data.train.count / settings.batch }

    /// Dataset indices of the global batch of `step`: a per-epoch shuffle from the seed, or file order without augmentation.
    public func batchIndices(step: Int, cache: inout (epoch: Int, order: [Int])) -> (epoch: Int, indices: [Int]) {
        let epoch = step / batchesPerEpoch, position = step % batchesPerEpoch
        if cache.epoch != epoch {
            cache = (epoch, settings.augment ? CounterRandom.permutation(count: data.train.count, seed: settings.seed, epoch: epoch)
                                             : Array(0..<data.train.count))
        }
        let b = settings.batch
        return (epoch, Array(cache.order[(position * b)..<((position + 1) * b)]))
    }

    /// This replica's share of the batch of `step`: its epoch and dataset indices.
    func localIndices(step: Int, cache: inout (epoch: Int, order: [Int])) -> (epoch: Int, indices: [Int]) {
        let local = settings.localBatch, first = settings.firstSample
        let (epoch, global) = batchIndices(step: step, cache: &cache)
        return (epoch, Array(global[first..<(first + local)]))
    }

    /// One training step on the global batch of `step` (this replica computing its shard), its batch assembled here
    /// and now; returns the mean loss over the global batch before the update, and the sum of this process's weights
    /// after it (finite exactly when every weight is). A non-finite loss skips the update.
    public func trainStep(_ step: Int, cache: inout (epoch: Int, order: [Int])) throws -> (loss: Double, weightSum: Double) {
        let (epoch, indices) = localIndices(step: step, cache: &cache)
        let labels = try replica.clock.time(.data, .forward) {
            try beforeAssembling?(step)
            return assembler.assemble(data.train, indices: indices, epoch: epoch, augment: settings.augment, into: input)
        }
        return try trainStep(step, input: input, labels: labels)
    }

    /// One training step on an assembled batch: `input` (3, localBatch, 227, 227) and its labels.
    func trainStep(_ step: Int, input: UnsafeMutablePointer<Float>, labels: [Int32]) throws -> (loss: Double, weightSum: Double) {
        let b = settings.batch, local = settings.localBatch, first = settings.firstSample
        try inspectBatch?(step, input, labels)
        let localLoss = try replica.computeGradients(input: input, batch: local, labels: labels, normaliser: b,
                                                     seed: settings.seed, step: step, firstSample: first)
        try replica.clock.time(.update, .exchange) { try coordination.synchroniseGradients() }
        // The end-of-step collectives are where a rank waits for the others: charged to (loss, exchange).
        let loss = try replica.clock.time(.loss, .exchange) { try coordination.sumOverShares(localLoss, of: "the batch's loss") } / Double(b)
        guard loss.isFinite else { return (loss, .nan) }
        let weightSum = try coordination.update(replica, learningRate: learningRate(step: step), momentum: settings.momentum,
                                                weightDecay: settings.weightDecay)
        try replica.clock.time(.loss, .exchange) { try coordination.afterUpdate(step: step, lastStep: settings.steps - 1) }
        try afterUpdate?(step)
        return (loss, weightSum)
    }

    /// What this process saw in the step just done.
    func report(loss: Double, weightSum: Double) -> StepReport {
        var r = StepReport(stopRequested: stopRequested())
        if !loss.isFinite {
            r.nonFinite = "the loss is \(loss)"
        } else if !weightSum.isFinite {
            let tensor = replica.stores.lazy.compactMap { $0.firstNonFiniteTensor() }.first
            r.nonFinite = tensor.map { "\($0) is not finite after the update" } ?? "the weights' sum overflowed (\(weightSum))"
        }
        return r
    }

    /// Top-1 and top-5 accuracy (no dropout) over `limit` images of the held-out set, each replica taking its share:
    /// on the centre crop, or with `tenViews` (default: --ten-crop) the paper's ten views' softmax averaged.
    /// `progress(done, total)` is called on every rank after each pass with this rank's images scaled to the whole set.
    public func evaluate(limit: Int? = nil, tenViews: Bool? = nil,
                         progress: ((Int, Int) -> Void)? = nil) throws -> (top1: Double, top5: Double) {
        let set = data.heldOut, total = min(set.count, limit ?? set.count)
        let (index, count) = settings.shard
        // A sliced fc stack computes every rank's images together: each rank then passes the same number of batches
        // of the same size, its share padded with repeats of the last image, which are not counted.
        let equalPasses = replica.models[0].slicesFullyConnected
        let share = equalPasses ? (total + count - 1) / count : 0
        let lo = equalPasses ? min(total, index * share) : total * index / count
        let hi = equalPasses ? min(total, lo + share) : total * (index + 1) / count
        let passesOver = equalPasses ? share : hi - lo
        var hits1 = 0, hits5 = 0, done = 0
        let classes = settings.model.classes
        // Ten views (corners, centre, mirrored) average their softmax; tensors are already 227 × 227: one view.
        let views: [BatchAssembler.View?] = (tenViews ?? settings.tenCrop) && set.storage != .tensors ? BatchAssembler.View.ten : [nil]
        var scores = [Float](repeating: 0, count: classes * settings.localBatch)
        while done < passesOver {
            // Passes of the same size on every rank when they compute together (the smallest share).
            let n = min(equalPasses ? settings.batch / count : settings.localBatch, passesOver - done)
            let indices = (0..<n).map { min(lo + done + $0, total - 1) }
            let counted = max(0, min(n, hi - (lo + done)))
            var labels: [Int32] = []
            scores.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
            for view in views {
                let buffer = evaluationInput ?? input
                labels = assembler.assemble(set, indices: indices, epoch: 0, augment: false, view: view, into: buffer)
                let logits = try replica.evaluate(input: buffer, batch: n)
                scores.withUnsafeMutableBufferPointer {
                    SoftmaxCrossEntropy.addProbabilities(logits: logits, classes: classes, batch: n, to: $0.baseAddress!)
                }
            }
            scores.withUnsafeBufferPointer { p in
                for i in 0..<counted {
                    let label = Int(labels[i])
                    if SoftmaxCrossEntropy.inTopK(logits: p.baseAddress!, classes: classes, batch: n, image: i, label: label, k: 1) { hits1 += 1 }
                    if SoftmaxCrossEntropy.inTopK(logits: p.baseAddress!, classes: classes, batch: n, image: i, label: label, k: 5) { hits5 += 1 }
                }
            }
            done += n
            progress?(min(total, done * total / max(1, passesOver)), total)
        }
        return (try coordination.sumOverShares(Double(hits1), of: "the evaluation's top-1 hits") / Double(total),
                try coordination.sumOverShares(Double(hits5), of: "the evaluation's top-5 hits") / Double(total))
    }

    public func run() throws -> TrainingSummary {
        var summary = TrainingSummary()
        summary.resumeChanges = resumeChanges
        var cache = (epoch: -1, order: [Int]())
        let start = PhaseClock.now()
        var lastPrint = start
        var lastStep = settings.steps - 1
        // Double buffering: while step s trains on one input, the background thread fills the other with step s + 1.
        let prefetcher = settings.prefetch ? BatchPrefetcher(
            assembler: assembler, dataset: data.train, augment: settings.augment, input: input,
            capacity: 3 * settings.localBatch * 227 * 227, threads: settings.dataThreads, beforeAssembling: beforeAssembling,
            trace: trace) : nil
        defer { prefetcher?.stop() }   // whatever ends the loop (a throw too), the thread ends with it
        if let p = prefetcher, firstStep < settings.steps {
            let (epoch, indices) = localIndices(step: firstStep, cache: &cache)
            p.prefetch(step: firstStep, epoch: epoch, indices: indices)
        }
        var smoothed: Double? = nil   // the loss, exponentially averaged over about 20 steps, for the progress line
        let terminal = coordination.prints && Terminal.isInteractive
        if evaluationOwed, firstStep < settings.steps {   // the evaluation the checkpoint's step was due, first
            summary.evaluations.append(try scheduledEvaluation(after: firstStep))
        }
        for step in firstStep..<settings.steps {
            try beforeStep?(step)
            if let change = schedule.advance(toEpoch: epochs(step)) {
                if terminal { print("") }
                logScheduleChange(change, step: step)
            }
            trace?.beginStep(step)
            let stepStart = PhaseClock.now(), clockBefore = replica.clock.seconds, trafficBefore = coordination.traffic
            let loss: Double, weightSum: Double
            if let p = prefetcher {
                let batch = try replica.clock.time(.data, .forward) { try p.take(step: step) }   // the data wait
                if step + 1 < settings.steps {
                    // Charged to data too: waking the background thread can hand it this core for a while.
                    try replica.clock.time(.data, .forward) {
                        let (epoch, indices) = localIndices(step: step + 1, cache: &cache)
                        p.prefetch(step: step + 1, epoch: epoch, indices: indices)
                    }
                }
                (loss, weightSum) = try trainStep(step, input: batch.input, labels: batch.labels)
            } else {
                (loss, weightSum) = try trainStep(step, cache: &cache)
            }
            let mine = report(loss: loss, weightSum: weightSum)
            let agreed = try replica.clock.time(.loss, .exchange) { try coordination.agree(mine) }
            let stepSeconds = Double(PhaseClock.now() - stepStart) * 1e-9   // the step's work ends with the agreement
            trace?.endStep(step)   // the step span too
            if let bad = agreed.nonFiniteRank {
                // Every rank stops here, before anything is saved: the last checkpoint on disk stays the last good one.
                let kept = settings.save.map { path in lastSavedStep.map { " \(path) (step \($0)) is kept as it was" } ?? " nothing was saved, \(path) is untouched" } ?? ""
                let advice = "; lower --lr (now \(learningRate(step: step))) or --weight-decay (now \(settings.weightDecay))"
                if let why = mine.nonFinite, bad == settings.rank {
                    throw AgreedStop("training blew up at step \(step): \(why);" + kept + advice, printHere: true)
                }
                throw AgreedStop("training blew up at step \(step) on rank \(bad) (it names the tensor);" + kept + advice,
                                 printHere: settings.rank == 0)
            }
            summary.losses.append(loss)
            lossFile?.write(String(format: "%d %.17g\n", step, loss).data(using: .utf8)!)
            if let m = metrics {
                m.write(stepMetrics(step: step, loss: loss, seconds: stepSeconds,
                                    clockBefore: clockBefore, trafficBefore: trafficBefore))
            }
            if loss.isFinite { smoothed = smoothed.map { 0.95 * $0 + 0.05 * loss } ?? loss }
            if agreed.stopRank == nil, step + 1 < settings.steps {   // a stop saves below, once
                try periodicSave(after: step + 1)   // a crash later loses at most saveEvery steps (or an epoch)
            }
            if let who = agreed.stopRank {
                summary.stoppedAtStep = step + 1
                lastStep = step
                log("stopping after step \(step + 1): a stop was requested (SIGTERM or SIGINT\(who == settings.rank && settings.rank == 0 ? "" : " on rank \(who)"))")
            }
            if evaluationDue(after: step + 1), summary.stoppedAtStep == nil {
                if terminal { print("") }   // below the progress line it rewrites
                summary.evaluations.append(try scheduledEvaluation(after: step + 1))
            }
            let now = PhaseClock.now()
            let elapsed = Double(now - start) * 1e-9
            // On a terminal one line rewritten several times a second; in a log a line every progressEvery seconds.
            if step == lastStep || step == firstStep || Double(now - lastPrint) * 1e-9 >= (terminal ? 0.2 : settings.progressEvery) {
                lastPrint = now
                let done = step + 1 - firstStep
                let rate = Double(done * settings.batch) / elapsed
                let eta = elapsed / Double(done) * Double(settings.steps - step - 1)
                let line = String(format: "step %5d/%d  epoch %3d  loss %.4f (smoothed %.4f)  lr %g  %7.1f img/s  ETA %@",
                                  step + 1, settings.steps, step / batchesPerEpoch, loss, smoothed ?? loss, Double(learningRate(step: step)),
                                  rate, Self.clockText(eta))
                if terminal {
                    print("\r" + line + "\u{1B}[K", terminator: step == lastStep || summary.stoppedAtStep != nil ? "\n" : "")
                    fflush(nil)
                } else {
                    log(line)
                }
            }
            if summary.stoppedAtStep != nil { break }
        }
        let stepsDone = lastStep + 1
        summary.seconds = Double(PhaseClock.now() - start) * 1e-9
        if let p = prefetcher {
            p.stop()   // nothing is assembled past the last step; the evaluation below uses `input` alone
            assembledAhead = p.background
        }
        let c = replica.clock, n = Double(max(1, stepsDone - firstStep))
        let data = c.seconds(.data, .forward), update = c.seconds(.update, .backward)
        let ahead = prefetcher == nil ? "" : String(format: " waited (%.0f%% of the images assembled ahead: %.1f ms a step on a background thread)",
                                                    100 * Double(assembledAhead.images) / (n * Double(settings.localBatch)),
                                                    1e3 * assembledAhead.seconds / n)
        let stepSeconds = c.total
        log(String(format: "time per step: data %.1f ms%@ = %.1f%% of the step, forward %.1f ms, backward %.1f ms, exchange %.1f ms, update %.1f ms",
                   1e3 * data / n, ahead, 100 * data / max(stepSeconds, 1e-12), 1e3 * (c.total(.forward) - data) / n, 1e3 * (c.total(.backward) - update) / n,
                   1e3 * c.total(.exchange) / n, 1e3 * update / n))
        summary.imagesPerSecond = Double((stepsDone - firstStep) * settings.batch) / max(summary.seconds, 1e-9)
        coordination.trainingFinished()
        let tail = summary.losses.suffix(max(1, min(20, summary.losses.count)))
        summary.trainLoss = tail.reduce(0, +) / Double(max(1, tail.count))
        if let path = settings.save {
            try saveCheckpoint(path, step: stepsDone)
            if writesFiles { log("saved \(path) at step \(stepsDone)") }
        }
        if settings.checkpointDirectory != nil, lastSavedStep != stepsDone {
            let path = try saveToDirectory(step: stepsDone)
            log("saved \(path) at step \(stepsDone)")
        }
        if summary.stoppedAtStep != nil { return summary }   // asked to stop: no evaluation pass
        if let last = lastEvaluation, last.step == stepsDone {   // just measured after the last step
            (summary.top1, summary.top5) = (last.top1, last.top5)
            return summary
        }
        (summary.top1, summary.top5) = try evaluate()
        writeEvaluationMetrics(step: stepsDone, top1: summary.top1, top5: summary.top5, final: true)
        return summary
    }

    /// The metrics line of a step: its time split (this rank's clock; the phases add up to the step but for the
    /// end-of-step agreement and logging) and the bytes this rank moved in it.
    func stepMetrics(step: Int, loss: Double, seconds: Double, clockBefore: [Double], trafficBefore: Traffic) -> [String: Any] {
        let after = replica.clock.seconds, phases = Phase.allCases.count
        func delta(_ stage: Stage, _ phase: Phase) -> Double {
            let i = stage.rawValue * phases + phase.rawValue
            return after[i] - clockBefore[i]
        }
        func total(_ phase: Phase) -> Double { Stage.allCases.reduce(0) { $0 + delta($1, phase) } }
        let data = delta(.data, .forward), update = delta(.update, .backward), allreduce = delta(.update, .exchange)
        let traffic = coordination.traffic
        // Waiting: for the partner inside the tower exchanges, and in the end-of-step collectives (loss sum, agreement).
        let collectives = delta(.loss, .exchange)
        let waiting = collectives + min(traffic.waitingSeconds - trafficBefore.waitingSeconds, total(.exchange) - allreduce - collectives)
        let ms: [String: Double] = [
            "data_wait": data, "forward": total(.forward) - data, "backward": total(.backward) - update,
            "exchange": total(.exchange) - allreduce - waiting, "waiting": waiting, "allreduce": allreduce, "update": update,
        ].mapValues { $0 * 1e3 }
        return ["kind": "step", "step": step + 1, "epoch": epochs(step + 1), "loss": loss,
                "lr": Double("\(learningRate(step: step))") ?? Double(learningRate(step: step)), "images_per_second": Double(settings.batch) / max(seconds, 1e-12),
                "step_ms": seconds * 1e3, "time_ms": ms,
                "bytes": ["exchange": traffic.exchangeBytes - trafficBefore.exchangeBytes,
                          "allreduce": traffic.allreduceBytes - trafficBefore.allreduceBytes]]
    }

    /// The evaluation between steps (every rank, at the same step: its passes are collective): logged, in the metrics,
    /// and shown to the learning-rate schedule.
    func scheduledEvaluation(after stepsDone: Int) throws -> (step: Int, top1: Double, top5: Double) {
        let (top1, top5) = try evaluate()
        lastEvaluation = (stepsDone, top1, top5)
        writeEvaluationMetrics(step: stepsDone, top1: top1, top5: top5, final: false)
        log(String(format: "step %d: %@ top-1 %.2f%%, top-5 %.2f%%", stepsDone,
                   (data.heldOutIsTrainingSet ? "training-set" : "held-out") + (settings.tenCrop ? " 10-crop" : ""), 100 * top1, 100 * top5))
        if let change = schedule.observe(validationError: 1 - top1, epoch: epochs(stepsDone)) {
            logScheduleChange(change, step: stepsDone)
        }
        return (stepsDone, top1, top5)
    }

    func logScheduleChange(_ change: LearningRateSchedule.Change, step: Int) {
        log(String(format: "learning rate %g → %g at step %d (epoch %.2f): %@", Double(change.from), Double(change.to), step,
                   change.epoch, change.reason))
        metrics?.write(["kind": "learning_rate", "step": step, "epoch": change.epoch, "from": Double("\(change.from)") ?? 0,
                        "to": Double("\(change.to)") ?? 0, "reason": change.reason])
    }

    /// The learning rate of `step`: the schedule's at the step's fractional epoch.
    public func learningRate(step: Int) -> Float { schedule.rate(epoch: epochs(step)) }

    /// Epochs (fractional) that `steps` steps make.
    func epochs(_ steps: Int) -> Double { Double(steps) / Double(max(1, batchesPerEpoch)) }

    /// The metrics line of an evaluation after `step` steps (between steps, or the run's final one).
    func writeEvaluationMetrics(step: Int, top1: Double, top5: Double, final: Bool) {
        var line: [String: Any] = ["kind": "evaluation", "step": step, "epoch": epochs(step), "top1": top1, "top5": top5,
                                   "views": settings.tenCrop ? "ten" : "centre",
                                   "split": data.heldOutIsTrainingSet ? "training" : "held-out"]
        if final { line["final"] = true }
        metrics?.write(line)
    }

    /// Whether the held-out set is measured after `stepsDone` steps: every --eval-every steps, or with the paper's
    /// schedule (which needs the validation error) at each epoch's end when --eval-every is not given.
    func evaluationDue(after stepsDone: Int) -> Bool {
        if settings.evalEvery > 0 { return stepsDone % settings.evalEvery == 0 }
        if case .paper = schedule.kind { return stepsDone % max(1, batchesPerEpoch) == 0 }
        return false
    }

    /// The saves due after `stepsDone` steps: --save every saveEvery steps; into the checkpoint folder every saveEvery
    /// steps and at each epoch's end with saveEachEpoch.
    func periodicSave(after stepsDone: Int) throws {
        let every = settings.saveEvery > 0 && stepsDone % settings.saveEvery == 0
        let epochEnd = settings.saveEachEpoch && stepsDone % max(1, batchesPerEpoch) == 0
        if every, let path = settings.save { try saveCheckpoint(path, step: stepsDone) }
        if (every || epochEnd) && settings.checkpointDirectory != nil { _ = try saveToDirectory(step: stepsDone) }
    }

    /// Writes the checkpoint of `step` into the checkpoint folder (every rank takes part), then rank 0 moves
    /// `latest` to it and removes the oldest beyond keepCheckpoints. Returns the file's path.
    func saveToDirectory(step: Int) throws -> String {
        let dir = CheckpointDirectory(path: settings.checkpointDirectory!, keep: settings.keepCheckpoints)
        let path = dir.file(step: step)
        try saveCheckpoint(path, step: step)
        if settings.writesFiles { try dir.commit(step: step) }
        return path
    }

    public func saveCheckpoint(_ path: String, step: Int) throws {
        var state = TrainingState(step: step, seed: settings.seed, learningRate: settings.learningRate, model: settings.model)
        state.schedule = schedule
        if evaluationDue(after: step), lastEvaluation?.step != step, step > 0 { state.pendingEvaluation = true }
        state.dataset = settings.dataset.isEmpty ? nil : settings.dataset
        state.inputScale = assembler.inputScale
        state.classNames = data.classNames
        try coordination.saveCheckpoint(path, state: state)
        lastSavedStep = step
    }

    static func clockText(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
