// The stall watchdog (--stall-timeout): a rank that waits longer than the timeout in one blocking MPI call (a tower
// exchange, the gradient allreduce, a checkpoint gather, a barrier, ...) prints what it waited in and for whom, and
// ends the whole job. Without it a stopped, hung or lost partner leaves every other rank blocked in MPI for ever.
import AlexNet
import CMPI
import Foundation

/// The one blocking wait this process is in (MPI calls go one at a time): what, on which communicator, for whom.
struct BlockingWait {
    let operation: String             // "the tower exchange before conv3"
    let communicator: MPICommunicator
    let peer: Int?                    // the rank of `communicator` waited for; nil: a collective over the whole group
    let number: Int                   // counts the waits, so the watchdog knows a new one from an old one
}

public final class StallWatchdog: @unchecked Sendable {   // every mutable field is guarded by `lock`
    static let shared = StallWatchdog()

    private let lock = NSLock()       // never the MPI call lock: the wait that expires holds that one for ever
    private var current: BlockingWait? = nil
    private var waits = 0
    private var timeout = 0.0         // seconds; 0: not watching
    private var world: MPICommunicator? = nil
    private var started = false

    /// Starts watching this process's blocking MPI calls: a single one that lasts `seconds` prints one line and ends
    /// every rank (MPI_Abort). 0 turns the watchdog off. Call once, as soon as the world communicator exists.
    public static func start(seconds: Double, world: MPICommunicator) throws {
        guard seconds.isFinite, seconds >= 0 else {
            throw AlexNetError("--stall-timeout must be 0 (off) or a positive number of seconds (got \(seconds))")
        }
        shared.start(seconds: seconds, world: world)
    }

    private func start(seconds: Double, world: MPICommunicator) {
        let startsThread: Bool = lock.withLock {
            timeout = seconds
            self.world = world
            guard seconds > 0, !started else { return false }
            started = true
            return true
        }
        guard startsThread else { return }
        let t = Thread { [self] in watch(every: min(0.5, seconds / 10)) }
        t.name = "stall watchdog"
        t.start()
    }

    /// Records the wait `operation` has begun; false (and nothing recorded) if an outer wait is already recorded.
    func begin(_ operation: String, on communicator: MPICommunicator, peer: Int?) -> Bool {
        lock.withLock {
            guard current == nil else { return false }
            waits += 1
            current = BlockingWait(operation: operation, communicator: communicator, peer: peer, number: waits)
            return true
        }
    }

    func end() { lock.withLock { current = nil } }

    /// MPI_Finalize waits for every rank: watched as a collective over the world, once the watchdog knows it.
    func waitingInFinalize(_ body: () -> Void) {
        guard let world = lock.withLock({ self.world }) else { return body() }
        world.waiting(in: "MPI_Finalize at the end of the run", body)
    }

    /// Wakes every `interval` and adds the time since the last wake-up to the current wait's account, but at most
    /// two intervals: a process that was itself stopped (SIGSTOP, ^Z) and continued, or starved of CPU, does not
    /// blame its partner for the time it did not run.
    private func watch(every interval: Double) {
        var watched = 0, waited = 0.0            // the wait being timed (its number) and its seconds so far
        var last = PhaseClock.now()
        while true {
            Thread.sleep(forTimeInterval: interval)
            let now = PhaseClock.now()
            let tick = min(Double(now - last) * 1e-9, 2 * interval)
            last = now
            let expired: (BlockingWait, Double, MPICommunicator)? = lock.withLock {
                guard timeout > 0, let wait = current, let world else { return nil }
                if wait.number != watched { watched = wait.number; waited = 0 } else { waited += tick }
                return waited >= timeout ? (wait, timeout, world) : nil
            }
            if let (wait, seconds, world) = expired { expire(wait, after: seconds, world: world) }
        }
    }

    /// Prints why and ends the job. MPI_Abort needs no lock of ours (the main thread stays blocked inside MPI);
    /// should it not return or not end this process within 10 s, the process leaves by itself and mpirun, seeing a
    /// rank gone without MPI_Finalize, ends the others.
    private func expire(_ wait: BlockingWait, after seconds: Double, world: MPICommunicator) -> Never {
        let limit = String(format: "%g", seconds)
        let me = world.rank
        let whom: String
        if let peer = wait.peer {
            whom = "rank \(wait.communicator.worldRanks[peer]) (stopped, hung or much slower?)"
        } else {
            let others = wait.communicator.worldRanks.filter { $0 != me }
            whom = others.count == 1 ? "rank \(others[0]) (stopped, hung or much slower?)"
                : "ranks \(others.map(String.init).joined(separator: ", ")) (one of them stopped, hung or much slower?)"
        }
        let line = "alexnet-mpi: rank \(me): error: waited \(limit) s in \(wait.operation) for \(whom); stopping every rank (--stall-timeout \(limit))\n"
        FileHandle.standardError.write(line.data(using: .utf8)!)
        fflush(nil)                               // what rank 0 printed of its progress
        Thread { Thread.sleep(forTimeInterval: 10); _exit(1) }.start()
        MPI_Abort(shim_comm_world(), 1)
        _exit(1)
    }
}
