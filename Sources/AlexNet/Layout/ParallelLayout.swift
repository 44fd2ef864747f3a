// How the ranks of a job share the network. Every layout is a point of one description: how the convolution stack is
// split (each replica on one rank with both towers, or on a pair of ranks with a tower each; replicas take equal shares
// of every batch) and how the fully connected stack is split (like the convolutions, or by neuron slice over all
// ranks, which then compute it for the whole batch). The five modes are presets of it.

/// The named layouts.
public enum ParallelMode: String, CaseIterable, Sendable {
    /// One process, both towers (on two threads when it has two cores).
    case single
    /// Two ranks, one tower each: the paper's split (Krizhevsky et al. 2012, section 3.2).
    case model
    /// Any number of ranks, each the whole model and an equal share of every batch; gradients summed.
    case data
    /// 2·R ranks: R data-parallel replicas of a model-parallel pair.
    case hybrid
    /// Convolutions data parallel, fully connected layers model parallel (split by neuron over every rank): the
    /// layout of Krizhevsky's "One weird trick for parallelizing convolutional neural networks" (arXiv 1404.5997).
    case owt

    public var summary: String {
        switch self {
        case .single: "one process, both towers"
        case .model: "model parallel: one tower a rank"
        case .data: "data parallel: each rank the whole model and its share of every batch"
        case .hybrid: "hybrid: data-parallel replicas of a model-parallel pair"
        case .owt: "conv-data/fc-model (one weird trick): convolutions data parallel, fc6–fc8 split by neuron over the ranks"
        }
    }
}

public struct ParallelLayout: Sendable, Equatable {
    /// How the fully connected stack is split.
    public enum FullyConnectedSplit: String, Sendable {
        /// Like the convolutions: by tower within a replica, replicated across replicas.
        case withConvolutions
        /// Every rank one contiguous slice of each fc layer's neurons, for the images of all ranks.
        case byNeuronSlice
    }

    public let mode: ParallelMode
    /// Ranks in the job.
    public let ranks: Int
    /// Ranks a replica of the convolutions spans: 1 (both towers on one rank) or 2 (a tower a rank).
    public let ranksPerReplica: Int
    /// Copies of the convolutions, each on batch / replicas images.
    public var replicas: Int { ranks / ranksPerReplica }
    public let fullyConnected: FullyConnectedSplit

    /// The preset `mode` on `ranks` ranks (`underMPI`: whether mpirun started the job); refuses with what to do
    /// when the mode and the number of ranks do not go together.
    public init(mode: ParallelMode, ranks: Int, underMPI: Bool) throws {
        self.mode = mode
        self.ranks = ranks
        switch mode {
        case .single where ranks != 1:
            throw AlexNetError("--mode single runs in one process, but mpirun started \(ranks) ranks; use --mode model with -np 2, or run without mpirun")
        case .model where ranks != 2:
            throw AlexNetError("--mode model needs exactly 2 ranks (one a tower): run `mpirun -np 2 alexnet-mpi …`; this job has \(ranks) rank\(ranks == 1 ? "" : "s")")
        case .hybrid where ranks % 2 != 0:
            throw AlexNetError("--mode hybrid needs an even number of ranks (pairs of towers: -np 2, 4, 6, …); this job has \(ranks)")
        case .owt where ranks < 2:
            throw AlexNetError("--mode owt splits fc6–fc8 over the ranks and needs at least 2 (e.g. `mpirun -np 2 alexnet-mpi train --mode owt`); this job has \(ranks)")
        case .data where !underMPI, .hybrid where !underMPI, .owt where !underMPI:
            throw AlexNetError("--mode \(mode.rawValue) runs under mpirun (e.g. `mpirun -np 2 alexnet-mpi train --mode \(mode.rawValue)`)")
        default: break
        }
        ranksPerReplica = mode == .model || mode == .hybrid ? 2 : 1
        fullyConnected = mode == .owt ? .byNeuronSlice : .withConvolutions
    }

    /// The default: model parallelism under two ranks, else one process.
    public static func defaultMode(ranks: Int) -> ParallelMode { ranks == 2 ? .model : .single }

    /// What rank `r` holds.
    public struct Role: Sendable, Equatable {
        public let rank: Int
        /// The replica whose share of every batch its convolutions compute.
        public let replica: Int
        /// The towers whose convolutions (and, unless sliced, fully connected rows) it holds.
        public let towers: Range<Int>
        /// Its slice of fc6–fc8's neurons under the conv-data/fc-model layout.
        public let fullyConnectedSlice: NeuronSlice?
    }

    public func role(of rank: Int) -> Role {
        precondition(rank >= 0 && rank < ranks)
        let towers = ranksPerReplica == 2 ? (rank % 2)..<(rank % 2 + 1) : 0..<ModelConfig.towers
        return Role(rank: rank, replica: rank / ranksPerReplica, towers: towers,
                    fullyConnectedSlice: fullyConnected == .byNeuronSlice ? NeuronSlice(index: rank, count: ranks) : nil)
    }

    /// The ranks whose parameter stores together hold every row of the model: replica 0's, and every rank's
    /// slice when fc6–fc8 are split by neuron. They send their stores to rank 0 for a whole-model checkpoint.
    public var checkpointContributors: [Int] {
        fullyConnected == .byNeuronSlice ? Array(0..<ranks) : Array(0..<ranksPerReplica)
    }

    /// Floats a gradient bucket gathers before its allreduce starts, and the most it holds (a larger layer goes as
    /// several): PyTorch DDP's 25 MB, or under owt 1 MB, so that the convolutions' 9 MB (at W = 1) go layer by layer
    /// while the earlier layers' backward still runs, instead of in one bucket after it.
    public var bucketFloats: Int { fullyConnected == .byNeuronSlice ? 1 << 18 : 25 << 18 }

    /// Images of a global batch replica k computes: [⌊k·B/R⌋, ⌊(k+1)·B/R⌋) (what the trainer's shard takes).
    public func share(of batch: Int, replica k: Int) -> Range<Int> {
        ModelConfig.sliceStart(k, of: batch, slices: replicas)..<ModelConfig.sliceStart(k + 1, of: batch, slices: replicas)
    }

    /// The most images a replica computes of a global batch (all alike unless the split is uneven).
    public func localBatch(_ batch: Int) -> Int { (batch + replicas - 1) / replicas }

    /// Whether a batch may split unevenly (the conv-data/fc-model layout gathers blocks of any size; data parallelism
    /// and the hybrid keep equal shares).
    public var allowsUnevenShares: Bool { fullyConnected == .byNeuronSlice }

    public func checkBatch(_ batch: Int) throws {
        if allowsUnevenShares {
            guard batch >= ranks else {
                throw AlexNetError("--batch \(batch) gives some of the \(ranks) ranks no image; use --batch \(ranks) or more")
            }
            return
        }
        guard batch % replicas == 0 else {
            throw AlexNetError("--batch \(batch) does not split evenly over \(replicas) replicas; use a multiple of \(replicas) (each replica takes --batch / \(replicas) images a step)")
        }
    }

    /// Floats one rank's parameter store holds.
    public static func parameterCount(_ config: ModelConfig, towers: Range<Int>, slice: NeuronSlice?) -> Int {
        config.tensors.reduce(0) { sum, t in
            sum + ParameterStore.rows(of: t.name, shape: t.shape, towers: towers, fullyConnectedSlice: slice).count * t.shape.dropFirst().reduce(1, *)
        }
    }

    /// What one rank moves in a training step of `batch` images, predicted from the shapes: floats it sends in tower
    /// exchanges and in the fc stack's slice exchanges (all-gather: its own part to each other rank; reduce-scatter:
    /// each other rank's part to it), and floats of gradients its allreduce sums.
    public struct Traffic: Sendable, Equatable {
        public var towerExchangeFloats = 0
        public var sliceExchangeFloats = 0
        public var allreduceFloats = 0
        public var bytesSent: Int { 4 * (towerExchangeFloats + sliceExchangeFloats) }
    }

    public func predictedTraffic(rank: Int, config: ModelConfig, batch: Int) -> Traffic {
        let role = role(of: rank), b = share(of: batch, replica: role.replica).count
        var t = Traffic()
        if ranksPerReplica == 2 { t.towerExchangeFloats = config.exchangeFloatsPerStep(tower: role.towers.lowerBound, batch: b) }
        if let slice = role.fullyConnectedSlice {
            let others = ranks - 1, B = batch
            let own6 = slice.rows(of: config.fc6).count, own7 = slice.rows(of: config.fc7).count, own8 = slice.rows(of: config.classes).count
            // Forward: pool5 features and labels of its images, its neurons' outputs of fc6, fc7, fc8 (logits).
            t.sliceExchangeFloats += others * (config.fc6Inputs * b + b + (own6 + own7 + own8) * B)
            // Backward: the other slices' parts of fc8's and fc7's input gradients, the other images' fc6 input gradient.
            t.sliceExchangeFloats += (config.fc7 - own7) * B + (config.fc6 - own6) * B + config.fc6Inputs * (B - b)
        }
        if replicas > 1 {
            let count = Self.parameterCount(config, towers: role.towers, slice: role.fullyConnectedSlice)
            let fcCount = config.tensors.filter { ModelConfig.isFullyConnected($0.name) }.reduce(0) { sum, tensor in
                sum + ParameterStore.rows(of: tensor.name, shape: tensor.shape, towers: role.towers, fullyConnectedSlice: role.fullyConnectedSlice).count
                    * tensor.shape.dropFirst().reduce(1, *)
            }
            t.allreduceFloats = fullyConnected == .byNeuronSlice ? count - fcCount : count
        }
        return t
    }

    /// One line: what each rank holds.
    public func describeRoles(config: ModelConfig) -> String {
        switch mode {
        case .single: return "one process holds both towers"
        case .model: return "rank t holds tower t (half of every layer's channels and neurons)"
        case .data: return "every rank holds the whole model and computes \(ranks == 1 ? "the" : "1/\(ranks) of each") batch"
        case .hybrid: return "rank 2r + t holds tower t of replica r; replica r computes 1/\(replicas) of each batch"
        case .owt:
            let slices = (0..<ranks).map { r in "\(NeuronSlice(index: r, count: ranks).rows(of: config.fc6).count)" }.joined(separator: "/")
            return "every rank holds conv1–conv5 of both towers for 1/\(ranks) of each batch, and a slice of fc6–fc8's neurons (fc6: \(slices)) for the whole batch"
        }
    }
}
