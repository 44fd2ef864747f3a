// The tower exchange between the two ranks of a model-parallel pair: point-to-point MPI_Sendrecv of own slices
// (forward all-gather) and of the partner's slices of the input-gradient partials (backward reduce-scatter).
// Tags say step and exchange point. Time waiting for the partner is measured apart from time moving data.
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
    func tag(_ point: ExchangePoint) -> Int { (step % 1_000_000) * 16 + point.rawValue }

    /// A zero-byte handshake: the time it takes is time spent waiting for the partner to arrive here.
    func synchronise(_ point: ExchangePoint) throws {
        let t0 = PhaseClock.now()
        var outgoing: Float = 0, incoming: Float = 0
        try communicator.exchange(send: &outgoing, sendCount: 0, receive: &incoming, receiveCount: 0, peer: partner, tag: tag(point) + 8)
        waitingSeconds += Double(PhaseClock.now() - t0) * 1e-9
    }

    func move(send: UnsafePointer<Float>, sendCount: Int, receive: UnsafeMutablePointer<Float>, receiveCount: Int,
              at point: ExchangePoint) throws {
        try synchronise(point)
        let t0 = PhaseClock.now()
        try communicator.exchange(send: send, sendCount: sendCount, receive: receive, receiveCount: receiveCount,
                                  peer: partner, tag: tag(point))
        transferSeconds += Double(PhaseClock.now() - t0) * 1e-9
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
