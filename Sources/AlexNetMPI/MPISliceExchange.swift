// The fully connected stack's exchange under the conv-data/fc-model layout: every rank one slice of fc6–fc8's
// neurons and one block of the batch's images. Forward gathers (pool5 features and labels by image block, each
// slice's outputs by neuron) are MPI_Allgatherv in place; backward input gradients are MPI_Reduce_scatter, by neuron
// slice (fc8, fc7) or by image block (fc6, back to the rank that owns the images). Collectives keep their order on
// a communicator, so no header is traded; a rank that never arrives is caught by the stall watchdog.
import AlexNet
import Foundation

public final class MPISliceExchange: TowerExchange {
    public let communicator: MPICommunicator
    public var localTowers: Range<Int> { communicator.rank..<(communicator.rank + 1) }
    public var partCount: Int { communicator.size }

    /// Floats this rank sent (all-gather: its part to every other rank; reduce-scatter: every other rank's part to
    /// it), and seconds in the collectives, since the last reset.
    public private(set) var floatsSent = 0
    public private(set) var seconds = 0.0

    public init(communicator: MPICommunicator) { self.communicator = communicator }

    public func resetCounters() { floatsSent = 0; seconds = 0 }

    static func describe(_ point: ExchangePoint) -> String {
        point.name.hasPrefix("before") ? point.name : "at " + point.name
    }

    public func allGather(_ buffer: UnsafeMutablePointer<Float>, offsets: [Int], at point: ExchangePoint) throws {
        let r = communicator.rank, t0 = PhaseClock.now()
        try communicator.waiting(in: "the fc slice exchange \(Self.describe(point))") {
            try communicator.allGather(buffer, offsets: offsets)
        }
        seconds += Double(PhaseClock.now() - t0) * 1e-9
        floatsSent += (communicator.size - 1) * (offsets[r + 1] - offsets[r])
    }

    public func reduceScatter(partials: [UnsafeMutablePointer<Float>], offsets: [Int],
                              into destination: UnsafeMutablePointer<Float>, at point: ExchangePoint) throws {
        precondition(partials.count == 1)
        let r = communicator.rank, t0 = PhaseClock.now()
        try communicator.waiting(in: "the fc slice exchange \(Self.describe(point))") {
            try communicator.reduceScatter(partials[0], offsets: offsets, into: destination)
        }
        seconds += Double(PhaseClock.now() - t0) * 1e-9
        floatsSent += (offsets[communicator.size] - offsets[0]) - (offsets[r + 1] - offsets[r])
    }
}
