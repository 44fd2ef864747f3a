// The tower exchange between the two ranks of a model-parallel pair: point-to-point MPI_Sendrecv of own slices
// (forward all-gather) and of the partner's slices of the input-gradient partials (backward reduce-scatter).
// Before each, the ranks trade a (step, point) header: a partner at another step or point is reported at once,
// not traded wrong data with or waited for until the stall watchdog fires. Each point has its own small fixed tag
// (MessageTag). Time waiting for the partner (the header) is measured apart from time moving data.
import AlexNet
import Foundation

public final class MPITowerExchange: TowerExchange {
    public let communicator: MPICommunicator   // the pair: rank r holds tower r
    public var localTowers: Range<Int> { communicator.rank..<(communicator.rank + 1) }
    var step = 0
    var scratch: UnsafeMutablePointer<Float>
    var scratchCount: Int

    /// Floats sent, and seconds spent waiting for the partner / moving data, since the last reset.
    public private(set) var floatsSent = 0
    public private(set) var waitingSeconds = 0.0
    public private(set) var transferSeconds = 0.0
    public private(set) var floatsSentByPoint = [Int](repeating: 0, count: ExchangePoint.allCases.count)

    public init(pair: MPICommunicator) {
        precondition(pair.size == 2, "a tower exchange needs a communicator of two ranks")
        communicator = pair
        scratchCount = 1
        scratch = .allocate(capacity: 1)
    }

    deinit { scratch.deallocate() }

    public func beginStep(_ step: Int) { self.step = step }

    public func resetCounters() {
        floatsSent = 0; waitingSeconds = 0; transferSeconds = 0
        floatsSentByPoint = [Int](repeating: 0, count: ExchangePoint.allCases.count)
    }

    var partner: Int { 1 - communicator.rank }

    /// Trades (step, point) with the partner; the time it takes is time spent waiting for the partner to arrive
    /// here. Throws, naming both ranks' steps and points, if the partner is elsewhere.
    func synchronise(_ point: ExchangePoint) throws {
        let t0 = PhaseClock.now()
        let theirs = try communicator.exchange([Int64(step), Int64(point.rawValue)], peer: partner, tag: MessageTag.towerExchangeHeader)
        waitingSeconds += Double(PhaseClock.now() - t0) * 1e-9
        guard theirs[0] != Int64(step) || theirs[1] != Int64(point.rawValue) else { return }
        let otherPoint = ExchangePoint(rawValue: Int(theirs[1])).map(Self.describe) ?? "unknown exchange point #\(theirs[1])"
        let me = communicator.worldRanks[communicator.rank], other = communicator.worldRanks[partner]
        throw AlexNetError("the two towers are out of step: rank \(me) is at step \(step) in the tower exchange \(Self.describe(point)), but its partner rank \(other) is at step \(theirs[0]) in the tower exchange \(otherPoint); stopping (did the ranks resume from different checkpoint files?)")
    }

    /// "before conv3", "at logits", "at fc8 input grad".
    static func describe(_ point: ExchangePoint) -> String {
        point.name.hasPrefix("before") ? point.name : "at " + point.name
    }

    func move(send: UnsafePointer<Float>, sendCount: Int, receive: UnsafeMutablePointer<Float>, receiveCount: Int,
              at point: ExchangePoint) throws {
        try communicator.waiting(in: "the tower exchange \(Self.describe(point))", for: partner) {
            try synchronise(point)
            let t0 = PhaseClock.now()
            try communicator.exchange(send: send, sendCount: sendCount, receive: receive, receiveCount: receiveCount,
                                      peer: partner, tag: MessageTag.towerExchange(point))
            transferSeconds += Double(PhaseClock.now() - t0) * 1e-9
        }
        floatsSent += sendCount
        floatsSentByPoint[point.rawValue] += sendCount
    }

    public func allGather(_ buffer: UnsafeMutablePointer<Float>, offsets: [Int], at point: ExchangePoint) throws {
        let own = communicator.rank, other = partner
        try move(send: buffer + offsets[own], sendCount: offsets[own + 1] - offsets[own],
                 receive: buffer + offsets[other], receiveCount: offsets[other + 1] - offsets[other], at: point)
    }

    public func reduceScatter(partials: [UnsafeMutablePointer<Float>], offsets: [Int],
                              into destination: UnsafeMutablePointer<Float>, at point: ExchangePoint) throws {
        precondition(partials.count == 1)
        let own = communicator.rank, other = partner
        let mine = partials[0], n = offsets[own + 1] - offsets[own]
        if scratchCount < n {
            scratch.deallocate()
            scratch = .allocate(capacity: n); scratchCount = n
        }
        try move(send: mine + offsets[other], sendCount: offsets[other + 1] - offsets[other],
                 receive: scratch, receiveCount: n, at: point)
        let lo = offsets[own], received = scratch
        // Own partial + partner's partial, in that order: what the in-process exchanges compute.
        for i in 0..<n { destination[i] = mine[lo + i] + received[i] }
    }
}
