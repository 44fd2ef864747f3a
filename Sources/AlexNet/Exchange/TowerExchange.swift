// The points where the two towers trade feature maps or gradients, behind one small protocol.
// Layers never see a transport: the model calls these two operations, an implementation moves the bytes.
// `LocalTowerExchange` serves one thread that holds both towers, `ThreadTowerExchange` a tower a thread, and
// `MPITowerExchange` (module AlexNetMPI) a tower a rank.

public enum ExchangePoint: Int, CaseIterable, Sendable {
    case conv3Input, fc6Input, fc7Input, fc8Input, logits                 // forward: all-gather of tower halves
    case fc8InputGradient, fc7InputGradient, fc6InputGradient, conv3InputGradient   // backward: two-rank reduce-scatter
    case imageLabels          // conv-data/fc-model: every rank's labels, so each computes the loss of the whole batch

    public var name: String {
        switch self {
        case .conv3Input: "before conv3"
        case .fc6Input: "before fc6"
        case .fc7Input: "before fc7"
        case .fc8Input: "before fc8"
        case .logits: "logits"
        case .fc8InputGradient: "fc8 input grad"
        case .fc7InputGradient: "fc7 input grad"
        case .fc6InputGradient: "fc6 input grad"
        case .conv3InputGradient: "conv3 input grad"
        case .imageLabels: "labels"
        }
    }
}

public protocol TowerExchange: AnyObject {
    /// Towers this process computes (0..<2, or one of them); for a slice exchange, its slices (parts) of `partCount`.
    var localTowers: Range<Int> { get }

    /// Parts the exchanged buffers are cut into: the two towers, or (conv-data/fc-model) one slice a rank.
    var partCount: Int { get }

    /// Forward. `buffer` holds every tower's slice: tower t's floats are [offsets[t], offsets[t+1]).
    /// The local towers' slices are filled; on return every slice is.
    func allGather(_ buffer: UnsafeMutablePointer<Float>, offsets: [Int], at point: ExchangePoint) throws

    /// Backward. `partials[i]` is local tower i's full-size contribution (laid out as `offsets` says).
    /// On return `destination` holds, for each local tower t in order, Σ over all towers of their partial's slice t.
    func reduceScatter(partials: [UnsafeMutablePointer<Float>], offsets: [Int],
                       into destination: UnsafeMutablePointer<Float>, at point: ExchangePoint) throws

    /// Told before each training step's forward pass (an MPI exchange sends the step with every message, so that
    /// partners out of step are detected).
    func beginStep(_ step: Int)
}

public extension TowerExchange {
    func beginStep(_ step: Int) {}
    var partCount: Int { ModelConfig.towers }
}

/// Both towers in this process: the gather has nothing to move, the reduce-scatter is an add and a copy.
public final class LocalTowerExchange: TowerExchange {
    public let localTowers = 0..<ModelConfig.towers
    let threads: Int                    // threads the add may use
    public init(threads: Int = 1) { self.threads = threads }

    public func allGather(_ buffer: UnsafeMutablePointer<Float>, offsets: [Int], at point: ExchangePoint) throws {}

    public func reduceScatter(partials: [UnsafeMutablePointer<Float>], offsets: [Int],
                              into destination: UnsafeMutablePointer<Float>, at point: ExchangePoint) throws {
        precondition(partials.count == 2)
        let (a, b) = (partials[0], partials[1])
        // Tower t's slice = own partial + partner's partial, in that order (what the MPI version computes).
        for t in 0..<2 {
            let own = partials[t], other = t == 0 ? b : a
            let lo = offsets[t], n = offsets[t + 1] - lo
            let out = destination + lo - offsets[0]
            Parallel.forEachChunk(n, minimumPerThread: 1 << 16, threads: threads) { r in
                for i in r { out[i] = own[lo + i] + other[lo + i] }
            }
        }
    }
}
