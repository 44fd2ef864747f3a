// What keeps a run from losing work: non-finite values stop every rank before anything is saved, a stop request
// saves and exits 0, output paths are checked before step 1, resumes keep their loss log and refuse silent changes,
// ranks agree on every option, and sizes are bounded before anything is allocated.
import AlexNet
import Foundation
import XCTest

/// A process started in the background, its output in files (read while it runs).
final class BackgroundProcess {
    let process = Process()
    let outFile: String, errFile: String
    let started = Date()

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        outFile = NSTemporaryDirectory() + "bg-\(getpid())-\(UUID().uuidString).out"
        errFile = outFile + ".err"
        FileManager.default.createFile(atPath: outFile, contents: nil)
        FileManager.default.createFile(atPath: errFile, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: outFile)
        process.standardError = FileHandle(forWritingAtPath: errFile)
        try process.run()
    }

    var out: String { (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? "" }
    var err: String { (try? String(contentsOfFile: errFile, encoding: .utf8)) ?? "" }

    /// Waits until `condition` holds (true) or `timeout` seconds pass (false).
    func wait(until condition: () -> Bool, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(50_000)
        }
        return condition()
    }

    /// Waits for the exit; returns its status, or nil (after killing the process) on timeout.
    func waitForExit(timeout: Double) -> Int32? {
        if wait(until: { !process.isRunning }, timeout: timeout) { process.waitUntilExit(); return process.terminationStatus }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        return nil
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(atPath: outFile); try? FileManager.default.removeItem(atPath: errFile)
    }
}

/// What mpirun needs here (root, no single-copy mechanism in a container).
let runGuardMPIEnvironment = ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                              "OMPI_MCA_btl_vader_single_copy_mechanism": "none"]

/// PIDs of the direct children of `pid` (mpirun's ranks).
func childProcesses(of pid: Int32) -> [Int32] {
    let r = runProcess("/usr/bin/pgrep", ["-P", "\(pid)"], timeout: 10)
    return r.out.split(separator: "\n").compactMap { Int32($0) }
}

final class RunGuardTests: XCTestCase {
    /// A small, quick run: W = 0.125, batch 8, one thread, on SmallData (no start-up statistics pass over the embedded
    /// set, and 16 held-out images to evaluate at the end instead of 1,000).
    var small: [String] { ["train", "--data", SmallData.path, "--width", "0.125", "--batch", "8", "--threads", "1"] }

    // MARK: In-process

    func testANonFiniteScoreIsAMissInTopK() {
        // Label 0 has NaN: a NaN compares false with everything, so without the guard nothing ranks above it.
        var z: [Float] = [.nan, 1, 2, 3, 4, 5, 6]
        XCTAssertFalse(SoftmaxCrossEntropy.inTopK(logits: &z, classes: 7, batch: 1, image: 0, label: 0, k: 1))
        XCTAssertFalse(SoftmaxCrossEntropy.inTopK(logits: &z, classes: 7, batch: 1, image: 0, label: 0, k: 7))
        // Another class NaN or infinite: the image's scores are not trustworthy, a miss too.
        z = [5, .nan, 1, 1, 1, 1, 1]
        XCTAssertFalse(SoftmaxCrossEntropy.inTopK(logits: &z, classes: 7, batch: 1, image: 0, label: 0, k: 1))
        z = [5, .infinity, 1, 1, 1, 1, 1]
        XCTAssertFalse(SoftmaxCrossEntropy.inTopK(logits: &z, classes: 7, batch: 1, image: 0, label: 0, k: 5))
        z = [5, 4, 1, 1, 1, 1, 1]
        XCTAssertTrue(SoftmaxCrossEntropy.inTopK(logits: &z, classes: 7, batch: 1, image: 0, label: 0, k: 1))
    }

    /// The SGD step's returned sum is the sum of the new weights, and non-finite when one weight is.
    func testTheUpdateReportsNonFiniteWeights() {
        let store = ParameterStore(config: ModelConfig(width: 0.0625, classes: 10), towers: 0..<2, threads: 2)
        store.initialiseHe(seed: 3)
        for i in 0..<store.count { store.gradients[i] = Float(i % 7) * 1e-3 }
        let sum = store.sgdStep(learningRate: 0.01, momentum: 0.9, weightDecay: 5e-4)
        let direct = (0..<store.count).reduce(0.0) { $0 + Double(store.values[$1]) }
        XCTAssertEqual(sum, direct, accuracy: 1e-3 * max(1, abs(direct)))
        XCTAssertNil(store.firstNonFiniteTensor())
        let fc7 = store.tensor("fc7.weight")
        store.gradients[fc7.offset + 5] = .infinity
        XCTAssertFalse(store.sgdStep(learningRate: 0.01, momentum: 0.9, weightDecay: 5e-4).isFinite)
        XCTAssertEqual(store.firstNonFiniteTensor(), "fc7.weight")
    }

    /// The memory estimate made before allocating equals what a model allocates, in every layout.
    func testTheMemoryEstimateMatchesTheAllocations() {
        for (width, classes, batch) in [(0.125, 10, 4), (0.0625, 7, 3), (0.25, 1000, 2)] {
            let config = ModelConfig(width: width, classes: classes)
            for towers in [0..<2, 0..<1, 1..<2] {
                for budget in [Convolution.defaultColumnBudget, 5000] {
                    let model = TwoTowerAlexNet(config: config, maxBatch: batch, exchange: FixedTowers(towers), columnBudget: budget)
                    XCTAssertEqual(TwoTowerAlexNet.floatsNeeded(config: config, maxBatch: batch, towers: towers, columnBudget: budget),
                                   model.allocatedFloats, "width \(width), towers \(towers), budget \(budget)")
                }
            }
        }
        // Absurd sizes are reported as not countable rather than wrapped.
        XCTAssertNil(MemoryBudget.bytes(config: ModelConfig(width: 1, classes: 1000), maxBatch: Int.max / 8, layout: .sequential,
                                        localTowers: 0..<2))
    }

    /// A stand-in exchange that only says which towers a model holds (the memory test never runs the model).
    final class FixedTowers: TowerExchange {
        let localTowers: Range<Int>
        init(_ towers: Range<Int>) { localTowers = towers }
        func allGather(_ buffer: UnsafeMutablePointer<Float>, offsets: [Int], at point: ExchangePoint) throws {}
        func reduceScatter(partials: [UnsafeMutablePointer<Float>], offsets: [Int], into destination: UnsafeMutablePointer<Float>,
                           at point: ExchangePoint) throws {}
    }

    func testAResumedLossLogKeepsTheStepsBeforeTheCheckpoint() throws {
        let path = Paths.temporaryDirectory("losslog") + "/loss.txt"
        try "0 2.5\n1 2.4\n2 2.3\n3 2.2\n".write(toFile: path, atomically: true, encoding: .utf8)
        let handle = try OutputFiles.openLossLog(path, firstStep: 2)
        handle.write("2 9.9\n".data(using: .utf8)!)
        try handle.close()
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "0 2.5\n1 2.4\n2 9.9\n")
        // A new run starts the log empty.
        try OutputFiles.openLossLog(path, firstStep: 0).close()
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "")
    }

    func testOutputPathsAreProbedWithoutLeavingFiles() throws {
        let dir = Paths.temporaryDirectory("probe")
        XCTAssertNoThrow(try OutputFiles.checkWritable(dir + "/m.safetensors", option: "--save"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "the probe left a file")
        XCTAssertThrowsError(try OutputFiles.checkWritable(dir + "/missing/m.safetensors", option: "--save")) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
        XCTAssertThrowsError(try OutputFiles.checkWritable(dir, option: "--save")) { XCTAssertTrue("\($0)".contains("is a folder"), "\($0)") }
    }

    // MARK: Through the binary, one process

    /// A blow-up stops with exit ≠ 0 before anything is saved: the last good checkpoint stays byte for byte.
    func testABlowUpStopsAndKeepsTheLastCheckpoint() throws {
        let dir = Paths.temporaryDirectory("blowup")
        let save = dir + "/m.safetensors"
        let first = runProcess(Paths.binary, small + ["--steps", "2", "--save", save], timeout: 300)
        XCTAssertEqual(first.status, 0, first.err)
        let before = try Data(contentsOf: URL(fileURLWithPath: save))
        for blowUp in [["--weight-decay", "inf"], ["--lr", "10", "--weight-decay", "1e38"]] {
            let r = runProcess(Paths.binary, small + ["--steps", "6", "--resume", save, "--save", save, "--save-every", "1"] + blowUp,
                               timeout: 300)
            XCTAssertNotEqual(r.status, 0, "a blow-up must not exit 0 (\(blowUp))")
            XCTAssertTrue(r.err.contains("training blew up at step 2"), r.err)
            XCTAssertTrue(r.err.contains("is kept as it was"), r.err)
            XCTAssertFalse(r.out.contains("top-1"), "no accuracy may be reported after a blow-up")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: save)), before, "the last good checkpoint changed")
        }
    }

    func testAnUnwritableSaveIsRefusedBeforeStepOne() {
        let r = runProcess(Paths.binary, small + ["--steps", "2", "--save", "/nonexistent-folder/m.safetensors"], timeout: 120)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("/nonexistent-folder"), r.err)
        XCTAssertFalse(r.out.contains("step "), "it trained before refusing:\n\(r.out)")
        let log = runProcess(Paths.binary, small + ["--steps", "2", "--loss-log", "/nonexistent-folder/loss.txt"], timeout: 120)
        XCTAssertNotEqual(log.status, 0)
        XCTAssertTrue(log.err.contains("--loss-log /nonexistent-folder/loss.txt"), log.err)
        XCTAssertFalse(log.out.contains("step "), "it trained before refusing:\n\(log.out)")
    }

    /// A resumed run continues its loss log (and writes the same losses as an uninterrupted run); a different seed is
    /// refused unless allowed, and the summary then names the change.
    func testResumeKeepsTheLossLogAndRefusesASilentSeedChange() throws {
        let dir = Paths.temporaryDirectory("resume")
        let whole = runProcess(Paths.binary, small + ["--steps", "4", "--loss-log", dir + "/whole.txt"], timeout: 300)
        XCTAssertEqual(whole.status, 0, whole.err)
        let half = runProcess(Paths.binary, small + ["--steps", "2", "--save", dir + "/m.safetensors", "--loss-log", dir + "/log.txt"],
                              timeout: 300)
        XCTAssertEqual(half.status, 0, half.err)
        let rest = runProcess(Paths.binary, small + ["--steps", "4", "--resume", dir + "/m.safetensors", "--loss-log", dir + "/log.txt"],
                              timeout: 300)
        XCTAssertEqual(rest.status, 0, rest.err)
        let resumed = readLosses(dir + "/log.txt"), uninterrupted = readLosses(dir + "/whole.txt")
        XCTAssertEqual(resumed.count, 4, "the resumed log must hold steps 0–3")
        XCTAssertEqual(resumed, uninterrupted)

        let seed = runProcess(Paths.binary, small + ["--steps", "4", "--resume", dir + "/m.safetensors", "--seed", "9"], timeout: 120)
        XCTAssertNotEqual(seed.status, 0)
        XCTAssertTrue(seed.err.contains("--seed 1 → 9") && seed.err.contains("--resume-allow-changes seed"), seed.err)
        let allowed = runProcess(Paths.binary, small + ["--steps", "3", "--resume", dir + "/m.safetensors", "--seed", "9",
                                                        "--resume-allow-changes", "seed"], timeout: 300)
        XCTAssertEqual(allowed.status, 0, allowed.err)
        XCTAssertTrue(allowed.out.contains("resumed with changes: --seed 1 → 9"), allowed.out)
    }

    /// SIGTERM: the step finishes, --save is written at that step, exit 0, no evaluation.
    func testSIGTERMSavesAndExitsZero() throws {
        let dir = Paths.temporaryDirectory("sigterm")
        let run = try BackgroundProcess(Paths.binary, small + ["--steps", "100000", "--save", dir + "/m.safetensors"])
        XCTAssertTrue(run.wait(until: { run.out.contains("step     1/") }, timeout: 120), "no first step:\n\(run.out)\n\(run.err)")
        kill(run.process.processIdentifier, SIGTERM)
        XCTAssertEqual(run.waitForExit(timeout: 60), 0, run.err)
        XCTAssertTrue(run.out.contains("stopped at step"), run.out)
        let state = try XCTUnwrap(try Checkpoint.load(dir + "/m.safetensors",
                                                      into: ParameterStore(config: ModelConfig(width: 0.125, classes: 10), towers: 0..<2)))
        XCTAssertGreaterThanOrEqual(state.step, 1)
        XCTAssertLessThan(state.step, 100000)
    }

    /// A second signal does not wait for the step: the process ends at once, with 128 + the signal.
    func testASecondSignalStopsAtOnce() throws {
        // Steps of a few seconds, so that both signals (apart enough not to merge into one) land inside one step.
        let run = try BackgroundProcess(Paths.binary, ["train", "--data", SmallData.path, "--width", "0.5", "--batch", "64", "--threads", "1",
                                                       "--steps", "100000"])
        XCTAssertTrue(run.wait(until: { run.out.contains("step     1/") }, timeout: 300), "no first step:\n\(run.out)\n\(run.err)")
        kill(run.process.processIdentifier, SIGINT)
        usleep(300_000)
        kill(run.process.processIdentifier, SIGINT)
        XCTAssertEqual(run.waitForExit(timeout: 20), 128 + SIGINT)
        XCTAssertFalse(run.out.contains("stopped at step"), "the second signal waited for the step")
    }

    func testAbsurdSizesAreRefusedBeforeAllocating() {
        for args in [["--width", "1e9"], ["--batch", "10000000"], ["--classes", "1"], ["--epochs", "0"],
                     ["--width", "16", "--batch", "60000"]] {
            let start = Date()
            let r = runProcess(Paths.binary, ["train", "--steps", "1"] + args, timeout: 120)
            let seconds = Date().timeIntervalSince(start)
            XCTAssertNotEqual(r.status, 0, "\(args) was accepted")
            // One line that names the setting (argument errors are followed by ArgumentParser's usage lines).
            let first = r.err.split(separator: "\n").first.map(String.init) ?? ""
            XCTAssertTrue(["--width", "--batch", "--classes", "--epochs"].contains { first.contains($0) }, "\(args): \(r.err)")
            XCTAssertFalse(r.out.contains("step "), "\(args) trained")
            XCTAssertLessThan(seconds, 60, "\(args) took \(seconds) s to refuse")
        }
    }

    // MARK: Under mpirun

    /// Ranks started with different --save-every (or --ten-crop) refuse together, naming the option.
    func testRanksWithDifferentOptionsRefuseTogether() throws {
        let dir = Paths.temporaryDirectory("mismatch")
        for (a, b, name) in [(["--save-every", "2"], ["--save-every", "3"], "--save-every"), ([], ["--ten-crop"], "--ten-crop")] {
            let common = small + ["--steps", "4", "--save", dir + "/m.safetensors"]
            let r = mpirun(["-np", "1", Paths.binary] + common + a + [":", "-np", "1", Paths.binary] + common + b, timeout: 120)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.err.contains(name) && r.err.contains("rank 0 has") && r.err.contains("rank 1 has"), r.err)
            XCTAssertLessThan(r.seconds, 10, "refusing took \(r.seconds) s (the issue asks for 10)")
        }
    }

    /// SIGTERM to one rank: both finish the step, the checkpoint is written, every rank exits 0.
    func testSIGTERMToOneRankStopsEveryRankCleanly() throws {
        let dir = Paths.temporaryDirectory("mpi-sigterm")
        let run = try BackgroundProcess(MPI.launcher, ["--oversubscribe", "-np", "2", Paths.binary] + small
                                        + ["--steps", "100000", "--save", dir + "/m.safetensors"], environment: runGuardMPIEnvironment)
        XCTAssertTrue(run.wait(until: { run.out.contains("step     1/") }, timeout: 120), "no first step:\n\(run.out)\n\(run.err)")
        let ranks = childProcesses(of: run.process.processIdentifier)
        XCTAssertEqual(ranks.count, 2, "expected mpirun's two ranks")
        guard let rank = ranks.last else { return }
        kill(rank, SIGTERM)
        XCTAssertEqual(run.waitForExit(timeout: 60), 0, run.err)
        XCTAssertTrue(run.out.contains("stopped at step"), run.out)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/m.safetensors"))
    }

    /// A blow-up under model parallelism stops both ranks with exit ≠ 0 and a message naming the step.
    func testABlowUpStopsEveryRank() {
        let dir = Paths.temporaryDirectory("mpi-blowup")
        let r = mpirun(["-np", "2", Paths.binary] + small + ["--steps", "3", "--weight-decay", "inf", "--save", dir + "/m.safetensors"],
                       timeout: 120)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("training blew up at step 0"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m.safetensors"), "a non-finite checkpoint was written")
        XCTAssertLessThan(r.seconds, 60)
    }
}

/// The data-parallel gradient allreduce with its progress thread, under mpirun on the fixture's four images: a plain
/// test in the release build, and the race check when the test command runs it from the ThreadSanitizer build (whose
/// alexnet-mpi is instrumented too: a race makes it report and exit non-zero).
final class ProgressThreadTests: XCTestCase {
    func testDataParallelTrainingWithTheProgressThread() throws {
        let dir = Paths.temporaryDirectory("progress-thread")
        let r = mpirun(["-np", "2", Paths.binary, "train", "--mode", "data", "--gradient-sum", "allreduce", "--data", Paths.fixture, "--batch", "4", "--steps", "3",
                        "--width", "0.125", "--classes", "10", "--threads", "1", "--no-augment",
                        "--loss-log", dir + "/loss.txt"], timeout: 600)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertFalse(r.err.contains("ThreadSanitizer"), r.err)
        XCTAssertEqual(readLosses(dir + "/loss.txt").count, 3)
        XCTAssertTrue(r.out.contains("gradient allreduce"), r.out)
    }
}
