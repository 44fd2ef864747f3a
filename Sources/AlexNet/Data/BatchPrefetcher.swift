// Assembles the batch of the next training step on a background thread while the current step trains (double
// buffering): the step then waits only for the images that are not ready yet, and helps with those.
import Foundation

public final class BatchPrefetcher: @unchecked Sendable {
    /// One batch: its images are claimed one at a time by the background thread and, once the step needs the batch,
    /// by the training thread and its helpers. Each image lands in its own slot and is a pure function of (seed,
    /// epoch, index): who assembles it changes no bit.
    final class Job {
        let step: Int, epoch: Int, indices: [Int], labels: [Int32]
        let buffer: UnsafeMutablePointer<Float>        // (3, N, 227, 227)
        // Guarded by the prefetcher's lock.
        var started = false                            // a thread has begun it (runs `beforeAssembling`)
        var open = false                               // images may be claimed (`beforeAssembling` returned)
        var claimed = 0, finished = 0
        var error: Error? = nil
        var count: Int { indices.count }
        /// Nothing left for another thread to claim.
        var exhausted: Bool { started && (error != nil || claimed == count) }
        init(step: Int, epoch: Int, indices: [Int], labels: [Int32], buffer: UnsafeMutablePointer<Float>) {
            self.step = step; self.epoch = epoch; self.indices = indices; self.labels = labels; self.buffer = buffer
        }
    }

    let assembler: BatchAssembler
    let dataset: ImageDataset
    let augment: Bool
    /// Threads that assemble what is left when the step needs its batch (the training thread and helpers).
    let helpers: Int
    /// Called on the thread that begins a batch, with its step, before any image (failure injection in tests).
    let beforeAssembling: (@Sendable (Int) throws -> Void)?
    /// The two inputs (3, N, 227, 227): step s uses buffers[s % 2]. The first is the caller's; the second is ours.
    let buffers: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)
    let capacity: Int
    /// --trace: the background thread's batches, on the "data prefetch" row (wall time).
    let trace: (recorder: TraceRecorder, row: Int)?

    /// The background thread's name (as /proc/self/task/*/comm shows it: at most 15 bytes).
    public static let threadName = "batch-prefetch"

    let lock = NSCondition()
    // Guarded by lock.
    var pending: Job? = nil
    var stopping = false
    var thread: pthread_t? = nil                      // the background thread, once started (joined by stop())
    var backgroundNanoseconds: UInt64 = 0
    var backgroundImagesDone = 0

    /// `input` (3, capacity / (3·227·227), 227, 227) is the caller's buffer; a second of the same size is allocated.
    /// `threads`: what the process has for data when a step waits for its batch; the background thread (one, at
    /// normal priority: one that yields to the training threads, e.g. SCHED_IDLE, can be starved by other processes
    /// while holding an image the step waits for) counts as one of them, the training thread and helpers are the rest.
    public init(assembler: BatchAssembler, dataset: ImageDataset, augment: Bool, input: UnsafeMutablePointer<Float>,
                capacity: Int, threads: Int, beforeAssembling: (@Sendable (Int) throws -> Void)? = nil, trace: TraceRecorder? = nil) {
        self.assembler = assembler; self.dataset = dataset; self.augment = augment
        self.helpers = max(1, threads - 1); self.beforeAssembling = beforeAssembling
        let spare = UnsafeMutablePointer<Float>.allocate(capacity: capacity)
        spare.initialize(repeating: 0, count: capacity)
        buffers = (input, spare)
        self.capacity = capacity
        self.trace = trace.map { ($0, $0.row(named: "data prefetch")) }
    }

    deinit { buffers.1.deallocate() }

    /// CPU time the background thread spent assembling, and the images it did (ahead of their step).
    public var background: (seconds: Double, images: Int) {
        lock.lock(); defer { lock.unlock() }
        return (Double(backgroundNanoseconds) * 1e-9, backgroundImagesDone)
    }

    /// Starts assembling the batch of `step` (dataset `indices`, augmentation of `epoch`) into buffers[step % 2],
    /// which the caller must not be using (the batch before it is in the other). One batch at a time: `take` it first.
    public func prefetch(step: Int, epoch: Int, indices: [Int]) {
        precondition(indices.count * 3 * ModelConfig.inputSize * ModelConfig.inputSize <= capacity, "batch larger than the buffers")
        let job = Job(step: step, epoch: epoch, indices: indices, labels: indices.map { Int32(dataset.label($0)) },
                      buffer: step % 2 == 0 ? buffers.0 : buffers.1)
        lock.lock()
        precondition(pending == nil && !stopping, "prefetch(step: \(step)) while another batch is pending or after stop()")
        pending = job
        if thread == nil { thread = startThread() }   // if none can start, take() assembles the whole batch
        lock.broadcast()
        lock.unlock()
    }

    /// A POSIX thread running backgroundLoop (joinable: stop() returns only once it has ended), holding a reference
    /// to self until then; nil if the system refuses one.
    func startThread() -> pthread_t? {
        let me = Unmanaged.passRetained(self).toOpaque()
        var id = pthread_t()
        let status = pthread_create(&id, nil, { argument in
            Unmanaged<BatchPrefetcher>.fromOpaque(argument!).takeRetainedValue().backgroundLoop()
            return nil
        }, me)
        guard status == 0 else {
            Unmanaged<BatchPrefetcher>.fromOpaque(me).release()
            return nil
        }
        return id
    }

    /// The batch of `step` (its input buffer and labels), assembling with `helpers` threads what the background
    /// thread has not; rethrows what `beforeAssembling` threw for it, on this thread.
    public func take(step: Int) throws -> (input: UnsafeMutablePointer<Float>, labels: [Int32]) {
        lock.lock()
        guard let job = pending, job.step == step else {
            let what = pending.map { "step \($0.step)" } ?? "none"
            lock.unlock()
            throw AlexNetError("internal error: the batch of step \(step) was asked for, but the one prefetched is \(what)")
        }
        lock.unlock()
        if helpers > 1 {
            let shared = SharedForCall(job)   // every helper returns before concurrentPerform does
            DispatchQueue.concurrentPerform(iterations: helpers) { _ in
                let scratch = assembler.makeScratch()
                defer { scratch?.deallocate() }
                work(on: shared.value, scratch: scratch)
            }
        } else {
            let scratch = assembler.makeScratch()
            defer { scratch?.deallocate() }
            work(on: job, scratch: scratch)
        }
        lock.lock()
        // Images the background thread claimed are still being written: wait for them (also after a failure, so that
        // nothing writes into the buffer once this returns).
        while job.finished < job.claimed || (job.error == nil && job.finished < job.count) { lock.wait() }
        pending = nil
        lock.unlock()
        if let error = job.error { throw error }
        return (job.buffer, job.labels)
    }

    /// Ends the background thread and returns once it has exited (a batch in progress is abandoned after its current
    /// image). Idempotent; the prefetcher takes no batch after it. Must be called: the thread holds the prefetcher.
    public func stop() {
        lock.lock()
        stopping = true
        pending = nil
        let running = thread
        thread = nil
        lock.broadcast()
        lock.unlock()
        if let running { pthread_join(running, nil) }
    }

    /// Claims and assembles images of `job` until none is left, it failed, or the prefetcher stops. Any thread.
    /// Returns the images this call assembled.
    @discardableResult
    func work(on job: Job, scratch: UnsafeMutablePointer<UInt8>?) -> Int {
        var done = 0
        lock.lock()
        if !job.started {
            job.started = true
            lock.unlock()
            var failure: Error? = nil
            do { try beforeAssembling?(job.step) } catch { failure = error }
            lock.lock()
            job.error = failure
            job.open = true
            lock.broadcast()
        }
        while !job.open { lock.wait() }   // another thread is running beforeAssembling
        while job.error == nil && !stopping && job.claimed < job.count {
            let slot = job.claimed
            job.claimed += 1
            lock.unlock()
            assembler.assembleImage(dataset, index: job.indices[slot], slot: slot, batch: job.count, epoch: job.epoch,
                                    augment: augment, into: job.buffer, scratch: scratch)
            done += 1
            lock.lock()
            job.finished += 1
            if job.finished == job.count || job.finished == job.claimed { lock.broadcast() }
        }
        lock.unlock()
        return done
    }

    /// The background thread: works on each pending batch as it arrives, until stop().
    func backgroundLoop() {
        Thread.current.name = Self.threadName   // Foundation names the running thread (pthread_setname_np)
        let scratch = assembler.makeScratch()
        defer { scratch?.deallocate() }
        lock.lock()
        while true {
            while !stopping && (pending == nil || pending!.exhausted) { lock.wait() }
            if stopping { break }
            let job = pending!
            lock.unlock()
            let t0 = Self.threadCPUNanoseconds(), wall = PhaseClock.now()
            let done = work(on: job, scratch: scratch)
            let elapsed = Self.threadCPUNanoseconds() - t0
            if let trace {
                trace.recorder.record("assemble step \(job.step)", category: "data", row: trace.row, start: wall, end: PhaseClock.now(),
                                args: ["images": "\(done)"])
            }
            lock.lock()
            backgroundNanoseconds += elapsed
            backgroundImagesDone += done
        }
        lock.unlock()
    }

    /// CPU time of the calling thread (what it computed, not how long it waited for a core).
    static func threadCPUNanoseconds() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }
}
