// `alexnet-mpi evaluate`: a checkpoint's top-1 and top-5 error on a dataset folder (centre crop and ten views).
import AlexNet
import AlexNetMPI
import ArgumentParser
import Foundation

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Top-1 and top-5 error of a checkpoint on a dataset folder: the centre crop and the paper's ten views (corners and centre, each mirrored, softmax averaged).",
        discussion: "--data is a folder written by `alexnet-mpi prepare` (or any NumPy dataset folder); its heldout/ images are evaluated (the training images with --training-images). Under mpirun every rank takes its share, in any --mode.")

    @Option(help: "Checkpoint to evaluate (written by train --save; or a whole-model safetensors file with --width and --classes).")
    var checkpoint: String
    @Option(help: "Dataset folder (images.npy, labels.npy, heldout/).")
    var data: String
    @Flag(name: .customLong("training-images"), help: "Evaluate the training images instead of heldout/.")
    var trainingImages = false
    @Option(help: "Which evaluations: centre, ten, or both.")
    var views: ViewChoice = .both
    @Option(help: "Evaluate only the first N images.")
    var limit: Int?
    @Option(help: "Images a pass (split over the replicas).")
    var batch: Int = 64
    @Option(help: ArgumentHelp(Train.modeHelp))
    var mode: ParallelMode?
    @Option(help: "Width of the network, for a file without training state.")
    var width: Double?
    @Option(help: "Classes of the network, for a file without training state.")
    var classes: Int?
    @OptionGroup var threadOptions: ThreadOptions
    @Option(name: .customLong("stall-timeout"), help: ArgumentHelp("Under mpirun: a rank that waits longer than this stops every rank (0: wait for ever).", valueName: "seconds")) var stallTimeout: Double = 600

    enum ViewChoice: String, ExpressibleByArgument, CaseIterable { case centre, ten, both }

    func validate() throws {
        guard batch >= 1, batch <= Limits.batch else { throw ValidationError("--batch must be in 1…\(Limits.batch) (got \(batch))") }
        if let l = limit, l < 1 { throw ValidationError("--limit must be at least 1 (got \(l))") }
        if let w = width { try Limits.check(width: w, classes: classes, batch: batch) }
        if let c = classes, c < 2 { throw ValidationError("--classes must be at least 2 (got \(c))") }
        guard stallTimeout >= 0, stallTimeout.isFinite else { throw ValidationError("--stall-timeout must be 0 (off) or a positive number of seconds (got \(stallTimeout))") }
    }

    func run() throws {
        if let world = Launch.world { try StallWatchdog.start(seconds: stallTimeout, world: world) }
        var job = EvaluationJob()
        (job.checkpoint, job.dataDirectory, job.trainingSplit, job.limit, job.batch) = (checkpoint, data, trainingImages, limit, batch)
        (job.mode, job.width, job.classes, job.threads) = (mode, width, classes, threadOptions.count)
        job.views = views == .both ? [false, true] : [views == .ten]
        job.options = Agreement.optionFields(of: self) + [("build", Agreement.buildIdentity)]
        // One reporter an evaluation (centre, then ten views): a bar on a terminal, a line every 10 s in a log.
        let reporters = ReporterBox()
        job.progress = { done, total in
            if reporters.current == nil || done < reporters.last { reporters.current = ProgressReporter(label: "evaluate", total: total) }
            reporters.last = done
            if done >= total { reporters.current?.finish(done) } else { reporters.current?.update(done) }
        }
        _ = try job.run(world: Launch.world)
    }
}

/// The progress reporter of the evaluation under way (the job calls back on rank 0's thread).
final class ReporterBox {
    var current: ProgressReporter? = nil
    var last = 0
}
