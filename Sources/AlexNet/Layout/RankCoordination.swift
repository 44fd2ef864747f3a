// What a rank's layout does around each training step, besides the exchanges inside the model: the gradient sum over
// replicas, sums of numbers over the ranks' shares of a batch, the replicas' weight check, the end-of-step agreement
// and whole-model checkpoints. One protocol, so the trainer never knows which layout it runs in: `OneProcess` here,
// the MPI layouts in module AlexNetMPI (LayoutAssembly).

public protocol RankCoordination: AnyObject {
    /// After backward, before the update: sums the replicated parameters' gradients over the replicas.
    func synchroniseGradients() throws
    /// The paper's update after the gradient sum; returns the sum of the weights this rank updated (finite exactly when
    /// they are: the non-finite guard). By default the replica updates every parameter it holds.
    func update(_ replica: Replica, learningRate: Float, momentum: Float, weightDecay: Float) throws -> Double
    /// Sum of a number over the ranks' shares of a batch (losses, evaluation hits); each share counted once. `what`
    /// names the number ("the batch's loss") in a stall report.
    func sumOverShares(_ value: Double, of what: String) throws -> Double
    /// After each update (e.g. a periodic comparison of the replicas' weights).
    func afterUpdate(step: Int, lastStep: Int) throws
    /// After each step: what every rank saw (non-finite values, stop requests), agreed over the job.
    func agree(_ report: StepReport) throws -> StepAgreement
    /// Writes the whole model to `path`, whichever ranks hold its parts (every rank calls it).
    func saveCheckpoint(_ path: String, state: TrainingState) throws
    /// Once after the last training step, before saving and evaluation (e.g. to read communication counters).
    func trainingFinished()
    /// Whether this rank prints progress (rank 0 does).
    var prints: Bool { get }
    /// So far on this rank: bytes sent in tower or fc-slice exchanges, bytes contributed to gradient allreduces, and
    /// seconds spent waiting for a partner inside the tower exchanges (metrics take the difference over a step).
    var traffic: Traffic { get }
}

public extension RankCoordination {
    func update(_ replica: Replica, learningRate: Float, momentum: Float, weightDecay: Float) throws -> Double {
        try replica.update(learningRate: learningRate, momentum: momentum, weightDecay: weightDecay)
    }
    func trainingFinished() {}
    var traffic: Traffic { Traffic() }
}

public struct Traffic: Sendable {
    public var exchangeBytes = 0, allreduceBytes = 0
    public var waitingSeconds = 0.0
    public init(exchangeBytes: Int = 0, allreduceBytes: Int = 0, waitingSeconds: Double = 0) {
        self.exchangeBytes = exchangeBytes; self.allreduceBytes = allreduceBytes; self.waitingSeconds = waitingSeconds
    }
}

/// One process holding the whole model: nothing to synchronise.
public final class OneProcess: RankCoordination {
    let replica: Replica
    public init(replica: Replica) { self.replica = replica }
    public func synchroniseGradients() throws {}
    public func sumOverShares(_ value: Double, of what: String) throws -> Double { value }
    public func afterUpdate(step: Int, lastStep: Int) throws {}
    public func agree(_ report: StepReport) throws -> StepAgreement { StepAgreement.local(report) }
    public func saveCheckpoint(_ path: String, state: TrainingState) throws { try replica.save(path, state: state) }
    public var prints: Bool { true }
}
