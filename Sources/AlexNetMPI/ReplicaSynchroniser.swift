// Keeps data-parallel replicas one model: the same starting weights (broadcast from the group's first rank),
// gradients summed after every backward (GradientAllreduce), and a periodic checksum of the weights that stops
// the job if any replica has drifted. Under the conv-data/fc-model layout only the first `count` floats (the
// convolutions) are replicated; each rank's fc slice is its own.
import AlexNet
import Foundation

public final class ReplicaSynchroniser {
    public let group: MPICommunicator          // the ranks that hold the same parameters
    public let store: ParameterStore
    public let allreduce: GradientAllreduce
    public var checkEvery: Int
    /// Floats replicated over the group: the first `count` of the store.
    public let count: Int

    public init(group: MPICommunicator, model: TwoTowerAlexNet, checkEvery: Int, count: Int? = nil) {
        self.group = group
        self.store = model.parameters
        self.checkEvery = checkEvery
        self.count = count ?? model.parameters.count
        allreduce = GradientAllreduce(communicator: group, gradients: store.gradients, count: self.count)
        let reducer = allreduce
        model.gradientsReady = { reducer.ready($0) }
        model.progress = { reducer.progress() }
    }

    /// Every replica takes the first rank's weights and momentum.
    public func broadcastFromFirst() throws {
        try group.waiting(in: "the start-up broadcast of the first replica's weights") {
            try group.broadcast(store.values, count: count)
            try group.broadcast(store.momentum, count: count)
        }
    }

    /// FNV-1a over the bit patterns of every weight: equal exactly when the weights are.
    public func checksum() -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        let bits = UnsafeRawPointer(store.values).assumingMemoryBound(to: UInt32.self)
        for i in 0..<count { h = (h ^ UInt64(bits[i])) &* 0x100_0000_01b3 }
        return h
    }

    /// Compares the replicas' checksums; throws naming the ranks whose weights differ from the first's.
    public func compareWeights(afterStep step: Int) throws {
        let mine = withUnsafeBytes(of: checksum().littleEndian) { Array($0) }
        let all = try group.waiting(in: "the comparison of the replicas' weights") { try group.allGather(bytes: mine) }
        let odd = all.indices.filter { all[$0] != all[0] }
        guard odd.isEmpty else {
            throw AlexNetError("the replicas' weights differ after step \(step + 1): group rank\(odd.count > 1 ? "s" : "") \(odd.map(String.init).joined(separator: ", ")) disagree\(odd.count > 1 ? "" : "s") with group rank 0; stopping rather than training on diverged copies")
        }
    }

    /// For Trainer.afterUpdate: check every `checkEvery` steps and after the last.
    public func afterUpdate(step: Int, lastStep: Int) throws {
        if checkEvery > 0 && ((step + 1) % checkEvery == 0 || step == lastStep) { try compareWeights(afterStep: step) }
    }
}
