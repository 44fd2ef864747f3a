// --trace under mpirun: each rank's PhaseClock offset to rank 0's (measured by ping-pong at start-up), and every
// rank's spans brought to rank 0 at the end, which writes the one file.
import AlexNet
import Foundation

public enum TraceGather {
    /// Nanoseconds to add to this rank's PhaseClock to read rank 0's, and the round trip of the measurement (0, 0 on
    /// rank 0). After a barrier, rank 0 plays `rounds` ping-pongs with each rank in turn; the rank keeps the round with
    /// the smallest round trip: offset = remote − (t0 + t1) / 2, where rank 0 read `remote` between the rank's t0 and t1.
    /// `skew`: nanoseconds added to this rank's clock (tests: a rank whose clock reads differently).
    public static func clockOffset(world: MPICommunicator, rounds: Int = 20, skew: Int64 = 0) throws -> (offset: Int64, roundTrip: Int64) {
        let now = { Int64(bitPattern: PhaseClock.now()) + skew }
        try world.barrier()
        let tag = MessageTag.clockAlignment
        if world.rank == 0 {
            for peer in 1..<max(1, world.size) {
                for _ in 0..<rounds {
                    _ = try world.exchange([0], peer: peer, tag: tag)                             // the ping arrived
                    _ = try world.exchange([now()], peer: peer, tag: tag)   // the pong
                }
            }
            return (0, 0)
        }
        var best = (offset: Int64(0), roundTrip: Int64.max)
        for _ in 0..<rounds {
            let t0 = now()
            _ = try world.exchange([0], peer: 0, tag: tag)
            let remote = try world.exchange([0], peer: 0, tag: tag)[0]
            let t1 = now()
            if t1 - t0 < best.roundTrip { best = (remote - (t0 + t1) / 2, t1 - t0) }
        }
        return best
    }

    /// Every rank's trace, in rank order, on rank 0 (nil elsewhere): each rank's JSON over one all-gather.
    public static func gather(_ mine: RankTrace, world: MPICommunicator) throws -> [RankTrace]? {
        let encoded = try JSONEncoder().encode(mine)
        let all = try world.allGather(bytes: [UInt8](encoded))
        guard world.rank == 0 else { return nil }
        return try all.enumerated().map { rank, bytes in
            do { return try JSONDecoder().decode(RankTrace.self, from: Data(bytes)) } catch {
                throw AlexNetError("--trace: the spans of rank \(rank) did not decode (\(error)); a mismatched build? rerun with one build on every rank")
            }
        }
    }
}
