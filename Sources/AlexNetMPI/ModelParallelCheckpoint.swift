// Whole-model checkpoints under model parallelism: rank 1 sends its tower's weights and momentum to rank 0,
// which writes one file in the layout of docs/model.md (loadable by one process, or split again).
import AlexNet
import Foundation

public enum ModelParallelCheckpoint {
    public static func save(_ own: ParameterStore, state: TrainingState, to path: String, pair: MPICommunicator) throws {
        let partner = 1 - pair.rank
        try pair.waiting(in: "the checkpoint gather", for: partner) {
            if pair.rank == 0 {
                let other = ParameterStore(config: own.config, towers: partner..<(partner + 1))
                try pair.receive(other.values, count: other.count, from: partner, tag: MessageTag.checkpointValues)
                try pair.receive(other.momentum, count: other.count, from: partner, tag: MessageTag.checkpointMomentum)
                try Checkpoint.save([own, other], state: state, to: path)
            } else {
                try pair.send(own.values, count: own.count, to: 0, tag: MessageTag.checkpointValues)
                try pair.send(own.momentum, count: own.count, to: 0, tag: MessageTag.checkpointMomentum)
            }
            // Rank 1 learns here whether rank 0 could write (an error on rank 0 aborts the job before this).
            try pair.barrier()
        }
    }
}
