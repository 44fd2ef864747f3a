// Every point-to-point message tag alexnet-mpi uses, in one place: small fixed numbers, far below the 32,767 the
// MPI standard guarantees (MPI_TAG_UB may be no larger on some networks), checked against MPI_TAG_UB at start-up.
// Tags need not carry the step: MPI keeps the messages between two ranks on one communicator and tag in order.
import AlexNet

enum MessageTag {
    /// The (step, exchange point) header both ranks of a pair trade before each tower exchange.
    static let towerExchangeHeader = 1
    /// Rank 1's weights and momentum, sent to rank 0 for a whole-model checkpoint.
    static let checkpointValues = 2
    static let checkpointMomentum = 3
    /// The ping-pong rounds of --trace's clock alignment with rank 0.
    static let clockAlignment = 4
    /// The feature maps or gradient partials of one exchange point (either direction: the point says which).
    static func towerExchange(_ point: ExchangePoint) -> Int { 16 + point.rawValue }

    static var largest: Int {
        ([towerExchangeHeader, checkpointValues, checkpointMomentum, clockAlignment] + ExchangePoint.allCases.map(towerExchange)).max()!
    }
}
