// Whole-model checkpoints in any layout: the ranks whose stores together hold every row (a model-parallel pair's two
// towers, one data-parallel replica, every rank's fc slice) send their weights and momentum to rank 0, which writes
// one file in the layout of docs/model.md, loadable in one process or split again by any layout.
import AlexNet
import Foundation

public enum GatheredCheckpoint {
    public static func save(_ own: ParameterStore, state: TrainingState, to path: String, world: MPICommunicator,
                            layout: ParallelLayout) throws {
        let contributors = layout.checkpointContributors
        try world.waiting(in: "the checkpoint gather") {
            if world.rank == 0 {
                var stores = [own]
                for k in contributors where k != 0 {
                    let role = layout.role(of: k)
                    let other = ParameterStore(config: own.config, towers: role.towers, fullyConnectedSlice: role.fullyConnectedSlice)
                    try world.receive(other.values, count: other.count, from: k, tag: MessageTag.checkpointValues)
                    try world.receive(other.momentum, count: other.count, from: k, tag: MessageTag.checkpointMomentum)
                    stores.append(other)
                }
                try Checkpoint.save(stores, state: state, to: path)
            } else if contributors.contains(world.rank) {
                try world.send(own.values, count: own.count, to: 0, tag: MessageTag.checkpointValues)
                try world.send(own.momentum, count: own.count, to: 0, tag: MessageTag.checkpointMomentum)
            }
            // The others learn here whether rank 0 could write (an error on rank 0 aborts the job before this).
            try world.barrier()
        }
    }
}
