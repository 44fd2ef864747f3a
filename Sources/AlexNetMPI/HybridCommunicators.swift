// The hybrid layout's communicators: of 2·R ranks, rank 2r + t holds tower t of replica r; the pair trades
// tower slices, the tower group (the R ranks that hold the same tower) sums gradients.
import AlexNet

public struct HybridCommunicators {
    public let pair: MPICommunicator          // ranks 2r and 2r + 1: one replica's two towers
    public let towerGroup: MPICommunicator    // every replica's copy of this rank's tower
    public let replica: Int
    public let tower: Int

    public init(world: MPICommunicator) throws {
        precondition(world.size % 2 == 0, "the hybrid layout needs an even number of ranks")
        replica = world.rank / 2
        tower = world.rank % 2
        pair = try world.split(color: replica, key: tower)
        towerGroup = try world.split(color: tower, key: replica)
    }
}
