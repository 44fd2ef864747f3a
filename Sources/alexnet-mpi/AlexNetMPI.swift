// The command line: `alexnet-mpi train` (default), `bench` and `export-embedded`, in one process or under mpirun.
import AlexNet
import AlexNetMPI
import ArgumentParser
import Foundation

@main
struct AlexNetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alexnet-mpi",
        abstract: "Trains the two-tower AlexNet of Krizhevsky, Sutskever and Hinton (2012) on OpenBLAS, in one process or across MPI ranks.",
        discussion: "Under `mpirun -np 2` each rank holds one tower (model parallelism); `alexnet-mpi` alone trains both towers in one process.",
        subcommands: [Train.self, Bench.self, ExportEmbedded.self, SgemmRate.self],
        defaultSubcommand: Train.self)

    /// Errors of ours become one line on stderr (naming the rank under MPI) and stop every rank;
    /// argument errors keep ArgumentParser's usage text.
    static func main() {
        BlasKernels.ensureBest()   // before MPI starts: may re-execute this process with better OpenBLAS kernels
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            if Launch.world == nil || Launch.rank == 0 { exit(withError: error) }
            Launch.finish(code: 1)
        }
        do {
            try command.run()
            Launch.finish(code: 0)
        } catch let error as AgreedStop {
            // Every rank stops here by itself (they agreed in the last step's collective): no abort needed.
            if error.printHere { Launch.complain(error.message) }
            Launch.finish(code: 1)
        } catch let error as AlexNetError {
            Launch.fail(error.description)
        } catch let error as ValidationError {
            if Launch.rank == 0 { FileHandle.standardError.write("alexnet-mpi: error: \(error.message)\n".data(using: .utf8)!) }
            Launch.finish(code: 1)
        } catch let error as RefusedBeforeWork {
            if Launch.rank == 0 { FileHandle.standardError.write("alexnet-mpi: error: \(error.message)\n".data(using: .utf8)!) }
            Launch.finish(code: 1)
        } catch where String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
            // `--help` and `help` parse into ArgumentParser's help command, whose run() throws its help request.
            if Launch.rank == 0 { exit(withError: error) }
            Launch.finish(code: 0)
        } catch {
            Launch.fail("\(error)")
        }
    }
}

/// An error every rank detects the same way before any work: no abort needed, every rank exits.
struct RefusedBeforeWork: Error { let message: String }

/// The MPI world this process runs in, if it was started by mpirun.
enum Launch {
    static let world: MPICommunicator? = {
        guard MPICommunicator.launchedByMPI else { return nil }
        do { return try MPICommunicator.world() } catch {
            FileHandle.standardError.write("alexnet-mpi: error: cannot start MPI: \(error)\n".data(using: .utf8)!)
            exit(1)
        }
    }()
    static var rank: Int { world?.rank ?? 0 }
    static var size: Int { world?.size ?? 1 }

    /// One error line on stderr, naming this rank under MPI.
    static func complain(_ message: String) {
        let who = size > 1 ? "rank \(rank): " : ""
        FileHandle.standardError.write("alexnet-mpi: \(who)error: \(message)\n".data(using: .utf8)!)
    }

    /// Prints (every rank that fails prints, naming itself) and stops all ranks within seconds.
    static func fail(_ message: String) -> Never {
        complain(message)
        if size > 1 { MPICommunicator.abortAll(code: 1) }
        if world != nil { MPICommunicator.finalize() }
        exit(1)
    }

    static func finish(code: Int32) -> Never {
        fflush(nil)
        if world != nil { MPICommunicator.finalize() }
        exit(code)
    }

    /// Prints on rank 0 only.
    static func say(_ text: String) {
        if rank == 0 { print(text); fflush(nil) }
    }
}

enum ParallelMode: String, ExpressibleByArgument, CaseIterable {
    case single, model, data, hybrid
}

/// Threads for OpenBLAS and the Swift loops: the cores this process may run on, unless set.
struct ThreadOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Threads a process uses for OpenBLAS and its loops (default: the cores it may run on, from its CPU affinity: under mpirun's default binding of 2 ranks on 2 cores, 1).",
                               valueName: "n"))
    var threads: Int?

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1 (got \(t))") }
    }

    /// Sets BLAS threads and returns (threads, layout, threads a model's loops use). With two or more threads in a
    /// process that holds both towers, each tower runs on its own thread with half of them: no BLAS worker spins
    /// against the loops.
    func apply(holdsBothTowers: Bool) -> (threads: Int, layout: ReplicaLayout, perModel: Int) {
        let n = threads ?? Parallel.availableCores
        let layout: ReplicaLayout = holdsBothTowers && n >= 2 ? .threadedTowers : .sequential
        let perTower = layout == .threadedTowers ? max(1, n / 2) : n
        Blas.setThreads(perTower)
        return (n, layout, perTower)
    }
}

extension Initialisation: ExpressibleByArgument {}

/// Picks and checks the parallel mode against the world size, before any work.
func resolveMode(_ requested: ParallelMode?) throws -> ParallelMode {
    let size = Launch.size
    let mode = requested ?? (size == 2 ? .model : .single)
    switch mode {
    case .single where size != 1:
        throw RefusedBeforeWork(message: "--mode single runs in one process, but mpirun started \(size) ranks; use --mode model with -np 2, or run without mpirun")
    case .model where size != 2:
        throw RefusedBeforeWork(message: "--mode model needs exactly 2 ranks (one a tower): run `mpirun -np 2 alexnet-mpi …`; this job has \(size) rank\(size == 1 ? "" : "s")")
    case .hybrid where size % 2 != 0:
        throw RefusedBeforeWork(message: "--mode hybrid needs an even number of ranks (pairs of towers: -np 2, 4, 6, …); this job has \(size)")
    case .data where Launch.world == nil, .hybrid where Launch.world == nil:
        throw RefusedBeforeWork(message: "--mode \(mode.rawValue) runs under mpirun (e.g. `mpirun -np 2 alexnet-mpi train --mode \(mode.rawValue)`)")
    default:
        return mode
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train the network (default: the embedded shapes dataset).")

    @Option(help: "Parallel layout: single (one process, both towers), model (mpirun -np 2, one tower a rank), data (any number of ranks, each the whole model and a share of every batch), hybrid (2·R ranks: R data-parallel replicas of a model-parallel pair). Default: model under 2 ranks, else single.")
    var mode: ParallelMode?
    @Option(help: "Continue from a checkpoint written by --save (weights, momentum, step), up to --steps in all.")
    var resume: String?
    @Option(name: .customLong("resume-allow-changes"), help: ArgumentHelp("With --resume: settings that may differ from the checkpoint's, comma-separated: seed, data, dropout (otherwise a difference is refused).", valueName: "names"))
    var resumeAllowChanges: String?
    @Option(name: .customLong("check-weights-every"), help: "Data parallelism: compare the replicas' weight checksums every N steps (0: never).")
    var checkWeightsEvery: Int = 50
    @Option(help: "NumPy dataset directory (images.npy, labels.npy, optional heldout/); default: the embedded shapes.")
    var data: String?
    // The defaults are the default job, a first impression in about 80 s on 2 cores: W = 1/8, 350 steps of 64 at
    // ε = 0.015 reach 96% held-out top-1 on the embedded shapes (W = 1/4 needs 500 steps at ε = 0.01; ε = 0.02
    // stalls near 95%). The paper's run is --width 1 --batch 128 --lr 0.01.
    @Option(help: "Width multiplier W: channels C(W) = 2·round(C·W/2); 1 is the paper's network.")
    var width: Double = 0.125
    @Option(help: "Number of classes (default: 10 for the embedded set, the largest label + 1 for a NumPy set).")
    var classes: Int?
    @Option(help: "Images per step (the global batch).")
    var batch: Int = 64
    @Option(help: "Training steps (batches); ignored if --epochs is given.")
    var steps: Int = 350
    @Option(help: "Passes over the training set (overrides --steps).")
    var epochs: Int?
    @Option(help: "Learning rate ε (the paper's is 0.01, at batch 128).")
    var lr: Float = 0.015
    @Option(help: "Momentum μ.")
    var momentum: Float = 0.9
    @Option(name: .customLong("weight-decay"), help: "Weight decay λ (applied to weights and biases, as in the paper).")
    var weightDecay: Float = 5e-4
    @Option(help: "Dropout probability in fc6 and fc7 (0 turns it off).")
    var dropout: Float = 0.5
    @Option(help: "Seed for initialisation, shuffling, augmentation and dropout.")
    var seed: UInt64 = 1
    @Option(name: .customLong("init"), help: "Initialisation: 'paper' (N(0, 0.01²), biases 1 in conv2/4/5, fc6/7; raw pixel inputs) or 'he' (N(0, 2/fan-in), those biases 0.1; pixel inputs scaled to unit variance).")
    var initialisation: Initialisation = .he
    @Option(name: .customLong("init-from"), help: "Start from the weights in this safetensors file (a whole-model file, whatever layout wrote it).")
    var initFrom: String?
    @Option(help: "Write the trained weights (and momentum) to this safetensors file, in the layout of docs/model.md.")
    var save: String?
    @Option(name: .customLong("loss-log"), help: "Write each step's loss (step and value, one a line) to this file.")
    var lossLog: String?
    @Option(name: .customLong("save-every"), help: "Also write --save every N steps, so a crash loses at most N steps (0: only at the end).")
    var saveEvery: Int = 0
    @Flag(name: .customLong("ten-crop"), help: "Held-out accuracy from the paper's ten views (four corners and the centre, and their mirrors), softmax averaged.")
    var tenCrop = false
    @Flag(name: .customLong("no-augment"), help: "No random crop, flip or colour noise; batches in file order.")
    var noAugment = false
    @Flag(name: .customLong("no-prefetch"), help: "Assemble each batch when its step starts, instead of on a background thread while the step before trains (the same numbers either way; for comparisons).")
    var noPrefetch = false
    @OptionGroup var threadOptions: ThreadOptions
    @Option(name: .customLong("stall-timeout"), help: ArgumentHelp("Under mpirun: a rank that waits longer than this in one tower exchange, gradient allreduce, checkpoint gather or barrier stops every rank, naming what it waited in and for whom (0: wait for ever).", valueName: "seconds")) var stallTimeout: Double = 600
    @Option(name: .customLong("debug-fail-rank"), help: .hidden) var debugFailRank: Int?
    @Option(name: .customLong("debug-fail-step"), help: .hidden) var debugFailStep: Int = 0
    @Option(name: .customLong("debug-fail-kind"), help: .hidden) var debugFailKind: String = "error"
    @Option(name: .customLong("debug-perturb-rank"), help: .hidden) var debugPerturbRank: Int?
    @Option(name: .customLong("debug-perturb-step"), help: .hidden) var debugPerturbStep: Int = 0

    func validate() throws {
        try Limits.check(width: width, classes: classes, batch: batch)
        guard steps >= 1, steps <= Limits.steps else { throw ValidationError("--steps must be in 1…\(Limits.steps) (got \(steps))") }
        if let e = epochs, e < 1 || e > Limits.epochs { throw ValidationError("--epochs must be in 1…\(Limits.epochs) (got \(e))") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive (got \(lr))") }
        guard momentum >= 0, momentum < 1 else { throw ValidationError("--momentum must be in [0, 1) (got \(momentum))") }
        guard weightDecay >= 0 else { throw ValidationError("--weight-decay must not be negative (got \(weightDecay))") }
        guard dropout >= 0, dropout < 1 else { throw ValidationError("--dropout must be in [0, 1) (got \(dropout))") }
        guard checkWeightsEvery >= 0 else { throw ValidationError("--check-weights-every must not be negative") }
        guard saveEvery >= 0 else { throw ValidationError("--save-every must not be negative (got \(saveEvery))") }
        if saveEvery > 0 && save == nil { throw ValidationError("--save-every needs --save FILE") }
        if resume != nil && initFrom != nil { throw ValidationError("give --resume or --init-from, not both") }
        if resumeAllowChanges != nil && resume == nil { throw ValidationError("--resume-allow-changes goes with --resume") }
        let unknown = allowedChanges.subtracting(Self.changeableOnResume)
        guard unknown.isEmpty else {
            throw ValidationError("--resume-allow-changes: \(unknown.sorted().joined(separator: ", ")) cannot be allowed; choose from \(Self.changeableOnResume.sorted().joined(separator: ", "))")
        }
        guard stallTimeout >= 0, stallTimeout.isFinite else { throw ValidationError("--stall-timeout must be 0 (off) or a positive number of seconds (got \(stallTimeout))") }
    }

    static let changeableOnResume: Set<String> = ["seed", "data", "dropout"]
    var allowedChanges: Set<String> {
        Set((resumeAllowChanges ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
    }

    /// What every rank must agree on (compared at start-up under MPI): every option (but the per-rank --threads),
    /// the layout, the build, the dataset and every tensor's shape.
    func handshakeFields(_ s: TrainingSettings, _ splits: DataSplits, mode: ParallelMode) -> [(String, String)] {
        var f = Agreement.optionFields(of: self) + Agreement.buildAndWorld()
        f += [("layout", mode.rawValue), ("dataset", s.dataset), ("training images", "\(splits.train.count)"), ("steps", "\(s.steps)")]
        for (name, shape) in s.model.tensors { f.append((name, shape.map(String.init).joined(separator: "×"))) }
        return f
    }

    func run() throws {
        let mode = try resolveMode(mode)
        if let world = Launch.world { try StallWatchdog.start(seconds: stallTimeout, world: world) }   // --stall-timeout
        let (threads, layout, perModel) = threadOptions.apply(holdsBothTowers: mode == .single)   // data: one thread calls MPI
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
        s.initFrom = initFrom; s.save = save; s.lossLog = lossLog; s.resume = resume
        s.resumeAllowedChanges = allowedChanges
        s.dataset = DatasetFingerprint.of(splits, directory: data)
        s.rank = Launch.rank
        s.writesFiles = Launch.rank == 0
        s.saveEvery = saveEvery; s.tenCrop = tenCrop
        s.layout = layout
        s.dataThreads = threads
        s.prefetch = !noPrefetch
        s.threadsPerModel = perModel
        s.steps = epochs.map { $0 * (splits.train.count / batch) } ?? steps

        if mode != .single, let world = Launch.world {
            do { try SettingsHandshake.check(handshakeFields(s, splits, mode: mode), on: world) } catch let e as AlexNetError {
                throw RefusedBeforeWork(message: e.description)   // every rank sees the same difference: all exit
            }
        }
        try Limits.checkMemory(config: s.model, batch: mode == .data || mode == .hybrid ? s.localBatch : batch, layout: layout,
                               localTowers: mode == .model || mode == .hybrid ? (Launch.rank % 2)..<(Launch.rank % 2 + 1) : 0..<2,
                               inputs: s.prefetch ? 2 : 1, say: Launch.say)
        Launch.say("BLAS: " + BlasKernels.report)
        GracefulStop.install()
        var exchange: MPITowerExchange? = nil
        var synchroniser: ReplicaSynchroniser? = nil
        let trainer: Trainer
        switch mode {
        case .single:
            Launch.say("alexnet-mpi train: one process, both towers"
                       + (layout == .threadedTowers ? ", one thread each (\(threads) threads)" : ", \(threads) thread\(threads == 1 ? "" : "s")"))
            Launch.say("data: \(splits.description)")
            Launch.say(LayerTable.render(s.model, localTowers: 0..<ModelConfig.towers))
            trainer = try Trainer(settings: s, data: splits)
        case .model:
            let world = Launch.world!
            Launch.say("alexnet-mpi train: model parallel, 2 ranks, rank t holds tower t, \(threads) thread\(threads == 1 ? "" : "s") a rank")
            Launch.say("data: \(splits.description)")
            Launch.say(LayerTable.render(s.model, localTowers: 0..<2, ranks: true, batch: batch))
            let pair = MPITowerExchange(pair: world)
            exchange = pair
            let replica = Replica(config: s.model, maxBatch: batch, exchange: pair, threads: perModel)
            trainer = try Trainer(settings: s, data: splits, replica: replica)
            trainer.log = { if world.rank == 0 { print($0); fflush(nil) } }
            trainer.writeCheckpoint = { path, state in
                try ModelParallelCheckpoint.save(replica.stores[0], state: state, to: path, pair: world)
            }
        case .data, .hybrid:
            let world = Launch.world!
            let pairs = mode == .hybrid ? world.size / 2 : world.size
            let replicaIndex = mode == .hybrid ? world.rank / 2 : world.rank
            s.shard = (replicaIndex, pairs)
            s.layout = .sequential
            guard batch % pairs == 0 else {
                throw RefusedBeforeWork(message: "--batch \(batch) does not split evenly over \(pairs) replicas; use a multiple of \(pairs) (each replica takes --batch / \(pairs) images a step)")
            }
            let replica: Replica
            let group: MPICommunicator
            var pairCommunicator: MPICommunicator? = nil
            if mode == .hybrid {
                let hybrid = try HybridCommunicators(world: world)
                group = hybrid.towerGroup
                pairCommunicator = hybrid.pair
                let pairExchange = MPITowerExchange(pair: hybrid.pair)
                exchange = pairExchange
                replica = Replica(config: s.model, maxBatch: s.localBatch, exchange: pairExchange, threads: perModel)
                Launch.say("alexnet-mpi train: hybrid, \(world.size) ranks = \(pairs) data-parallel replicas of a model-parallel pair (rank 2r + t holds tower t of replica r), \(threads) thread\(threads == 1 ? "" : "s") a rank")
            } else {
                group = world
                replica = Replica(config: s.model, maxBatch: s.localBatch, layout: .sequential, threads: perModel)
                Launch.say("alexnet-mpi train: data parallel, \(world.size) ranks, each the whole model and \(s.localBatch) of every \(batch) images, \(threads) thread\(threads == 1 ? "" : "s") a rank")
            }
            Launch.say("data: \(splits.description)")
            Launch.say(LayerTable.render(s.model, localTowers: 0..<2, ranks: mode == .hybrid, batch: s.localBatch))
            trainer = try Trainer(settings: s, data: splits, replica: replica)
            let sync = ReplicaSynchroniser(group: group, model: replica.models[0], checkEvery: checkWeightsEvery)
            try sync.broadcastFromFirst()
            synchroniser = sync
            trainer.synchroniseGradients = {
                try replica.clock.time(.update, .exchange) { try sync.allreduce.finish() }
            }
            trainer.sumOverReplicas = { try group.sum($0) }
            let last = s.steps - 1, perturbRank = debugPerturbRank, perturbStep = debugPerturbStep
            trainer.afterUpdate = { step in
                if perturbRank == world.rank && perturbStep == step { replica.stores[0].values[0] += 1e-3 }
                try sync.afterUpdate(step: step, lastStep: last)
            }
            trainer.log = { if world.rank == 0 { print($0); fflush(nil) } }
            trainer.writeCheckpoint = { path, state in
                if let pair = pairCommunicator {
                    if replicaIndex == 0 { try ModelParallelCheckpoint.save(replica.stores[0], state: state, to: path, pair: pair) }
                } else if world.rank == 0 {
                    try replica.save(path, state: state)
                }
                try world.barrier()
            }
        }
        if let world = Launch.world { trainer.agreeOnStep = { try Agreement.afterStep($0, on: world) } }
        if let failRank = debugFailRank, failRank == Launch.rank {
            let kind = debugFailKind, at = debugFailStep
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
        Launch.say(String(format: "batch %d, %d steps, lr %g, momentum %g, weight decay %g, dropout %g, seed %d, init %@, augmentation %@",
                          batch, s.steps, lr, momentum, weightDecay, dropout, seed, initialisation.rawValue, noAugment ? "off" : "on"))
        if let path = initFrom { Launch.say("weights from \(path)") }
        var measured: (floats: Int, waiting: Double, transfer: Double)? = nil
        exchange?.resetCounters()
        synchroniser?.allreduce.resetCounters()
        var reduced: (floats: Int, exposed: Double)? = nil
        trainer.trainingFinished = {
            if let e = exchange { measured = (e.floatsSent, e.waitingSeconds, e.transferSeconds) }
            if let a = synchroniser?.allreduce { reduced = (a.floatsReduced, a.exposedSeconds) }
        }
        if let path = resume {
            Launch.say("resuming \(path) at step \(trainer.firstStep)"
                       + (trainer.resumeChanges.isEmpty ? "" : "; changed: " + trainer.resumeChanges.joined(separator: "; ")))
        }
        let r = try trainer.run()
        if let stopped = r.stoppedAtStep {
            Launch.say(String(format: "stopped at step %d of %d after %.1f s (asked to stop)%@", stopped, s.steps, r.seconds,
                              save.map { "; saved \($0): continue with --resume \($0)" } ?? "; nothing saved (no --save)"))
            return
        }
        if let a = reduced, let sync = synchroniser {
            let steps = max(1, s.steps - trainer.firstStep)
            let blocking = try sync.allreduce.measureBlockingSeconds()
            // The last replica to finish backward waits only for the allreduce itself; the others also wait for it.
            let exposed = try sync.group.minimum(a.exposed / Double(steps))
            let longest = try sync.group.maximum(a.exposed / Double(steps))
            Launch.say(String(format: "gradient allreduce: %@ B a step over %d replicas; exposed wait %.1f ms a step (the last replica to arrive; %.1f ms for the first, which also waits for the others) against %.1f ms for one blocking allreduce: %.0f%% hidden behind backward",
                              LayerTable.grouped(4 * a.floats / steps), sync.group.size, 1e3 * exposed, 1e3 * longest, 1e3 * blocking,
                              100 * max(0, 1 - exposed / max(blocking, 1e-9))))
        }
        if let m = measured, let world = Launch.world {
            let tower = world.rank % 2
            let predicted = 4 * s.model.exchangeFloatsPerStep(tower: tower, batch: s.localBatch)
            let perStep = 4 * m.floats / max(1, s.steps - trainer.firstStep)
            let compute = r.seconds - m.waiting - m.transfer
            let text = String(format: "rank %d: exchange %@ B/step measured, %@ B/step predicted from shapes (%@); time: compute %.1f%%, exchange %.1f%%, waiting for the partner %.1f%%",
                              world.rank, LayerTable.grouped(perStep), LayerTable.grouped(predicted), perStep == predicted ? "equal" : "DIFFERENT",
                              100 * compute / r.seconds, 100 * m.transfer / r.seconds, 100 * m.waiting / r.seconds)
            // Rank 0 prints both ranks' lines.
            let lines = try world.allGather(bytes: Array(text.utf8)).map { String(decoding: $0, as: UTF8.self) }
            for line in lines { Launch.say(line) }
        }
        Launch.say(String(format: "done: %d steps in %.1f s, %.1f images/s; train loss %.4f; %@ top-1 %.2f%%, top-5 %.2f%%",
                          s.steps - trainer.firstStep, r.seconds, r.imagesPerSecond, r.trainLoss,
                          (splits.heldOutIsTrainingSet ? "training-set" : "held-out") + (tenCrop ? " 10-crop" : ""), 100 * r.top1, 100 * r.top5)
                   + (r.resumeChanges.isEmpty ? "" : "; resumed with changes: " + r.resumeChanges.joined(separator: "; ")))
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time the training step of the paper-size network on synthetic input against OpenBLAS's sgemm rate.")

    @Option(help: "Parallel layout: single or model (under mpirun -np 2). Default: model under 2 ranks, else single.")
    var mode: ParallelMode?
    @Option(help: "Width multiplier W (1 = the paper).")
    var width: Double = 1
    @Option(help: "Number of classes.")
    var classes: Int = 1000
    @Option(help: "Images per step.")
    var batch: Int = 128
    @Option(help: "Timed steps (after one warm-up step).")
    var steps: Int = 3
    @Option(name: .customLong("im2col-budget"), help: "Floats an im2col chunk may hold (tuning).")
    var im2colBudget: Int = Convolution.defaultColumnBudget
    @OptionGroup var threadOptions: ThreadOptions
    @Option(name: .customLong("stall-timeout"), help: ArgumentHelp("Under mpirun: a rank that waits longer than this in one tower exchange, gradient allreduce, checkpoint gather or barrier stops every rank, naming what it waited in and for whom (0: wait for ever).", valueName: "seconds")) var stallTimeout: Double = 600

    func validate() throws {
        try Limits.check(width: width, classes: classes, batch: batch)
        guard steps >= 1, steps <= 1_000_000 else { throw ValidationError("--steps must be in 1…1000000 (got \(steps))") }
        guard im2colBudget >= 1 else { throw ValidationError("--im2col-budget must be at least 1 (got \(im2colBudget))") }
        guard stallTimeout >= 0, stallTimeout.isFinite else { throw ValidationError("--stall-timeout must be 0 (off) or a positive number of seconds (got \(stallTimeout))") }
    }

    func run() throws {
        let mode = try resolveMode(mode)
        if let world = Launch.world { try StallWatchdog.start(seconds: stallTimeout, world: world) }   // --stall-timeout
        var s = BenchmarkSettings()
        (s.threads, s.layout, s.threadsPerModel) = threadOptions.apply(holdsBothTowers: mode == .single)
        s.model = ModelConfig(width: width, classes: classes, dropout: 0.5)
        s.batch = batch; s.steps = steps
        s.columnBudget = im2colBudget
        if let world = Launch.world {
            do {
                try SettingsHandshake.check(Agreement.optionFields(of: self) + Agreement.buildAndWorld() + [("layout", mode.rawValue)], on: world)
            } catch let e as AlexNetError {
                throw RefusedBeforeWork(message: e.description)
            }
        }
        let perRank = mode == .data || mode == .hybrid ? batch / max(1, mode == .hybrid ? Launch.size / 2 : Launch.size) : batch
        try Limits.checkMemory(config: s.model, batch: max(1, perRank), layout: s.layout,
                               localTowers: mode == .model || mode == .hybrid ? (Launch.rank % 2)..<(Launch.rank % 2 + 1) : 0..<2,
                               say: Launch.say)
        Launch.say("BLAS: " + BlasKernels.report + " [\(Blas.configuration)]")
        switch mode {
        case .single:
            let r = try Benchmark.run(s, bestKernelGflops: { SgemmRate.withBestKernels(threads: s.threads) })
            Launch.say(Benchmark.report(r, settings: s))
        case .model:
            let world = Launch.world!
            s.ranks = 2
            let exchange = MPITowerExchange(pair: world)
            let replica = Replica(config: s.model, maxBatch: batch, exchange: exchange, threads: s.threadsPerModel,
                                  columnBudget: s.columnBudget)
            var figures: (Double, Double, Int) = (0, 0, 0)
            let r = try Benchmark.run(s, replica: replica, bestKernelGflops: { SgemmRate.withBestKernels(threads: s.threads) },
                                      afterWarmup: { exchange.resetCounters() }, afterTimed: {
                figures = (exchange.waitingSeconds, exchange.transferSeconds, exchange.floatsSent)
            })
            // The sgemm limit of a 2-rank job: both ranks' sgemm rate (each measured on its own core).
            let totalGflops = try world.sum(r.limitGflops)
            var whole = r
            whole.limitImagesPerSecond = totalGflops * 1e9 / s.model.trainingFlopsPerImage
            whole.limitGflops = totalGflops
            whole.sgemmGflops = try world.sum(r.sgemmGflops)
            let best = try world.sum(r.bestKernelGflops ?? 0)   // every rank calls it: a collective
            whole.bestKernelGflops = best > 0 ? best : nil
            var text = Benchmark.report(whole, settings: s, extra: [
                "exchange_fraction": (figures.0 + figures.1) / (r.meanStepSeconds * Double(s.steps)),
                "exchange_waiting_fraction": figures.0 / (r.meanStepSeconds * Double(s.steps)),
                "exchange_bytes_per_step": Double(4 * figures.2 / s.steps),
            ])
            text = String(format: "model parallel, %@; rank 0: exchange %.1f%% of step time (waiting %.1f%%, moving %.1f%%), %@ B sent a step\n",
                          s.workers, 100 * (figures.0 + figures.1) / (r.meanStepSeconds * Double(s.steps)),
                          100 * figures.0 / (r.meanStepSeconds * Double(s.steps)), 100 * figures.1 / (r.meanStepSeconds * Double(s.steps)),
                          LayerTable.grouped(4 * figures.2 / s.steps)) + text
            Launch.say(text)
        case .data, .hybrid:
            let world = Launch.world!
            let pairs = mode == .hybrid ? world.size / 2 : world.size
            guard batch % pairs == 0 else {
                throw RefusedBeforeWork(message: "--batch \(batch) does not split evenly over \(pairs) replicas")
            }
            s.ranks = world.size
            let replica: Replica, group: MPICommunicator
            var exchange: MPITowerExchange? = nil
            if mode == .hybrid {
                let hybrid = try HybridCommunicators(world: world)
                group = hybrid.towerGroup
                exchange = MPITowerExchange(pair: hybrid.pair)
                replica = Replica(config: s.model, maxBatch: batch / pairs, exchange: exchange!, threads: s.threadsPerModel,
                                  columnBudget: s.columnBudget)
            } else {
                group = world
                s.layout = .sequential
                replica = Replica(config: s.model, maxBatch: batch / pairs, layout: .sequential, threads: s.threadsPerModel,
                                  columnBudget: s.columnBudget)
            }
            let sync = ReplicaSynchroniser(group: group, model: replica.models[0], checkEvery: 0)
            var figures = (exposed: 0.0, floats: 0, exchange: 0.0)
            let r = try Benchmark.run(s, replica: replica, localBatch: batch / pairs,
                                      bestKernelGflops: { SgemmRate.withBestKernels(threads: s.threads) }, afterBackward: { try sync.allreduce.finish() },
                                      afterWarmup: { sync.allreduce.resetCounters(); exchange?.resetCounters() },
                                      afterTimed: {
                figures = (sync.allreduce.exposedSeconds, sync.allreduce.floatsReduced,
                           (exchange?.waitingSeconds ?? 0) + (exchange?.transferSeconds ?? 0))
            })
            let blocking = try sync.allreduce.measureBlockingSeconds()
            let totalGflops = try world.sum(r.limitGflops)
            var whole = r
            whole.limitImagesPerSecond = totalGflops * 1e9 / s.model.trainingFlopsPerImage
            whole.limitGflops = totalGflops
            whole.sgemmGflops = try world.sum(r.sgemmGflops)
            let best = try world.sum(r.bestKernelGflops ?? 0)   // every rank calls it: a collective
            whole.bestKernelGflops = best > 0 ? best : nil
            let steps = Double(s.steps)
            // The last replica to finish backward waits only for the allreduce itself; the others also wait for it.
            let exposed = try group.minimum(figures.exposed / steps)
            let longest = try group.maximum(figures.exposed / steps)
            let hidden = max(0, 1 - exposed / max(blocking, 1e-9))
            var extra: [String: Any] = [
                "allreduce_bytes_per_step": Double(4 * figures.floats) / steps, "allreduce_exposed_ms": 1e3 * exposed,
                "allreduce_blocking_ms": 1e3 * blocking, "allreduce_longest_wait_ms": 1e3 * longest, "allreduce_hidden_fraction": hidden, "mode": mode.rawValue,
            ]
            if exchange != nil { extra["exchange_fraction"] = figures.exchange / (r.meanStepSeconds * steps) }
            let head = String(format: "%@ parallel, %@, %d images a replica: gradient allreduce %.1f MB a step over %d replicas; exposed wait %.1f ms (last replica to arrive; first: %.1f ms) against %.1f ms for one blocking allreduce: %.0f%% hidden behind backward\n",
                              mode == .hybrid ? "hybrid" : "data", s.workers, batch / pairs, Double(4 * figures.floats) / steps / 1e6,
                              group.size, 1e3 * exposed, 1e3 * longest, 1e3 * blocking, 100 * hidden)
            Launch.say(head + Benchmark.report(whole, settings: s, extra: extra))
        }
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

/// `alexnet-mpi sgemm-rate` (hidden): OpenBLAS's sgemm rate with the kernels this process loaded, in GFLOP/s. `bench`
/// runs it in a child process with the best kernels the CPU supports when it runs lower ones itself.
struct SgemmRate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sgemm-rate", shouldDisplay: false)
    @Option var threads: Int = 1

    func run() throws {
        Blas.setThreads(max(1, threads))
        print(String(format: "%.3f", Benchmark.sgemmGflops()))
    }

    /// The rate with the best kernels this CPU supports, measured in a child process (OpenBLAS chooses its kernels
    /// once, when it loads); nil when this process already runs them.
    static func withBestKernels(threads: Int) -> Double? {
        let best = BlasKernels.bestCore(flags: BlasKernels.cpuFlags)
        guard let current = BlasKernels.level(ofCore: Blas.coreName), current < best.level else { return nil }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        child.arguments = ["sgemm-rate", "--threads", "\(threads)"]
        // Not an MPI process: without the launcher's variables it does not start MPI.
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") && !$0.key.hasPrefix("PMI_") }
        env["OPENBLAS_CORETYPE"] = best.core
        child.environment = env
        let pipe = Pipe()
        child.standardOutput = pipe
        do { try child.run() } catch { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        child.waitUntilExit()
        return Double(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
