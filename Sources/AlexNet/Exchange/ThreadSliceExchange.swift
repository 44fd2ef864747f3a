// The conv-data/fc-model layout's slice exchange between R threads of one process: the in-process twin of
// MPISliceExchange (same protocol, same sums in rank order), so the layout's arithmetic is tested without MPI.
import Foundation

/// An R-party barrier where each party publishes a buffer the others may read until the next barrier.
final class GroupBarrier: @unchecked Sendable {   // every field is guarded by `condition`
    private let condition = NSCondition()
    private let parties: Int
    private var arrived = 0, generation = 0
    private var slots: [UnsafeMutableRawPointer?]
    /// The slots as the last party of the latest meeting found them: a fast party may publish for the next meeting
    /// before a slow one has woken, but that meeting cannot complete (and replace this) without the slow one.
    private var published: [UnsafeMutableRawPointer?]

    init(parties: Int) {
        self.parties = parties
        slots = Array(repeating: nil, count: parties)
        published = slots
    }

    /// Publishes `buffer` as party `index`'s, waits for everyone, and returns every party's buffer.
    func meet(_ index: Int, publishing buffer: UnsafeMutableRawPointer?) -> [UnsafeMutableRawPointer?] {
        condition.lock()
        defer { condition.unlock() }
        slots[index] = buffer
        let mine = generation
        arrived += 1
        if arrived == parties {
            arrived = 0; generation += 1
            published = slots
            condition.broadcast()
        } else {
            while generation == mine { condition.wait() }
        }
        return published
    }
}

public final class ThreadSliceExchange: TowerExchange, @unchecked Sendable {   // immutable; the barrier is shared
    public let localTowers: Range<Int>
    public let partCount: Int
    let index: Int
    let barrier: GroupBarrier

    /// The R ends of one group: element r serves slice r (run each on its own thread).
    public static func group(_ parties: Int) -> [ThreadSliceExchange] {
        let b = GroupBarrier(parties: parties)
        return (0..<parties).map { ThreadSliceExchange(index: $0, parties: parties, barrier: b) }
    }

    init(index: Int, parties: Int, barrier: GroupBarrier) {
        self.index = index; self.partCount = parties; self.localTowers = index..<(index + 1); self.barrier = barrier
    }

    public func allGather(_ buffer: UnsafeMutablePointer<Float>, offsets: [Int], at point: ExchangePoint) throws {
        let all = barrier.meet(index, publishing: UnsafeMutableRawPointer(buffer))
        for k in 0..<partCount where k != index {
            let source = all[k]!.assumingMemoryBound(to: Float.self)
            (buffer + offsets[k]).update(from: source + offsets[k], count: offsets[k + 1] - offsets[k])
        }
        _ = barrier.meet(index, publishing: nil)   // every copy is done before anyone writes again
    }

    public func reduceScatter(partials: [UnsafeMutablePointer<Float>], offsets: [Int],
                              into destination: UnsafeMutablePointer<Float>, at point: ExchangePoint) throws {
        precondition(partials.count == 1)
        let all = barrier.meet(index, publishing: UnsafeMutableRawPointer(partials[0])).map { $0!.assumingMemoryBound(to: Float.self) }
        let lo = offsets[index], n = offsets[index + 1] - lo
        for i in 0..<n {
            var sum: Float = 0
            for k in 0..<partCount { sum += all[k][lo + i] }
            destination[i] = sum
        }
        _ = barrier.meet(index, publishing: nil)
    }
}
