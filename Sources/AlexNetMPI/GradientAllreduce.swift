// Data parallelism's gradient sum: buckets of the contiguous gradient buffer (last layers first, as PyTorch DDP)
// start a nonblocking MPI_Iallreduce as soon as backward has finished them, progress while earlier layers compute,
// and are waited for only before the update. Open MPI moves a nonblocking collective only inside MPI calls, so a
// progress thread tests the requests in flight every 50 µs (MPI_THREAD_SERIALIZED: calls go one at a time).
import AlexNet
import CMPI
import Foundation

/// Shared between the main and the progress thread: `requests` and `failure`, both only under `requestsLock`.
/// Everything else is the main thread's.
public final class GradientAllreduce: @unchecked Sendable {
    public let communicator: MPICommunicator
    let gradients: UnsafeMutablePointer<Float>
    let count: Int
    /// Floats a bucket gathers before its allreduce starts, and the most one holds (25 MB, PyTorch DDP's default).
    public var bucketFloats = 25 << 18
    /// `bench --skip-gradient-sum`: nothing is summed (the replicas drift apart), so that the step can be timed
    /// without the allreduce; against a run with it, that is what the sum costs even where it is hidden.
    public var skipped = false
    var requests: [MPI_Request?] = []   // under requestsLock
    var failure: Error? = nil           // under requestsLock: the first MPI error, thrown by `finish`
    var pendingLow: Int            // gradients [pendingLow, startedLow) are final but not yet in flight
    var startedLow: Int            // gradients [startedLow, count) are in flight (or done)

    /// Seconds blocked in the final wait (exposed), bytes summed a step, and buckets started.
    public private(set) var exposedSeconds = 0.0
    public private(set) var floatsReduced = 0
    public private(set) var buckets = 0

    /// --trace: each bucket's start, size and whether its request completed, parallel to `requests` (under
    /// requestsLock); the progress thread tests them one by one and records a span per bucket as it completes.
    struct TracedBucket { var start: UInt64; var floats: Int }
    var trace: (recorder: TraceRecorder, row: Int)? = nil   // set before the first step, under requestsLock
    var traced: [TracedBucket] = []                         // under requestsLock
    var completed: [Bool] = []                              // under requestsLock

    let requestsLock = NSLock()             // guards `requests` and `failure` between the main and the progress thread
    let wake = DispatchSemaphore(value: 0)
    var progressThread: Thread? = nil

    public init(communicator: MPICommunicator, gradients: UnsafeMutablePointer<Float>, count: Int) {
        self.communicator = communicator
        self.gradients = gradients
        self.count = count
        pendingLow = count
        startedLow = count
        if MPICommunicator.threadsMayCall {
            let t = Thread { [self] in progressLoop() }   // holds the instance: one a run, for the process's life
            t.name = "allreduce progress"
            progressThread = t
            t.start()
        }
    }

    /// Tests the requests in flight until they are all complete, each time a bucket starts. Runs for the life of
    /// the process (one instance a run).
    func progressLoop() {
        while true {
            wake.wait()
            while true {
                requestsLock.lock()
                if requests.isEmpty || failure != nil { requestsLock.unlock(); break }
                var done = true
                do {
                    if trace != nil { done = try testEachTracedBucket() } else { done = try communicator.test(&requests) }
                } catch { failure = error }
                requestsLock.unlock()
                if done { break }
                usleep(50)
            }
        }
    }

    /// --trace: every bucket becomes a span from its start to its completion, on the row `row` (the progress thread's).
    public func attach(recorder: TraceRecorder, row: Int) {
        requestsLock.withLock { trace = (recorder, row) }
    }

    /// Tests each bucket in flight (under requestsLock) and records those that just completed; returns whether all have.
    private func testEachTracedBucket() throws -> Bool {
        let before = completed
        let done = try communicator.test(&requests, complete: &completed)
        for i in completed.indices where completed[i] && !before[i] { recordBucket(i, end: PhaseClock.now()) }
        return done
    }

    private func recordBucket(_ i: Int, end: UInt64) {
        guard let trace else { return }
        let b = traced[i]
        trace.recorder.record("allreduce bucket \(i)", category: "allreduce", row: trace.row, start: b.start, end: end,
                              args: ["floats": "\(b.floats)", "bytes": "\(4 * b.floats)"])
    }

    public func resetCounters() { exposedSeconds = 0; floatsReduced = 0; buckets = 0 }

    var firstFailure: Error? { requestsLock.withLock { failure } }
    func record(_ error: Error) { requestsLock.withLock { if failure == nil { failure = error } } }

    /// Backward finished gradients[range]; ranges arrive from the end of the buffer towards its start.
    /// (Called from inside backward, which cannot throw through: an MPI error is kept and thrown by `finish`.)
    /// Ranges past `count` (gradients that are not replicated: the conv-data/fc-model layout's fc slices) are ignored.
    public func ready(_ range: Range<Int>) {
        guard range.lowerBound < count else { return }
        precondition(range.upperBound == pendingLow, "gradients must become ready from the last layer backwards")
        pendingLow = range.lowerBound
        guard !skipped, firstFailure == nil else { return }
        do {
            if startedLow - pendingLow >= bucketFloats { try startBucket() }
        } catch { record(error) }
        progress()
    }

    /// Lets the buckets in flight progress (Open MPI moves nonblocking collectives only inside MPI calls); with a
    /// progress thread there is nothing to do here.
    public func progress() {
        guard progressThread == nil else { return }
        requestsLock.lock()
        defer { requestsLock.unlock() }
        guard failure == nil, !requests.isEmpty else { return }
        do { _ = try communicator.test(&requests) } catch { failure = error }
    }

    /// Starts the final gradients not yet in flight, [pendingLow, startedLow), as buckets of at most `bucketFloats`
    /// (from the top: a layer larger than a bucket, fc6's 151 MB at W = 1, goes as several). Open MPI's allreduce
    /// allocates a scratch buffer as large as (half) its message each call; kept below glibc's largest mmap threshold
    /// (32 MB, see `MallocTuning`), the buffer is reused from the heap instead of being mapped and faulted in anew.
    private func startBucket() throws {
        guard startedLow > pendingLow else { return }
        requestsLock.lock()
        defer { requestsLock.unlock(); wake.signal() }
        while startedLow > pendingLow {
            let low = max(pendingLow, startedLow - bucketFloats), n = startedLow - low
            let start = PhaseClock.now()
            requests.append(try communicator.startSum(gradients + low, count: n))
            if trace != nil { traced.append(TracedBucket(start: start, floats: n)); completed.append(false) }
            floatsReduced += n
            buckets += 1
            startedLow = low
        }
    }

    /// Starts what is left and waits for every bucket: afterwards the buffer holds the sum over the ranks.
    public func finish() throws {
        if let e = firstFailure { throw e }
        precondition(pendingLow == 0, "backward did not announce every layer")
        if skipped { (pendingLow, startedLow) = (count, count); return }
        try startBucket()
        let t0 = PhaseClock.now()
        requestsLock.lock()
        defer { requestsLock.unlock() }
        if let e = failure { throw e }
        try communicator.waiting(in: "the gradient allreduce") { try communicator.waitAll(&requests) }
        let t1 = PhaseClock.now()
        exposedSeconds += Double(t1 - t0) * 1e-9
        for i in completed.indices where !completed[i] { recordBucket(i, end: t1) }   // completed in the wait
        traced.removeAll(keepingCapacity: true)
        completed.removeAll(keepingCapacity: true)
        requests.removeAll(keepingCapacity: true)
        pendingLow = count
        startedLow = count
    }

    /// Seconds one blocking allreduce of the whole buffer takes now (what an unoverlapped sum would cost).
    public func measureBlockingSeconds(repeats: Int = 2) throws -> Double {
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { scratch.deallocate() }
        scratch.initialize(repeating: 0, count: count)
        return try communicator.waiting(in: "the timing of one blocking gradient allreduce") {
            try communicator.barrier()
            var best = Double.infinity
            for _ in 0..<repeats {
                let t0 = PhaseClock.now()
                try communicator.sum(scratch, count: count)
                best = min(best, Double(PhaseClock.now() - t0) * 1e-9)
            }
            return try communicator.maximum(best)
        }
    }
}
