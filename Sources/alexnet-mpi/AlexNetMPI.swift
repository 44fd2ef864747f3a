// The command line: `alexnet-mpi train` (default) and `alexnet-mpi bench`.
import AlexNet
import ArgumentParser
import Foundation

@main
struct AlexNetMPI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alexnet-mpi",
        abstract: "Trains the two-tower AlexNet of Krizhevsky, Sutskever and Hinton (2012) on OpenBLAS.",
        subcommands: [Train.self, Bench.self, ExportEmbedded.self],
        defaultSubcommand: Train.self)

    /// Errors of ours become one line on stderr and exit code 1; argument errors keep ArgumentParser's usage text.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as AlexNetError {
            FileHandle.standardError.write("alexnet-mpi: error: \(error.description)\n".data(using: .utf8)!)
            Foundation.exit(1)
        } catch {
            exit(withError: error)
        }
    }
}

/// Threads for OpenBLAS and the Swift loops: the cores this process may run on, unless set.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for OpenBLAS and the element-wise loops (default: the cores this process may run on).")
    var threads: Int?

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1 (got \(t))") }
    }

    /// Sets BLAS and loop threads and returns (threads, layout). With two or more threads the towers run on
    /// their own threads, each with half of them: no BLAS worker then spins against the element-wise loops.
    func apply() -> (threads: Int, layout: ReplicaLayout) {
        let n = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount)
        let layout: ReplicaLayout = n >= 2 ? .threadedTowers : .sequential
        let perTower = layout == .threadedTowers ? max(1, n / 2) : n
        Blas.setThreads(perTower)
        Parallel.threads = perTower
        return (n, layout)
    }
}

extension Initialisation: ExpressibleByArgument {}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train the network (default: the embedded shapes dataset).")

    @Option(help: "NumPy dataset directory (images.npy, labels.npy, optional heldout/); default: the embedded shapes.")
    var data: String?
    @Option(help: "Width multiplier W: channels C(W) = 2·round(C·W/2); 1 is the paper's network.")
    var width: Double = 0.25
    @Option(help: "Number of classes (default: 10 for the embedded set, the largest label + 1 for a NumPy set).")
    var classes: Int?
    @Option(help: "Images per step (the global batch).")
    var batch: Int = 64
    @Option(help: "Training steps (batches); ignored if --epochs is given.")
    var steps: Int = 300
    @Option(help: "Passes over the training set (overrides --steps).")
    var epochs: Int?
    @Option(help: "Learning rate ε.")
    var lr: Float = 0.01
    @Option(help: "Momentum μ.")
    var momentum: Float = 0.9
    @Option(name: .customLong("weight-decay"), help: "Weight decay λ (applied to weights and biases, as in the paper).")
    var weightDecay: Float = 5e-4
    @Option(help: "Dropout probability in fc6 and fc7 (0 turns it off).")
    var dropout: Float = 0.5
    @Option(help: "Seed for initialisation, shuffling, augmentation and dropout.")
    var seed: UInt64 = 1
    @Option(name: .customLong("init"), help: "Initialisation: 'paper' (N(0, 0.01²), biases 1 in conv2/4/5, fc6/7) or 'he' (N(0, 2/fan-in), those biases 0.1).")
    var initialisation: Initialisation = .he
    @Option(name: .customLong("init-from"), help: "Start from the weights in this safetensors file.")
    var initFrom: String?
    @Option(help: "Write the trained weights (and momentum) to this safetensors file.")
    var save: String?
    @Flag(name: .customLong("no-augment"), help: "No random crop, flip or colour noise; batches in file order.")
    var noAugment = false
    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        guard width > 0, width.isFinite else { throw ValidationError("--width must be positive (got \(width)); 1 is the paper's network") }
        if let c = classes, c < 2 { throw ValidationError("--classes must be at least 2 (got \(c))") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch))") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1 (got \(steps))") }
        if let e = epochs, e < 1 { throw ValidationError("--epochs must be at least 1 (got \(e))") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive (got \(lr))") }
        guard momentum >= 0, momentum < 1 else { throw ValidationError("--momentum must be in [0, 1) (got \(momentum))") }
        guard weightDecay >= 0 else { throw ValidationError("--weight-decay must not be negative (got \(weightDecay))") }
        guard dropout >= 0, dropout < 1 else { throw ValidationError("--dropout must be in [0, 1) (got \(dropout))") }
    }

    func run() throws {
        let (threads, layout) = threadOptions.apply()
        let splits: DataSplits
        if let directory = data {
            splits = try NumpyDataset.splits(directory: directory, classes: classes)
        } else {
            splits = EmbeddedShapes.splits(seed: seed)
            if let c = classes, c < splits.classes {
                throw AlexNetError("--classes \(c) is fewer than the embedded dataset's \(splits.classes) classes")
            }
        }
        var s = TrainingSettings()
        s.model = ModelConfig(width: width, classes: classes ?? splits.classes, dropout: dropout)
        s.batch = batch
        s.learningRate = lr; s.momentum = momentum; s.weightDecay = weightDecay
        s.seed = seed; s.augment = !noAugment; s.initialisation = initialisation
        s.initFrom = initFrom; s.save = save
        s.layout = layout
        guard batch <= splits.train.count else {
            throw AlexNetError("--batch \(batch) is larger than the training set (\(splits.train.count) images in \(splits.train.name)); use --batch \(splits.train.count) or less")
        }
        s.steps = epochs.map { $0 * (splits.train.count / batch) } ?? steps

        print("alexnet-mpi train: one process, both towers"
              + (layout == .threadedTowers ? ", one thread each (\(threads) threads)" : ", \(threads) thread\(threads == 1 ? "" : "s")"))
        print("data: \(splits.description)")
        print(LayerTable.render(s.model, localTowers: 0..<ModelConfig.towers))
        print(String(format: "batch %d, %d steps, lr %g, momentum %g, weight decay %g, dropout %g, seed %d, augmentation %@",
                     batch, s.steps, lr, momentum, weightDecay, dropout, seed, noAugment ? "off" : "on"))
        let trainer = try Trainer(settings: s, data: splits)
        if let path = initFrom { print("weights from \(path)") }
        let r = try trainer.run()
        print(String(format: "done: %d steps in %.1f s, %.1f images/s; train loss %.4f; %@ top-1 %.2f%%, top-5 %.2f%%",
                     s.steps, r.seconds, r.imagesPerSecond, r.trainLoss,
                     splits.heldOutIsTrainingSet ? "training-set" : "held-out", 100 * r.top1, 100 * r.top5))
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time the training step of the paper-size network on synthetic input against OpenBLAS's sgemm rate.")

    @Option(help: "Width multiplier W (1 = the paper).")
    var width: Double = 1
    @Option(help: "Number of classes.")
    var classes: Int = 1000
    @Option(help: "Images per step.")
    var batch: Int = 128
    @Option(help: "Timed steps (after one warm-up step).")
    var steps: Int = 3
    @Option(name: .customLong("im2col-budget"), help: "Floats an im2col chunk may hold (tuning).")
    var im2colBudget: Int = Convolution.columnBudget
    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        guard width > 0 else { throw ValidationError("--width must be positive (got \(width))") }
        guard classes >= 2 else { throw ValidationError("--classes must be at least 2") }
        guard batch >= 1, steps >= 1 else { throw ValidationError("--batch and --steps must be at least 1") }
    }

    func run() throws {
        var s = BenchmarkSettings()
        (s.threads, s.layout) = threadOptions.apply()
        s.model = ModelConfig(width: width, classes: classes, dropout: 0.5)
        s.batch = batch; s.steps = steps
        Convolution.columnBudget = im2colBudget
        print("OpenBLAS: \(Blas.configuration)")
        let r = try Benchmark.run(s)
        print(Benchmark.report(r, settings: s))
    }
}

struct ExportEmbedded: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-embedded",
        abstract: "Write images of the embedded dataset as a NumPy dataset (images.npy uint8 (N, 256, 256, 3), labels.npy int64).")

    @Option(help: "Folder to write (created if missing).")
    var out: String
    @Option(help: "Number of images.")
    var count: Int = 100
    @Option(help: "Seed of the embedded dataset.")
    var seed: UInt64 = 1
    @Flag(name: .customLong("held-out"), help: "Export the held-out split instead of the training split.")
    var heldOut = false

    func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        try EmbeddedShapes.export(seed: seed, heldOut: heldOut, count: count, to: out)
        print("wrote \(count) images to \(out)/images.npy and labels.npy")
    }
}
