// Whole-model checkpoints under model parallelism: rank 1 sends its tower's weights and momentum to rank 0,
// which writes one file in the layout of shared/design/model.md (loadable by one process, or split again).
import AlexNet
import Foundation

public enum ModelParallelCheckpoint {
    static let tag = 1 << 20

    public static func save(_ own: ParameterStore, state: TrainingState, to path: String, pair: MPICommunicator) throws {
        let partner = 1 - pair.rank
        if pair.rank == 0 {
            let other = ParameterStore(config: own.config, towers: partner..<(partner + 1))
            try pair.receive(other.values, count: other.count, from: partner, tag: tag)
            try pair.receive(other.momentum, count: other.count, from: partner, tag: tag + 1)
            try Checkpoint.save([own, other], state: state, to: path)
        } else {
            try pair.send(own.values, count: own.count, to: 0, tag: tag)
            try pair.send(own.momentum, count: own.count, to: 0, tag: tag + 1)
        }
        // Rank 1 learns here whether rank 0 could write (an error on rank 0 aborts the job before this).
        try pair.barrier()
    }
}
