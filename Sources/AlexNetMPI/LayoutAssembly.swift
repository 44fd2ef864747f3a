// Builds what a rank holds and how it synchronises, for every layout, from the mode, the world and the settings:
// communicators, tower and slice exchanges, the replica, the gradient synchroniser. It is the trainer's
// RankCoordination and writes the one communication report every layout gets (bytes predicted and measured, exposed
// wait, hidden fraction). `train` and `bench` both start here.
import AlexNet
import Foundation

/// An error every rank detects the same way before any work: no abort needed, every rank exits by itself.
public struct RefusedBeforeWork: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

public final class LayoutAssembly: RankCoordination {
    public let layout: ParallelLayout
    public let role: ParallelLayout.Role
    public let world: MPICommunicator?
    public let config: ModelConfig
    /// The global batch.
    public let batch: Int
    public let replica: Replica
    public let towerExchange: MPITowerExchange?
    public let sliceExchange: MPISliceExchange?
    /// Sums the replicated parameters' gradients over the replicas (nil when nothing is replicated, or when the
    /// replicas share their weights).
    public let synchroniser: ReplicaSynchroniser?
    /// Data parallelism on one node: one copy of the weights for every rank, updated in shares (nil: the allreduce).
    public let shared: SharedReplicaMemory?
    /// Why data parallelism sums with the allreduce under `--gradient-sum auto` (nil: it did not have to).
    public let sharedMemoryUnavailable: String?
    /// The ranks whose shares of a batch make it whole, for sums of losses and hits (nil: this rank's is whole).
    let shareGroup: MPICommunicator?
    /// Test hook: after this step, nudge this rank's first weight (the replicas' weight check must catch it).
    public var perturbAfterStep: Int? = nil

    public var rank: Int { world?.rank ?? 0 }
    /// Images this rank's replica computes of each batch.
    public var localBatch: Int { layout.share(of: batch, replica: role.replica).count }

    public init(layout: ParallelLayout, world: MPICommunicator?, config: ModelConfig, batch: Int, replicaLayout: ReplicaLayout,
                threadsPerModel: Int, columnBudget: Int = Convolution.defaultColumnBudget, winograd: WinogradUse = .whereItPays,
                checkWeightsEvery: Int = 0, gradientSum: GradientSum = .allreduce) throws {
        precondition((world?.size ?? 1) == layout.ranks)
        try layout.checkBatch(batch)
        self.layout = layout
        self.world = world
        self.config = config
        self.batch = batch
        role = layout.role(of: world?.rank ?? 0)
        let local = layout.localBatch(batch)
        var towerExchange: MPITowerExchange? = nil, sliceExchange: MPISliceExchange? = nil
        var gradientGroup: MPICommunicator? = nil, replicatedFloats: Int? = nil
        var shared: SharedReplicaMemory? = nil, unavailable: String? = nil
        switch layout.mode {
        case .single:
            replica = Replica(config: config, maxBatch: batch, layout: replicaLayout, threads: threadsPerModel, columnBudget: columnBudget, winograd: winograd)
            shareGroup = nil
        case .model:
            towerExchange = MPITowerExchange(pair: world!)
            replica = Replica(config: config, maxBatch: batch, exchange: towerExchange!, threads: threadsPerModel, columnBudget: columnBudget, winograd: winograd)
            shareGroup = nil   // both ranks compute the loss of the gathered logits
        case .data:
            if gradientSum != .allreduce, let world, world.size > 1 {
                let count = ParameterStore.floats(config: config, towers: 0..<ModelConfig.towers)
                (shared, unavailable) = try SharedReplicaMemory.make(world: world, count: count)
                if gradientSum == .sharedMemory, let why = unavailable {
                    throw RefusedBeforeWork(message: "--gradient-sum shared-memory: \(why); or sum with --gradient-sum allreduce")
                }
            }
            replica = Replica(config: config, maxBatch: local, layout: .sequential, threads: threadsPerModel, columnBudget: columnBudget,
                              winograd: winograd, parameterMemory: shared?.memory)
            precondition(shared == nil || replica.stores[0].count == shared!.count, "the shared window and the store disagree on the parameters")
            gradientGroup = shared == nil ? world : nil
            shareGroup = world
        case .hybrid:
            let hybrid = try HybridCommunicators(world: world!)
            towerExchange = MPITowerExchange(pair: hybrid.pair)
            replica = Replica(config: config, maxBatch: local, exchange: towerExchange!, threads: threadsPerModel, columnBudget: columnBudget, winograd: winograd)
            gradientGroup = hybrid.towerGroup   // the replicas' copies of this rank's tower
            shareGroup = hybrid.towerGroup
        case .owt:
            sliceExchange = MPISliceExchange(communicator: world!)
            replica = Replica(config: config, maxBatch: local, exchange: LocalTowerExchange(threads: threadsPerModel),
                              fullyConnectedExchange: sliceExchange, threads: threadsPerModel, columnBudget: columnBudget, winograd: winograd)
            gradientGroup = world
            shareGroup = world   // each rank's loss is its own images'
            replicatedFloats = replica.stores[0].convolutionCount
        }
        self.towerExchange = towerExchange
        self.sliceExchange = sliceExchange
        self.shared = shared
        sharedMemoryUnavailable = unavailable
        if let group = gradientGroup, group.size > 1 {
            synchroniser = ReplicaSynchroniser(group: group, model: replica.models[0], checkEvery: checkWeightsEvery, count: replicatedFloats)
            synchroniser?.allreduce.bucketFloats = layout.bucketFloats
        } else {
            synchroniser = nil
        }
    }

    /// --trace: the clocks record into `recorder` on their threads' rows ("tower t" or "model"), the allreduce's
    /// buckets on the "allreduce progress" row.
    public func attach(trace recorder: TraceRecorder) {
        replica.attach(trace: recorder, row: role.towers.count == 1 ? "tower \(role.towers.lowerBound)" : "model")
        synchroniser?.allreduce.attach(recorder: recorder, row: recorder.row(named: "allreduce progress"))
    }

    /// This rank in the trace viewer: "rank 1 (tower 1, replica 0)", "rank 0 (whole model)".
    public var traceProcessName: String {
        var parts: [String] = []
        if role.towers.count == 1 { parts.append("tower \(role.towers.lowerBound)") }
        if layout.replicas > 1 { parts.append("replica \(role.replica)") }
        if let slice = role.fullyConnectedSlice { parts.append("fc6–fc8 slice \(slice.index) of \(slice.count)") }
        return "rank \(rank) (" + (parts.isEmpty ? "whole model" : parts.joined(separator: ", ")) + ")"
    }

    /// This rank's share of every batch, for the trainer's settings.
    public var shard: (index: Int, count: Int) { (role.replica, layout.replicas) }

    /// Before the first step (after the weights are initialised or loaded), at step `firstStep`: replicas first agree
    /// on the step (a rank that resumed from another file would train on shards and a schedule of its own, and write
    /// its weights into shared ones), then take the first one's weights; shared weights: every rank wrote the same
    /// ones, and waits until all have.
    public func startTraining(firstStep: Int) throws {
        if let world, layout.replicas > 1 {
            let mine = withUnsafeBytes(of: Int64(firstStep).littleEndian) { Array($0) }
            let steps = try world.waiting(in: "the start-up comparison of the ranks' first steps") { try world.allGather(bytes: mine) }
                .map { bytes in Int(Int64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) })) }
            if Set(steps).count > 1 {
                let each = steps.enumerated().map { "rank \($0.offset) at step \($0.element)" }.joined(separator: ", ")
                throw RefusedBeforeWork(message: "the replicas would start at different steps (\(each)): each rank resumed from a different checkpoint (the same --resume path in different working directories, or files that differ between nodes); give every rank the same checkpoint")
            }
        }
        if let shared { try shared.startTraining() } else { try synchroniser?.broadcastFromFirst() }
    }

    // MARK: RankCoordination

    public func synchroniseGradients() throws {
        if let shared { try shared.gradientsComplete() } else { try synchroniser?.allreduce.finish() }
    }

    /// Shared weights: this rank's share from every rank's gradients, then the barrier before the next forward.
    public func update(_ replica: Replica, learningRate: Float, momentum: Float, weightDecay: Float) throws -> Double {
        guard let shared else { return try replica.update(learningRate: learningRate, momentum: momentum, weightDecay: weightDecay) }
        let sum = replica.clock.time(.update, .backward) {
            shared.updateShare(learningRate: learningRate, momentum: momentum, weightDecay: weightDecay)
        }
        try replica.clock.time(.update, .exchange) { try shared.sharesWritten() }
        return sum
    }

    public func sumOverShares(_ value: Double, of what: String) throws -> Double {
        guard let shareGroup else { return value }
        return try shareGroup.waiting(in: "the sum of \(what) over the replicas") { try shareGroup.sum(value) }
    }

    public func afterUpdate(step: Int, lastStep: Int) throws {
        if perturbAfterStep == step { replica.stores[0].values[0] += 1e-3 }
        try synchroniser?.afterUpdate(step: step, lastStep: lastStep)
    }

    /// The lowest rank that saw a non-finite value and the lowest rank asked to stop, over the world (two one-number
    /// allreduces: microseconds against a step of milliseconds to seconds).
    public func agree(_ report: StepReport) throws -> StepAgreement {
        guard let world else { return StepAgreement.local(report) }
        let size = Double(world.size), rank = Double(world.rank)
        let (bad, stop) = try world.waiting(in: "the end-of-step agreement (blow-up and stop checks)") {
            (try world.maximum(report.nonFinite == nil ? 0 : size - rank), try world.maximum(report.stopRequested ? size - rank : 0))
        }
        return StepAgreement(nonFiniteRank: bad > 0 ? Int(size - bad) : nil, stopRank: stop > 0 ? Int(size - stop) : nil)
    }

    public func saveCheckpoint(_ path: String, state: TrainingState) throws {
        guard let world else { return try replica.save(path, state: state) }
        try GatheredCheckpoint.save(replica.stores[0], state: state, to: path, world: world, layout: layout)
    }

    public var prints: Bool { rank == 0 }

    // MARK: Reports

    /// Start-up lines: the layout, what each rank holds, and what each exchange and allreduce will move.
    public func describe(threads: Int) -> [String] {
        let t = "\(threads) thread\(threads == 1 ? "" : "s")"
        let how = layout.ranks > 1 ? "\(layout.ranks) ranks, \(t) a rank"
            : replica.models.count == 2 ? "one thread each (\(t))" : t
        var lines = ["layout \(layout.mode.rawValue): \(layout.mode.summary), \(how)"]
        lines.append("each rank: " + layout.describeRoles(config: config))
        if layout.ranks > 1 {
            let p = layout.predictedTraffic(rank: 0, config: config, batch: batch)
            var moves: [String] = []
            if p.towerExchangeFloats > 0 { moves.append("tower exchange \(LayerTable.grouped(4 * p.towerExchangeFloats)) B sent") }
            if p.sliceExchangeFloats > 0 { moves.append("fc slice exchange \(LayerTable.grouped(4 * p.sliceExchangeFloats)) B sent") }
            if shared != nil {
                moves.append("gradients summed in shared memory on this node: nothing through MPI (an allreduce would move \(LayerTable.grouped(4 * p.allreduceFloats)) B); each rank updates 1/\(layout.replicas) of one copy of the weights")
            } else if p.allreduceFloats > 0 {
                moves.append("gradient allreduce of \(LayerTable.grouped(4 * p.allreduceFloats)) B over \(layout.replicas) replicas")
            }
            lines.append("predicted a step of \(batch) images (rank 0): " + (moves.isEmpty ? "nothing" : moves.joined(separator: "; ")))
            if let why = sharedMemoryUnavailable { lines.append("gradient sum: the allreduce, not shared memory: \(why)") }
        }
        return lines
    }

    public func resetCounters() {
        towerExchange?.resetCounters()
        sliceExchange?.resetCounters()
        synchroniser?.allreduce.resetCounters()
        shared?.resetCounters()
        frozen = nil
    }

    /// What the exchanges and the allreduce counted since the last reset.
    struct Counters {
        var towerFloats = 0, towerWaiting = 0.0, towerTransfer = 0.0
        var sliceFloats = 0, sliceSeconds = 0.0
        var reducedFloats = 0, exposedSeconds = 0.0
        var sharedWaiting = 0.0
    }
    var frozen: Counters? = nil

    var counters: Counters {
        var c = Counters()
        if let e = towerExchange { (c.towerFloats, c.towerWaiting, c.towerTransfer) = (e.floatsSent, e.waitingSeconds, e.transferSeconds) }
        if let e = sliceExchange { (c.sliceFloats, c.sliceSeconds) = (e.floatsSent, e.seconds) }
        if let a = synchroniser?.allreduce { (c.reducedFloats, c.exposedSeconds) = (a.floatsReduced, a.exposedSeconds) }
        if let shared { c.sharedWaiting = shared.waitingSeconds }
        return c
    }

    public var traffic: Traffic {
        let c = counters
        return Traffic(exchangeBytes: 4 * (c.towerFloats + c.sliceFloats), allreduceBytes: 4 * c.reducedFloats, waitingSeconds: c.towerWaiting)
    }

    /// The counters as training left them: the evaluation pass after it moves data too.
    public func trainingFinished() { frozen = counters }

    /// Every rank calls it (collectives): measured communication a step over the last `steps` steps (since
    /// `resetCounters`), against predicted, in `seconds` of training. Returns rank 0's lines and JSON fields.
    public func communicationReport(steps: Int, seconds: Double) throws -> (lines: [String], fields: [String: Any]) {
        guard let world, layout.ranks > 1 else { return ([], [:]) }
        let n = max(1, steps), predicted = layout.predictedTraffic(rank: rank, config: config, batch: batch)
        var lines: [String] = [], fields: [String: Any] = ["mode": layout.mode.rawValue]
        // One line a rank: exchanges measured against predicted, and their share of the time.
        var mine: [String] = []
        var sent = 0, exchangeSeconds = 0.0
        let c = frozen ?? counters
        if towerExchange != nil {
            let perStep = 4 * c.towerFloats / n, expected = 4 * predicted.towerExchangeFloats
            sent += perStep; exchangeSeconds += c.towerWaiting + c.towerTransfer
            mine.append(String(format: "tower exchange %@ B/step measured, %@ predicted (%@); waiting for the partner %.1f%%, moving %.1f%% of the time",
                               LayerTable.grouped(perStep), LayerTable.grouped(expected), perStep == expected ? "equal" : "DIFFERENT",
                               100 * c.towerWaiting / seconds, 100 * c.towerTransfer / seconds))
            fields["exchange_bytes_per_step"] = perStep
        }
        if sliceExchange != nil {
            let perStep = 4 * c.sliceFloats / n, expected = 4 * predicted.sliceExchangeFloats
            sent += perStep; exchangeSeconds += c.sliceSeconds
            mine.append(String(format: "fc slice exchange %@ B/step measured, %@ predicted (%@); %.1f%% of the time (waiting for the others included)",
                               LayerTable.grouped(perStep), LayerTable.grouped(expected), perStep == expected ? "equal" : "DIFFERENT",
                               100 * c.sliceSeconds / seconds))
            fields["exchange_bytes_per_step"] = perStep
        }
        if !mine.isEmpty {
            let text = "rank \(rank): " + mine.joined(separator: "; ")
            lines += try world.allGather(bytes: Array(text.utf8)).map { String(decoding: $0, as: UTF8.self) }
            fields["exchange_fraction"] = exchangeSeconds / seconds
            let predictedSent = 4 * (predicted.towerExchangeFloats + predicted.sliceExchangeFloats)
            fields["exchange_predicted_bytes_per_step"] = predictedSent
            fields["exchange_bytes_equal_predicted"] = try world.minimum(sent == predictedSent ? 1 : 0) == 1
        }
        if let shared {
            // The last rank to finish waits only for the barrier itself; the others also wait for it.
            let least = try shared.group.minimum(c.sharedWaiting / Double(n)), most = try shared.group.maximum(c.sharedWaiting / Double(n))
            lines.append(String(format: "gradient sum: in shared memory over %d replicas on one node: 0 B through MPI (an allreduce would move %@ B); each rank updates 1/%d of one copy of the weights from every rank's gradients; waiting at the two barriers %.1f ms a step (the last rank to arrive; %.1f ms for the first)",
                                shared.group.size, LayerTable.grouped(4 * predicted.allreduceFloats), shared.group.size, 1e3 * least, 1e3 * most))
            fields["gradient_sum"] = GradientSum.sharedMemory.rawValue
            fields["allreduce_bytes_per_step"] = 0.0
            fields["allreduce_predicted_bytes_per_step"] = 0.0
            fields["shared_barrier_wait_ms"] = 1e3 * least
            fields["shared_longest_wait_ms"] = 1e3 * most
        }
        if let sync = synchroniser {
            fields["gradient_sum"] = GradientSum.allreduce.rawValue
            let blocking = try sync.allreduce.measureBlockingSeconds()
            let bytes = 4 * c.reducedFloats / n, predictedBytes = 4 * predicted.allreduceFloats
            fields["allreduce_bytes_per_step"] = Double(bytes)
            fields["allreduce_predicted_bytes_per_step"] = Double(predictedBytes)
            fields["allreduce_blocking_ms"] = 1e3 * blocking
            if sync.allreduce.skipped {
                lines.append(String(format: "gradient allreduce: skipped (--skip-gradient-sum): %@ B a step summed of %@ B over %d replicas (the step without the sum; one blocking allreduce takes %.1f ms)",
                                    LayerTable.grouped(bytes), LayerTable.grouped(predictedBytes), sync.group.size, 1e3 * blocking))
                fields["allreduce_skipped"] = true
            } else {
                // The last replica to finish backward waits only for the allreduce itself; the others also wait for it.
                let exposed = try sync.group.minimum(c.exposedSeconds / Double(n))
                let longest = try sync.group.maximum(c.exposedSeconds / Double(n))
                let hidden = max(0, 1 - exposed / max(blocking, 1e-9))
                lines.append(String(format: "gradient allreduce: %@ B a step (predicted %@) over %d replicas; exposed wait %.1f ms a step (the last replica to arrive; %.1f ms for the first, which also waits for the others) against %.1f ms for one blocking allreduce: %.0f%% hidden behind backward",
                                    LayerTable.grouped(bytes), LayerTable.grouped(predictedBytes), sync.group.size,
                                    1e3 * exposed, 1e3 * longest, 1e3 * blocking, 100 * hidden))
                fields["allreduce_exposed_ms"] = 1e3 * exposed
                fields["allreduce_longest_wait_ms"] = 1e3 * longest
                fields["allreduce_hidden_fraction"] = hidden
            }
        }
        return (lines, fields)
    }
}
