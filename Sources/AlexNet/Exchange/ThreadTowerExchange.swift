// Two towers in two threads of one process, trading slices through shared memory at a barrier.
// The in-process twin of the MPI exchange: same protocol, same arithmetic (own slice + partner's slice).
import Foundation

/// A two-party barrier that can be broken: when one side fails, the other's wait throws instead of hanging.
final class PairBarrier: @unchecked Sendable {
    private let condition = NSCondition()
    private var arrived = 0, generation = 0
    private var brokenBy: String? = nil
    private var slots: [UnsafeMutableRawPointer?] = [nil, nil]    // each side's buffer, written and read under the lock

    /// Publishes side `tower`'s buffer, waits for the partner, and returns the partner's buffer.
    func meet(tower: Int, publishing buffer: UnsafeMutableRawPointer) throws -> UnsafeMutableRawPointer {
        condition.lock()
        defer { condition.unlock() }
        slots[tower] = buffer
        try waitLocked()
        // The partner cannot publish again before the next barrier, which needs this side: the slot is still its own.
        return slots[1 - tower]!
    }

    func wait() throws {
        condition.lock()
        defer { condition.unlock() }
        try waitLocked()
    }

    /// The barrier itself; the caller holds the lock.
    private func waitLocked() throws {
        if let why = brokenBy { throw AlexNetError("the partner tower stopped: \(why)") }
        let mine = generation
        arrived += 1
        if arrived == 2 {
            arrived = 0; generation += 1
            condition.broadcast()
            return
        }
        while generation == mine && brokenBy == nil { condition.wait() }
        if generation == mine, let why = brokenBy { throw AlexNetError("the partner tower stopped: \(why)") }
    }

    func breakBarrier(_ reason: String) {
        condition.lock()
        if brokenBy == nil { brokenBy = reason }
        condition.broadcast()
        condition.unlock()
    }

    func reset() {
        condition.lock(); brokenBy = nil; arrived = 0; condition.unlock()
    }
}

public final class ThreadTowerExchange: TowerExchange, Sendable {
    public let localTowers: Range<Int>
    let tower: Int
    let barrier: PairBarrier

    /// The two ends of one pair: element t serves tower t.
    public static func pair() -> [ThreadTowerExchange] {
        let b = PairBarrier()
        return [ThreadTowerExchange(tower: 0, barrier: b), ThreadTowerExchange(tower: 1, barrier: b)]
    }

    init(tower: Int, barrier: PairBarrier) {
        self.tower = tower; self.localTowers = tower..<(tower + 1); self.barrier = barrier
    }

    /// Lets the partner's next wait fail instead of waiting for this tower forever.
    public func abandon(_ reason: String) { barrier.breakBarrier("tower \(tower): \(reason)") }
    public func resetAfterFailure() { barrier.reset() }

    public func allGather(_ buffer: UnsafeMutablePointer<Float>, offsets: [Int], at point: ExchangePoint) throws {
        let partner = 1 - tower
        // Both slices are written when the meeting returns.
        let source = try barrier.meet(tower: tower, publishing: UnsafeMutableRawPointer(buffer)).assumingMemoryBound(to: Float.self)
        let lo = offsets[partner], n = offsets[partner + 1] - lo
        (buffer + lo).update(from: source + lo, count: n)
        try barrier.wait()       // both copies are done before either side writes again
    }

    public func reduceScatter(partials: [UnsafeMutablePointer<Float>], offsets: [Int],
                              into destination: UnsafeMutablePointer<Float>, at point: ExchangePoint) throws {
        precondition(partials.count == 1)
        let other = try barrier.meet(tower: tower, publishing: UnsafeMutableRawPointer(partials[0])).assumingMemoryBound(to: Float.self)
        let own = partials[0]
        let lo = offsets[tower], n = offsets[tower + 1] - lo
        for i in 0..<n { destination[i] = own[lo + i] + other[lo + i] }
        try barrier.wait()
    }
}
