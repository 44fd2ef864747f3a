// The batch prefetcher (the next step's batch assembled on a background thread): the same numbers as assembling each
// batch when its step starts, across epochs and a resume; errors and stops end the thread and reach the training thread.
import AlexNet
import Foundation
import XCTest

final class PrefetchTests: XCTestCase {
    /// 40 training images: 5 steps of 8 an epoch, so a dozen steps cross two epoch boundaries (a new shuffle).
    func splits(seed: UInt64 = 3) -> DataSplits {
        DataSplits(train: EmbeddedShapes(seed: seed, heldOut: false, count: 40), heldOut: EmbeddedShapes(seed: seed, heldOut: true, count: 20),
                   heldOutIsTrainingSet: false, classes: 10, description: "40 + 20 embedded shapes", statisticsSamples: 40)
    }

    func settings(prefetch: Bool, steps: Int = 12, layout: ReplicaLayout = .threadedTowers) -> TrainingSettings {
        var s = TrainingSettings()
        s.model = ModelConfig(width: 0.0625, classes: 10, dropout: 0.5)
        s.batch = 8
        s.steps = steps
        s.seed = 3
        s.augment = true
        s.initialisation = .he
        s.layout = layout
        s.threadsPerModel = 1
        // Threaded towers: the command line's 2 cores (the background thread and the training thread assemble what
        // is late); one model: 3, so that two helpers (concurrentPerform) join the background thread.
        s.dataThreads = layout == .threadedTowers ? 2 : 3
        s.progressEvery = 1e9
        s.prefetch = prefetch
        return s
    }

    func trainer(_ s: TrainingSettings) throws -> Trainer {
        let t = try Trainer(settings: s, data: splits())
        t.log = { _ in }
        return t
    }

    /// Threads of this process named like the prefetcher's (from /proc/self/task/*/comm).
    func prefetchThreads() -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter {
            (try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == BatchPrefetcher.threadName
        }.count
    }

    /// Runs body on another thread and fails the test (instead of hanging the suite) if it has not returned in time.
    func within<T>(_ seconds: Double, _ what: String, _ body: @escaping () throws -> T) -> Result<T, Error>? {
        let box = HandOff(body), done = DispatchSemaphore(value: 0)
        let thread = Thread { box.result = Result { try box.body!() }; done.signal() }
        thread.stackSize = 16 << 20
        thread.start()
        guard done.wait(timeout: .now() + seconds) == .success else {
            XCTFail("\(what) did not return within \(seconds) s (a hang)")
            return nil
        }
        return box.result
    }

    /// Acceptance: training with the prefetcher gives bit-identical per-step losses, weights, momentum and held-out
    /// accuracy to assembling each batch when its step starts (augmentation and dropout on, two epoch boundaries),
    /// with threaded towers and with one model.
    func testPrefetchTrainsBitIdenticalNumbers() throws {
        for layout in [ReplicaLayout.threadedTowers, .sequential] {
            let off = try trainer(settings(prefetch: false, layout: layout)), on = try trainer(settings(prefetch: true, layout: layout))
            let a = try off.run(), b = try on.run()
            XCTAssertEqual(a.losses.count, 12)
            XCTAssertTrue(a.losses.allSatisfy { $0.isFinite }, "\(a.losses)")
            XCTAssertEqual(b.losses, a.losses, "\(layout): losses differ with prefetch")
            XCTAssertTrue(on.replica.wholeModel() == off.replica.wholeModel(), "\(layout): weights differ with prefetch")
            XCTAssertTrue(on.replica.wholeModel(momentum: true) == off.replica.wholeModel(momentum: true), "\(layout): momentum differs")
            XCTAssertEqual(b.top1, a.top1, "\(layout): held-out top-1 differs (evaluation after prefetch)")
            XCTAssertEqual(b.top5, a.top5)
            XCTAssertEqual(off.assembledAhead.images, 0, "no background thread without prefetch")
            XCTAssertEqual(prefetchThreads(), 0, "the background thread outlived run()")
        }
    }

    /// The background thread's images are bit-identical to the synchronous assembler's, land in the buffer of the
    /// step's parity (the caller's input for even steps, the spare for odd ones), and leave the other untouched.
    func testBackgroundThreadAssemblesTheSameImages() throws {
        let data = splits(), n = 8, floats = 3 * n * 227 * 227
        let assembler = BatchAssembler(training: data.train, seed: 3, sampleLimit: 40)
        let indices = [39, 4, 17, 0, 22, 8, 31, 13], epoch = 2
        let expected = UnsafeMutablePointer<Float>.allocate(capacity: floats), input = UnsafeMutablePointer<Float>.allocate(capacity: floats)
        defer { expected.deallocate(); input.deallocate() }
        input.initialize(repeating: -7, count: floats)
        let labels = assembler.assemble(data.train, indices: indices, epoch: epoch, augment: true, into: expected)
        let p = BatchPrefetcher(assembler: assembler, dataset: data.train, augment: true, input: input, capacity: floats, threads: 2)
        defer { p.stop() }
        p.prefetch(step: 7, epoch: epoch, indices: indices)
        // Let the background thread do the whole batch before the step asks for it.
        let deadline = Date().addingTimeInterval(120)
        while p.background.images < n && Date() < deadline { usleep(2_000) }
        XCTAssertEqual(p.background.images, n, "the background thread did not assemble the batch within 120 s")
        XCTAssertGreaterThan(p.background.seconds, 0)
        let batch = try p.take(step: 7)
        XCTAssertEqual(batch.labels, labels)
        XCTAssertNotEqual(batch.input, input, "an odd step goes to the spare buffer")
        XCTAssertTrue(memcmp(batch.input, expected, floats * 4) == 0, "background images differ from the synchronous ones")
        XCTAssertTrue((0..<floats).allSatisfy { input[$0] == -7 }, "the other buffer was written")
        // The next step goes to the caller's buffer, assembled by whichever thread gets there first.
        p.prefetch(step: 8, epoch: epoch, indices: indices)
        let next = try p.take(step: 8)
        XCTAssertEqual(next.input, input)
        XCTAssertTrue(memcmp(input, expected, floats * 4) == 0)
        XCTAssertThrowsError(try p.take(step: 9), "a step that was not prefetched") {
            XCTAssertTrue("\($0)".contains("step 9"), "\($0)")
        }
        p.stop()
        XCTAssertEqual(prefetchThreads(), 0, "stop() returned before the thread ended")
    }

    /// An error thrown while the background thread assembles a batch stops training at that batch's step, on the
    /// training thread, with the error's message; no thread is left behind and nothing hangs.
    func testErrorOnTheBackgroundThreadReachesTheTrainingThread() throws {
        let t = try trainer(settings(prefetch: true, steps: 10))
        final class Seen: @unchecked Sendable {
            let lock = NSLock(); var calls: [(step: Int, thread: String?)] = []
            func add(_ step: Int) { lock.withLock { calls.append((step, Thread.current.name)) } }
            func saw(_ step: Int) -> Bool { lock.withLock { calls.contains { $0.step == step } } }
        }
        let seen = Seen()
        t.beforeAssembling = { step in
            seen.add(step)
            if step == 3 { throw AlexNetError("images.npy: read failed for the batch of step \(step)") }
        }
        // Step 3's batch is begun by the background thread while step 2 trains: before step 3 asks for it, wait until
        // the hook has run (so the error is the background thread's, however the threads are scheduled).
        var threadsDuring = -1
        t.beforeStep = { step in
            guard step == 3 else { return }
            let deadline = Date().addingTimeInterval(60)
            while !seen.saw(3) && Date() < deadline { usleep(1_000) }
            threadsDuring = self.prefetchThreads()
        }
        var trained: [Int] = []
        t.afterUpdate = { trained.append($0) }
        guard let outcome = within(120, "run() after a background error", { try t.run() }) else { return }
        guard case .failure(let error) = outcome else { return XCTFail("training went on after the error") }
        XCTAssertEqual("\(error)", "images.npy: read failed for the batch of step 3")
        XCTAssertEqual(trained, [0, 1, 2], "steps trained before the failing batch")
        let calls = seen.lock.withLock { seen.calls }
        XCTAssertEqual(calls.map(\.step), [0, 1, 2, 3], "a batch past the failing one was begun")
        XCTAssertEqual(calls.last?.thread, BatchPrefetcher.threadName, "step 3's batch was not begun on the background thread")
        XCTAssertEqual(threadsDuring, 1, "one background thread while training (as /proc names it)")
        XCTAssertEqual(prefetchThreads(), 0, "the background thread outlived the error")
    }

    /// A stop request and a blow-up end the run with the background thread (which was assembling the next batch).
    func testStopsEndTheBackgroundThread() throws {
        let t = try trainer(settings(prefetch: true, steps: 10))
        var steps = 0
        t.afterUpdate = { _ in steps += 1 }
        t.stopRequested = { steps >= 4 }
        guard case .success(let summary)? = within(120, "a stopped run", { try t.run() }) else { return XCTFail("the stopped run failed") }
        XCTAssertEqual(summary.stoppedAtStep, 4)
        XCTAssertEqual(summary.losses.count, 4)
        XCTAssertEqual(prefetchThreads(), 0, "the background thread outlived a stop request")

        var s = settings(prefetch: true, steps: 10)
        s.learningRate = 1e30   // the first updates overflow
        let blown = try trainer(s)
        guard case .failure(let error)? = within(120, "a blown-up run", { try blown.run() }) else { return XCTFail("no blow-up") }
        XCTAssertTrue(error is AgreedStop && "\(error)".contains("training blew up at step"), "\(error)")
        XCTAssertEqual(prefetchThreads(), 0, "the background thread outlived a blow-up")
    }

    /// Acceptance: resuming from a checkpoint with prefetch (the first batch an odd step's, into the spare buffer;
    /// an epoch boundary after it) continues with the losses and weights of the uninterrupted run.
    func testResumeWithPrefetchGivesTheSameLosses() throws {
        let whole = try trainer(settings(prefetch: false))
        let reference = try whole.run()
        let path = Paths.temporaryDirectory("prefetch-resume") + "/c.safetensors"
        var first = settings(prefetch: true, steps: 7)
        first.save = path
        let head = try trainer(first).run()
        XCTAssertEqual(head.losses, Array(reference.losses[0..<7]))
        var rest = settings(prefetch: true)
        rest.resume = path
        let resumed = try trainer(rest)
        XCTAssertEqual(resumed.firstStep, 7)
        let tail = try resumed.run()
        XCTAssertEqual(tail.losses, Array(reference.losses[7..<12]), "resumed losses differ from the uninterrupted run's")
        XCTAssertTrue(resumed.replica.wholeModel() == whole.replica.wholeModel(), "weights after resuming differ")
    }
}

/// A body run on another thread and its result, read only after that thread signals (or never, after a timeout).
final class HandOff<T>: @unchecked Sendable {
    var body: (() throws -> T)?
    var result: Result<T, Error>?
    init(_ body: @escaping () throws -> T) { self.body = body }
}

/// The prefetcher under mpirun: model, data and hybrid layouts train the numbers of --no-prefetch (each rank
/// assembling its share of the batch ahead), and an error on a rank's background thread stops the job.
final class PrefetchUnderMPITests: ProcessTestCase {
    override class var needsMPI: Bool { true }

    /// Acceptance: in every layout, bit-identical losses and weights with and without prefetch, over a NumPy set of
    /// 48 images (4 steps of 12 an epoch: 10 steps cross two epoch boundaries).
    func testEveryLayoutTrainsTheSameNumbersWithPrefetch() throws {
        let dir = Paths.temporaryDirectory("prefetch-mpi")
        let export = runProcess(Paths.binary, ["export-embedded", "--out", dir + "/set", "--count", "48"])
        XCTAssertEqual(export.status, 0, export.err)
        let common = ["train", "--data", dir + "/set", "--width", "0.0625", "--batch", "12", "--steps", "10", "--seed", "2",
                      "--threads", "1"]
        for (mode, n) in [("model", 2), ("data", 2), ("hybrid", 4)] {
            var runs: [(losses: String, weights: Data)] = []
            for prefetch in [true, false] {
                let tag = "\(mode)-\(prefetch)"
                let r = mpirun(["-np", "\(n)", Paths.binary] + common + ["--mode", mode, "--loss-log", dir + "/\(tag).txt",
                               "--save", dir + "/\(tag).safetensors"] + (prefetch ? [] : ["--no-prefetch"]), timeout: 300)
                XCTAssertEqual(r.status, 0, "\(tag): " + r.err + r.out)
                XCTAssertEqual(r.out.contains("assembled ahead"), prefetch, "\(tag): the data line:\n\(r.out)")
                runs.append(((try? String(contentsOfFile: dir + "/\(tag).txt", encoding: .utf8)) ?? "",
                             FileManager.default.contents(atPath: dir + "/\(tag).safetensors") ?? Data()))
            }
            XCTAssertEqual(runs[0].losses.split(separator: "\n").count, 10, "\(mode): losses logged")
            XCTAssertEqual(runs[0].losses, runs[1].losses, "\(mode): losses differ with prefetch")
            XCTAssertFalse(runs[0].weights.isEmpty)
            XCTAssertTrue(runs[0].weights == runs[1].weights, "\(mode): saved weights differ with prefetch")
        }
    }

    /// An error on rank 0's background thread (assembling the batch of step 3) is reported naming the rank, and
    /// stops both ranks (no hang; rank 1 is left waiting in step 3's allreduce) after the steps before it.
    func testBackgroundErrorOnOneRankStopsTheJob() {
        let log = Paths.temporaryDirectory("prefetch-mpi-fail") + "/losses.txt"
        let r = mpirun(["-np", "2", Paths.binary, "train", "--mode", "data", "--data", SmallData.path, "--width", "0.0625", "--batch", "8",
                        "--steps", "10",
                        "--threads", "1", "--loss-log", log, "--debug-fail-rank", "0", "--debug-fail-step", "3",
                        "--debug-fail-kind", "assemble"], timeout: 120)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("rank 0: error: injected failure assembling the batch of step 3"), r.err)
        XCTAssertLessThan(r.seconds, 120, "the job hung")
        XCTAssertEqual(readLosses(log).count, 3, "steps 0–2 train (rank 0 logs each before the next batch), step 3 does not")
    }
}
