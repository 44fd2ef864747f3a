// Data parallelism within one node without copies: the replicas share one copy of the weights and momentum in an MPI
// shared-memory window (MPI_Win_allocate_shared), each rank's gradients lie beside them, and after backward each rank
// updates its 1/N of the parameters from the sum of every rank's gradients, between two barriers. Against the
// allreduce nothing is copied, and each rank updates 1/N of the model instead of all of it.
import AlexNet
import AlexNetKernels
import CMPI
import Foundation

/// How data parallelism sums its replicas' gradients (`--gradient-sum`).
public enum GradientSum: String, CaseIterable, Sendable {
    /// Shared memory when every rank is on one node and the window fits, else the allreduce.
    case auto
    /// One copy of the weights a node, updated in shares from every rank's gradients (refused where it cannot be).
    case sharedMemory = "shared-memory"
    /// MPI_Iallreduce of the gradients, overlapped with backward: every rank holds and updates its own copy.
    case allreduce
}

public final class SharedReplicaMemory {
    /// The ranks sharing the window: the world, on one node.
    public let group: MPICommunicator
    public let count: Int
    /// The buffers of this rank's parameter store: the shared weights and momentum, and this rank's gradients.
    public let memory: ParameterMemory
    let gradients: [UnsafePointer<Float>]   // (count) each, every rank's, in rank order
    /// The parameters this rank updates: its 1/N of the buffer.
    public let share: Range<Int>
    /// Seconds waited at the barriers after backward and after the update (since `resetCounters`).
    public private(set) var waitingSeconds = 0.0

    /// Where Open MPI backs a shared window (its osc_sm_backing_directory, /dev/shm unless set).
    public static var backingDirectory: String {
        ProcessInfo.processInfo.environment["OMPI_MCA_osc_sm_backing_directory"] ?? "/dev/shm"
    }

    /// Bytes of the window for `count` parameters over `ranks` ranks: weights, momentum and a gradient a rank.
    public static func bytes(count: Int, ranks: Int) -> Int { 4 * count * (2 + ranks) }

    /// The shared window for `count` parameters over `world`, or why there is none: ranks on more than one node, or
    /// too little room where Open MPI backs the window (a full tmpfs would kill the process that touches it with
    /// SIGBUS). Every rank of `world` calls it and gets the same answer.
    public static func make(world: MPICommunicator, count: Int) throws -> (memory: SharedReplicaMemory?, whyNot: String?) {
        let node = try world.splitByNode()
        guard try world.minimum(node.size == world.size ? 1 : 0) == 1 else {
            return (nil, "the \(world.size) ranks are on more than one node")
        }
        let needed = bytes(count: count, ranks: world.size), directory = backingDirectory
        var fs = statvfs()
        let free = statvfs(directory, &fs) == 0 ? Int(fs.f_bavail) * Int(fs.f_frsize) : nil
        guard try world.minimum((free ?? 0) >= needed + needed / 8 ? 1 : 0) == 1 else {
            let room = free.map { "has \(MemoryBudget.gigabytes($0)) free" } ?? "cannot be read"
            return (nil, "\(directory), where Open MPI keeps shared memory (its osc_sm_backing_directory), \(room) on some rank, less than the \(MemoryBudget.gigabytes(needed + needed / 8)) the shared weights need with a margin; make room there, or choose a roomier directory with OMPI_MCA_osc_sm_backing_directory")
        }
        return (try SharedReplicaMemory(group: world, count: count), nil)
    }

    private init(group: MPICommunicator, count: Int) throws {
        self.group = group
        self.count = count
        let own = group.rank == 0 ? 3 * count : count   // rank 0: weights, momentum, its gradients; the others: theirs
        var window: MPI_Win? = nil
        var base: UnsafeMutableRawPointer? = nil
        try group.waiting(in: "the allocation of the replicas' shared weights (MPI_Win_allocate_shared)") {
            try MPICommunicator.serialized {
                try MPICommunicator.check(shim_win_allocate_shared(group.handle, MPI_Aint(4 * own), &window, &base),
                                          "MPI_Win_allocate_shared of \(4 * own) B")
            }
        }
        var bases: [UnsafeMutablePointer<Float>] = []
        for r in 0..<group.size {
            var b: UnsafeMutableRawPointer? = nil
            try MPICommunicator.serialized {
                try MPICommunicator.check(shim_win_shared_query(window, Int32(r), &b), "MPI_Win_shared_query of rank \(r)")
            }
            bases.append(b!.assumingMemoryBound(to: Float.self))
        }
        base!.initializeMemory(as: Float.self, repeating: 0, count: own)
        let first = bases[0]
        gradients = (0..<group.size).map { UnsafePointer($0 == 0 ? first + 2 * count : bases[$0]) }
        memory = ParameterMemory(values: first, gradients: UnsafeMutablePointer(mutating: gradients[group.rank]), momentum: first + count)
        // Shares of whole 16-float blocks (cache lines), so that no two ranks write one line.
        let blocks = (count + 15) / 16, r = group.rank, n = group.size
        share = min(count, 16 * (blocks * r / n))..<min(count, 16 * (blocks * (r + 1) / n))
        try group.waiting(in: "the barrier after zeroing the shared weights") { try group.barrier() }
        // The window lives until MPI_Finalize: MPI_Win_free is collective, and a rank leaving early on an error
        // must not leave the others waiting in it.
    }

    public func resetCounters() { waitingSeconds = 0 }

    /// Every rank's gradients are complete (after backward): one barrier.
    public func gradientsComplete() throws { try barrier("the barrier before the shared update (every replica's backward done)") }

    /// The paper's update of this rank's share from the sum of every rank's gradients. Returns the sum of the share's
    /// new weights (the non-finite guard's check). `sharesWritten` must follow before any rank's next forward.
    public func updateShare(learningRate: Float, momentum: Float, weightDecay: Float) -> Double {
        SGD.step(values: memory.values, summing: gradients, momentum: memory.momentum, range: share,
                 learningRate: learningRate, momentum: momentum, weightDecay: weightDecay)
    }

    /// Every rank has written its share: one barrier.
    public func sharesWritten() throws { try barrier("the barrier after the shared update (every share written)") }

    /// A barrier of the group, timed into `waitingSeconds` and named `point` for the stall watchdog.
    private func barrier(_ point: String) throws {
        let t0 = PhaseClock.now()
        try group.waiting(in: point) { try group.barrier() }
        waitingSeconds += Double(PhaseClock.now() - t0) * 1e-9
    }

    /// Before the first step: every rank has initialised or loaded (the same numbers) into the shared weights.
    public func startTraining() throws {
        try group.waiting(in: "the start-up barrier of the shared weights") { try group.barrier() }
    }
}
