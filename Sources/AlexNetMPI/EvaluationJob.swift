// `alexnet-mpi evaluate`: top-1 and top-5 error of a checkpoint on a dataset folder, on the centre crop and on the
// paper's ten views, in any layout (each rank, or each replica, takes its share of the images).
import AlexNet
import Foundation

public struct EvaluationJob {
    public var checkpoint = ""
    public var dataDirectory = ""
    /// Evaluate the training images themselves instead of heldout/.
    public var trainingSplit = false
    public var mode: ParallelMode? = nil
    /// Images a pass (the global batch of a layout that splits it).
    public var batch = 64
    public var threads = 1
    /// Which evaluations, in order: false = the centre crop, true = the ten views.
    public var views: [Bool] = [false, true]
    public var limit: Int? = nil
    /// For a file without training state (e.g. PyTorch's weights): the network's width and classes.
    public var width: Double? = nil
    public var classes: Int? = nil
    public var options: [(String, String)] = []
    /// Called on rank 0 with (images done, images in all) after each pass.
    public var progress: ((Int, Int) -> Void)? = nil
    public init() {}

    public struct Outcome: Sendable {
        public var tenViews: Bool
        public var top1: Double, top5: Double
        public var top1Error: Double { 1 - top1 }
        public var top5Error: Double { 1 - top5 }
    }

    public func run(world: MPICommunicator?) throws -> [Outcome] {
        let rank = world?.rank ?? 0, size = world?.size ?? 1
        let say: (String) -> Void = { if rank == 0 { print($0); fflush(nil) } }
        let layout = try refusedBeforeWork { try ParallelLayout(mode: mode ?? ParallelLayout.defaultMode(ranks: size), ranks: size, underMPI: world != nil) }
        let plan = ThreadPlan(threads: threads, holdsBothTowersInOneProcess: layout.mode == .single)
        Oversubscription.warn(threads: plan.threads)
        let stored = try Checkpoint.state(of: checkpoint)
        var model: ModelConfig
        if let state = stored {
            model = state.model
            if let w = width, w != model.width { throw AlexNetError("--width \(w): \(checkpoint) holds a network of width \(model.width); leave --width out") }
            if let c = classes, c != model.classes { throw AlexNetError("--classes \(c): \(checkpoint) holds a network of \(model.classes) classes; leave --classes out") }
        } else {
            guard let w = width, let c = classes else {
                throw AlexNetError("\(checkpoint) holds no training state (not written by alexnet-mpi --save?); give --width and --classes of the network it holds")
            }
            model = ModelConfig(width: w, classes: c, dropout: 0.5)
        }
        let splits = try NumpyDataset.splits(directory: dataDirectory, classes: model.classes)
        if let theirs = stored?.classNames, let ours = splits.classNames, theirs != ours {
            let first = (0..<min(theirs.count, ours.count)).first { theirs[$0] != ours[$0] } ?? min(theirs.count, ours.count)
            throw AlexNetError("\(dataDirectory): its classes differ from those \(checkpoint) was trained on (\(ours.count) vs \(theirs.count) names, first difference at index \(first)); evaluate on data prepared with the same class folders")
        }
        let set = trainingSplit ? splits.train : splits.heldOut
        let data = DataSplits(train: splits.train, heldOut: set, heldOutIsTrainingSet: trainingSplit || splits.heldOutIsTrainingSet,
                              classes: model.classes, description: splits.description)
        var s = TrainingSettings()
        s.model = model
        // The pass size: at most the set (the trainer needs a batch no larger than its training set), split evenly.
        let unit = layout.allowsUnevenShares ? 1 : layout.replicas
        s.batch = max(unit, min(batch, splits.train.count) / unit * unit)
        (s.steps, s.augment, s.prefetch, s.initFrom, s.seed) = (0, false, false, checkpoint, stored?.seed ?? 1)
        // The pixels as the run fed them: its input scale; files from before it was kept trained with --init's default.
        s.initialisation = .he
        s.inputScale = stored?.inputScale
        (s.rank, s.writesFiles, s.layout, s.dataThreads, s.threadsPerModel) = (rank, false, plan.replicaLayout, plan.threads, plan.threadsPerModel)
        if let world, layout.ranks > 1 {
            let fields = options + [("ranks", "\(size)"), ("layout", layout.mode.rawValue), ("images", "\(set.count)")]
            try refusedBeforeWork { try SettingsHandshake.check(fields, on: world) }
        }
        try refusedBeforeWork { try layout.checkBatch(s.batch) }
        try MemoryCheck.refuseIfTooLarge(config: s.model, layout: layout, rank: rank, batch: s.batch, replicaLayout: plan.replicaLayout,
                                         inputs: 1, say: say)
        let assembly = try LayoutAssembly(layout: layout, world: world, config: s.model, batch: s.batch, replicaLayout: plan.replicaLayout,
                                          threadsPerModel: plan.threadsPerModel)
        s.shard = assembly.shard
        s.unevenShards = layout.allowsUnevenShares
        for line in assembly.describe(threads: plan.threads) { say("alexnet-mpi evaluate: " + line) }
        let total = min(set.count, limit ?? set.count)
        say("evaluating \(checkpoint)" + (stored.map { " (step \($0.step), W = \($0.model.width), \($0.model.classes) classes)" } ?? "")
            + " on \(total) \(trainingSplit || splits.heldOutIsTrainingSet ? "training" : "held-out") images of \(dataDirectory), \(s.batch) a pass"
            + (stored?.inputScale == nil ? "; the file does not say how its inputs were scaled: assuming --init he's unit variance" : ""))
        let trainer = try Trainer(settings: s, data: data, replica: assembly.replica, coordination: { _ in assembly })
        var outcomes: [Outcome] = []
        for tenViews in views {
            let started = PhaseClock.now()
            let (top1, top5) = try trainer.evaluate(limit: total, tenViews: tenViews, progress: rank == 0 ? progress : nil)
            let seconds = Double(PhaseClock.now() - started) * 1e-9
            outcomes.append(Outcome(tenViews: tenViews, top1: top1, top5: top5))
            say(String(format: "%@: top-1 error %.2f%%, top-5 error %.2f%% (top-1 accuracy %.2f%%) over %d images in %.1f s",
                       tenViews ? "ten views  " : "centre crop", 100 * (1 - top1), 100 * (1 - top5), 100 * top1, total, seconds))
        }
        return outcomes
    }
}
