// A Swift face of an MPI communicator: every MPI return code is checked here, in one place, and turned into
// an AlexNetError carrying MPI_Error_string. Nothing outside this folder imports MPI. Every call that may block
// tells the stall watchdog what it waits in and for whom (see StallWatchdog).
import AlexNet
import CMPI
import Foundation

public final class MPICommunicator: @unchecked Sendable {   // immutable after init; MPI calls serialised by callLock
    public let handle: MPI_Comm
    public let rank: Int
    public let size: Int
    /// MPI_COMM_WORLD's rank of each rank of this communicator (messages name world ranks: what mpirun numbers).
    public let worldRanks: [Int]

    /// Whether this process was started by an MPI launcher (mpirun / srun), so MPI must be initialised.
    public static var launchedByMPI: Bool { Terminal.isMPIRank }

    /// Every MPI call of this process goes through this lock, so that a progress thread may test requests while
    /// the main thread computes (MPI_THREAD_SERIALIZED: one thread in MPI at a time). Only MPI_Abort bypasses it.
    static let callLock = NSLock()

    /// Whether MPI granted MPI_THREAD_SERIALIZED (else no thread but the main one may call MPI).
    public static var threadsMayCall: Bool {
        var provided: Int32 = 0
        return serialized { MPI_Query_thread(&provided) } == shim_success() && provided >= Int32(MPI_THREAD_SERIALIZED)
    }

    @inline(__always)
    static func serialized<T>(_ body: () throws -> T) rethrows -> T {
        callLock.lock()
        defer { callLock.unlock() }
        return try body()
    }

    @inline(__always)
    func serial<T>(_ body: () throws -> T) rethrows -> T { try Self.serialized(body) }

    /// An MPI call that may block: the stall watchdog watches it as `operation`, waiting for `peer` (a rank of this
    /// communicator), or for the whole group if nil. A caller's own `waiting(in:)` around it names it better.
    @inline(__always)
    func blocking<T>(_ operation: @autoclosure () -> String, peer: Int? = nil, _ body: () throws -> T) rethrows -> T {
        try waiting(in: operation(), for: peer) { try serial(body) }
    }

    /// Runs `body`, whose MPI calls on this communicator may block, as one wait the stall watchdog watches, named
    /// `operation` ("the gradient allreduce") and waiting for rank `peer` of this communicator (nil: the group).
    /// Waits nested inside keep the outermost name.
    public func waiting<T>(in operation: @autoclosure () -> String, for peer: Int? = nil, _ body: () throws -> T) rethrows -> T {
        let recorded = StallWatchdog.shared.begin(operation(), on: self, peer: peer)
        defer { if recorded { StallWatchdog.shared.end() } }
        return try body()
    }

    /// MPI_Init_thread and the world communicator, with errors returned (not fatal) so that they can be reported.
    /// Refuses an MPI whose largest message tag (MPI_TAG_UB) is below the tags alexnet-mpi uses.
    public static func world() throws -> MPICommunicator {
        try serialized { try initialiseWorld() }
    }

    /// Open MPI's MCA parameter (as an environment variable) choosing libnbc's MPI_Iallreduce algorithm: 1 is its ring.
    public static let iallreduceAlgorithmVariable = "OMPI_MCA_coll_libnbc_iallreduce_algorithm"

    private static func initialiseWorld() throws -> MPICommunicator {
        var initialised: Int32 = 0
        try check(MPI_Initialized(&initialised), "MPI_Initialized")
        if initialised == 0 {
            // The gradient allreduce is an in-place MPI_Iallreduce, which Open MPI's libnbc runs as a binomial tree
            // (whenever the buffer is in place, or on fewer than 4 ranks): the whole buffer travels up the tree and
            // back down, log₂(G) times each way. Its ring sends 2(G − 1)/G of it, in both directions at once: half
            // the time on 2 ranks, a sixth on 64. Chosen here unless the user set the parameter.
            setenv(iallreduceAlgorithmVariable, "1", 0)
            MallocTuning.keepCollectiveScratchInTheHeap()
            var provided: Int32 = 0
            try check(MPI_Init_thread(nil, nil, Int32(MPI_THREAD_SERIALIZED), &provided), "MPI_Init_thread")
        }
        try check(MPI_Comm_set_errhandler(shim_comm_world(), shim_errors_return()), "MPI_Comm_set_errhandler")
        var tagUpperBound: Int32 = 0
        try check(shim_tag_upper_bound(shim_comm_world(), &tagUpperBound), "MPI_Comm_get_attr(MPI_TAG_UB)")
        guard MessageTag.largest <= Int(tagUpperBound) else {
            throw AlexNetError("this MPI accepts message tags up to \(tagUpperBound) (its MPI_TAG_UB), but alexnet-mpi sends tags up to \(MessageTag.largest); the MPI standard promises at least 32767, so choose another transport or MPI (e.g. mpirun --mca pml ob1)")
        }
        return try MPICommunicator(shim_comm_world())
    }

    init(_ handle: MPI_Comm) throws {
        self.handle = handle
        var r: Int32 = 0, s: Int32 = 0
        try Self.check(MPI_Comm_rank(handle, &r), "MPI_Comm_rank")
        try Self.check(MPI_Comm_size(handle, &s), "MPI_Comm_size")
        rank = Int(r); size = Int(s)
        var group: MPI_Group? = nil, worldGroup: MPI_Group? = nil
        try Self.check(MPI_Comm_group(handle, &group), "MPI_Comm_group")
        try Self.check(MPI_Comm_group(shim_comm_world(), &worldGroup), "MPI_Comm_group")
        var local = (0..<s).map { $0 }, world = [Int32](repeating: 0, count: Int(s))
        try Self.check(MPI_Group_translate_ranks(group, s, &local, worldGroup, &world), "MPI_Group_translate_ranks")
        MPI_Group_free(&group)
        MPI_Group_free(&worldGroup)
        worldRanks = world.map(Int.init)
    }

    static func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
        guard code != shim_success() else { return }
        var text = [CChar](repeating: 0, count: Int(shim_max_error_string()) + 1)
        var length: Int32 = 0
        MPI_Error_string(code, &text, &length)
        let message = String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        throw AlexNetError("\(call()) failed: \(message)")
    }

    /// Splits into sub-communicators by colour, ranked by key.
    public func split(color: Int, key: Int) throws -> MPICommunicator {
        var out: MPI_Comm? = nil
        try blocking("a communicator split (MPI_Comm_split)") {
            try Self.check(MPI_Comm_split(handle, Int32(color), Int32(key), &out), "MPI_Comm_split")
            try Self.check(MPI_Comm_set_errhandler(out, shim_errors_return()), "MPI_Comm_set_errhandler")
        }
        return try serial { try MPICommunicator(out!) }
    }

    /// The ranks of this communicator that share this one's node (its memory), ranked as here (MPI_Comm_split_type).
    public func splitByNode() throws -> MPICommunicator {
        var out: MPI_Comm? = nil
        try blocking("a split by node (MPI_Comm_split_type)") {
            try Self.check(MPI_Comm_split_type(handle, shim_comm_type_shared(), Int32(rank), shim_info_null(), &out), "MPI_Comm_split_type")
            try Self.check(MPI_Comm_set_errhandler(out, shim_errors_return()), "MPI_Comm_set_errhandler")
        }
        return try serial { try MPICommunicator(out!) }
    }

    /// Sends `sendCount` floats to `peer` and receives `receiveCount` floats from it (one MPI_Sendrecv).
    public func exchange(send: UnsafePointer<Float>, sendCount: Int, receive: UnsafeMutablePointer<Float>, receiveCount: Int,
                         peer: Int, tag: Int) throws {
        try blocking("an MPI_Sendrecv (tag \(tag))", peer: peer) {
            try Self.check(MPI_Sendrecv(send, Int32(sendCount), shim_float(), Int32(peer), Int32(tag),
                                        receive, Int32(receiveCount), shim_float(), Int32(peer), Int32(tag),
                                        handle, shim_status_ignore()),
                           "MPI_Sendrecv of \(sendCount) floats with rank \(worldRanks[peer]) (tag \(tag))")
        }
    }

    /// Trades a few Int64s with `peer` (one MPI_Sendrecv of `mine.count` each way).
    public func exchange(_ mine: [Int64], peer: Int, tag: Int) throws -> [Int64] {
        var outgoing = mine, incoming = [Int64](repeating: 0, count: mine.count)
        try blocking("an MPI_Sendrecv (tag \(tag))", peer: peer) {
            try Self.check(MPI_Sendrecv(&outgoing, Int32(mine.count), shim_int64(), Int32(peer), Int32(tag),
                                        &incoming, Int32(mine.count), shim_int64(), Int32(peer), Int32(tag),
                                        handle, shim_status_ignore()),
                           "MPI_Sendrecv of \(mine.count) integers with rank \(worldRanks[peer]) (tag \(tag))")
        }
        return incoming
    }

    public func send(_ data: UnsafePointer<Float>, count: Int, to peer: Int, tag: Int) throws {
        try blocking("an MPI_Send (tag \(tag))", peer: peer) {
            try Self.check(MPI_Send(data, Int32(count), shim_float(), Int32(peer), Int32(tag), handle),
                           "MPI_Send to rank \(worldRanks[peer])")
        }
    }

    public func receive(_ data: UnsafeMutablePointer<Float>, count: Int, from peer: Int, tag: Int) throws {
        try blocking("an MPI_Recv (tag \(tag))", peer: peer) {
            try Self.check(MPI_Recv(data, Int32(count), shim_float(), Int32(peer), Int32(tag), handle, shim_status_ignore()),
                           "MPI_Recv from rank \(worldRanks[peer])")
        }
    }

    /// Every rank's bytes, concatenated in rank order (MPI_Allgather of the lengths, then MPI_Allgatherv).
    public func allGather(bytes: [UInt8]) throws -> [[UInt8]] {
        var length = Int32(bytes.count)
        var lengths = [Int32](repeating: 0, count: size)
        var offsets = [Int32](repeating: 0, count: size)
        var all: [UInt8] = []
        try waiting(in: "an all-gather (MPI_Allgather)") {
            try serial { try Self.check(MPI_Allgather(&length, 1, shim_int(), &lengths, 1, shim_int(), handle), "MPI_Allgather") }
            for i in 1..<max(1, size) { offsets[i] = offsets[i - 1] + lengths[i - 1] }
            all = [UInt8](repeating: 0, count: Int(lengths.reduce(0, +)))
            var mine = bytes
            try serial {
                try Self.check(MPI_Allgatherv(&mine, length, shim_char(), &all, lengths, offsets, shim_char(), handle), "MPI_Allgatherv")
            }
        }
        return (0..<size).map { Array(all[Int(offsets[$0])..<Int(offsets[$0] + lengths[$0])]) }
    }

    /// In place: rank r's floats [offsets[r], offsets[r+1]) of `buffer` to every rank (MPI_Allgatherv).
    public func allGather(_ buffer: UnsafeMutablePointer<Float>, offsets: [Int]) throws {
        let (counts, displacements) = try Self.countsAndDisplacements(offsets, size: size)
        try blocking("an all-gather of \(offsets[size] - offsets[0]) floats (MPI_Allgatherv)") {
            try Self.check(MPI_Allgatherv(shim_in_place(), 0, shim_float(), buffer + offsets[0], counts, displacements, shim_float(), handle),
                           "MPI_Allgatherv of \(offsets[size] - offsets[0]) floats")
        }
    }

    /// Σ over the ranks of `partial` (laid out by `offsets`), rank r receiving part r into `destination`
    /// (MPI_Reduce_scatter).
    public func reduceScatter(_ partial: UnsafePointer<Float>, offsets: [Int], into destination: UnsafeMutablePointer<Float>) throws {
        let (counts, _) = try Self.countsAndDisplacements(offsets, size: size)
        try blocking("a reduce-scatter of \(offsets[size] - offsets[0]) floats (MPI_Reduce_scatter)") {
            try Self.check(MPI_Reduce_scatter(partial + offsets[0], destination, counts, shim_float(), shim_sum(), handle),
                           "MPI_Reduce_scatter of \(offsets[size] - offsets[0]) floats")
        }
    }

    static func countsAndDisplacements(_ offsets: [Int], size: Int) throws -> ([Int32], [Int32]) {
        precondition(offsets.count == size + 1)
        guard offsets[size] - offsets[0] <= Int(Int32.max) else {
            throw AlexNetError("a collective of \(offsets[size] - offsets[0]) floats is beyond MPI's 32-bit counts; use a smaller --batch or --width")
        }
        return ((0..<size).map { Int32(offsets[$0 + 1] - offsets[$0]) }, (0..<size).map { Int32(offsets[$0] - offsets[0]) })
    }

    /// Sum of a Double over the ranks.
    public func sum(_ value: Double) throws -> Double {
        var v = value, out = 0.0
        try blocking("an allreduce (MPI_Allreduce)") {
            try Self.check(MPI_Allreduce(&v, &out, 1, shim_double(), shim_sum(), handle), "MPI_Allreduce")
        }
        return out
    }

    /// Largest of a Double over the ranks.
    public func maximum(_ value: Double) throws -> Double {
        var v = value, out = 0.0
        try blocking("an allreduce (MPI_Allreduce)") {
            try Self.check(MPI_Allreduce(&v, &out, 1, shim_double(), shim_max(), handle), "MPI_Allreduce")
        }
        return out
    }

    /// Smallest of a Double over the ranks.
    public func minimum(_ value: Double) throws -> Double {
        -(try maximum(-value))
    }

    /// Starts an in-place sum of `count` floats over the ranks (MPI_Iallreduce); finish it with `waitAll`.
    public func startSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws -> MPI_Request? {
        var request: MPI_Request? = nil
        try serial { try Self.check(MPI_Iallreduce(shim_in_place(), data, Int32(count), shim_float(), shim_sum(), handle, &request),
                       "MPI_Iallreduce of \(count) floats") }
        return request
    }

    /// In-place blocking sum of `count` floats over the ranks.
    public func sum(_ data: UnsafeMutablePointer<Float>, count: Int) throws {
        try blocking("an allreduce of \(count) floats (MPI_Allreduce)") {
            try Self.check(MPI_Allreduce(shim_in_place(), data, Int32(count), shim_float(), shim_sum(), handle),
                           "MPI_Allreduce of \(count) floats")
        }
    }

    /// Lets outstanding nonblocking operations progress; returns whether all are complete.
    public func test(_ requests: inout [MPI_Request?]) throws -> Bool {
        var flag: Int32 = 0
        try serial { try Self.check(MPI_Testall(Int32(requests.count), &requests, &flag, shim_statuses_ignore()), "MPI_Testall") }
        return flag != 0
    }

    /// MPI_Test of each request not yet marked `complete`, marking those that are now; returns whether all are.
    /// (MPI_Testall says only whether all are done; --trace times each bucket.)
    public func test(_ requests: inout [MPI_Request?], complete: inout [Bool]) throws -> Bool {
        try serial {
            for i in requests.indices where !complete[i] {
                var flag: Int32 = 0
                try Self.check(MPI_Test(&requests[i], &flag, shim_status_ignore()), "MPI_Test")
                if flag != 0 { complete[i] = true }
            }
        }
        return !complete.contains(false)
    }

    public func waitAll(_ requests: inout [MPI_Request?]) throws {
        try blocking("a wait for \(requests.count) nonblocking operations (MPI_Waitall)") {
            try Self.check(MPI_Waitall(Int32(requests.count), &requests, shim_statuses_ignore()), "MPI_Waitall")
        }
    }

    /// Rank `root`'s `count` floats to every rank.
    public func broadcast(_ data: UnsafeMutablePointer<Float>, count: Int, root: Int = 0) throws {
        try blocking("a broadcast (MPI_Bcast)") {
            try Self.check(MPI_Bcast(data, Int32(count), shim_float(), Int32(root), handle), "MPI_Bcast of \(count) floats")
        }
    }

    public func barrier() throws {
        try blocking("a barrier (MPI_Barrier)") { try Self.check(MPI_Barrier(handle), "MPI_Barrier") }
    }

    /// Ends every rank of the job (after the caller has printed why). Takes no lock: another thread may be inside
    /// a blocking MPI call that will never return.
    public static func abortAll(code: Int32 = 1) -> Never {
        MPI_Abort(shim_comm_world(), code)
        exit(code)
    }

    /// MPI_Finalize (which waits for every rank), watched by the stall watchdog like any other wait.
    public static func finalize() {
        StallWatchdog.shared.waitingInFinalize { serialized { _ = MPI_Finalize() } }
    }
}
