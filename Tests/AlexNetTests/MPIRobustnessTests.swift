// Long and broken runs under mpirun: message tags that stay small however many steps a run has, a stopped rank that
// ends the whole job through the stall watchdog (--stall-timeout) instead of hanging it, and two towers that are
// at different steps caught at their first exchange.
import AlexNet
import Foundation
import XCTest

final class MPIRobustnessTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: Paths.binary), "build alexnet-mpi first (.ci/run does)")
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: MPI.launcher), "mpirun is missing: ./install.sh installs openmpi-bin")
    }

    /// 16 embedded images as a NumPy set without held-out/ (evaluated on themselves): start-up and evaluation are quick.
    func tinyDataset(_ dir: String) -> String {
        let path = dir + "/tiny"
        let r = runProcess(Paths.binary, ["export-embedded", "--out", path, "--count", "16"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.err)
        return path
    }

    /// Options every run here shares: the tiny set, W = 0.25, 10 classes, 4 images a step, one thread a rank.
    func small(_ data: String) -> [String] { ["--data", data, "--width", "0.25", "--classes", "10", "--batch", "4", "--threads", "1"] }

    /// A checkpoint of width 0.25 after one real step, copied with its training state moved to each of
    /// `steps` (through the library's Checkpoint API: weights and momentum loaded, saved with a new TrainingState).
    func checkpoints(at steps: [Int], in dir: String, data: String) throws -> [String] {
        let base = dir + "/one-step.safetensors"
        let r = runProcess(Paths.binary, ["train", "--steps", "1", "--save", base] + small(data), timeout: 120)
        XCTAssertEqual(r.status, 0, r.err)
        let store = ParameterStore(config: ModelConfig(width: 0.25, classes: 10), towers: 0..<2)
        let state = try XCTUnwrap(try Checkpoint.load(base, into: store, momentum: true), "no training state in \(base)")
        XCTAssertEqual(state.step, 1)
        return try steps.map { step in
            let path = dir + "/at-\(step).safetensors"
            try Checkpoint.save(store, state: TrainingState(step: step, seed: state.seed, learningRate: state.learningRate,
                                                            model: state.model), to: path)
            return path
        }
    }

    /// Acceptance: a model-parallel run resumed at step 600,000 trains. Tags once grew with the step (16 a step):
    /// beyond 32,767 (the MPI standard's minimum MPI_TAG_UB) at step 2,048. To catch that where MPI_TAG_UB is 2^31 − 1
    /// (Open MPI's default ob1 transport), the run uses libfabric's transport in its 20-bit tag mode: MPI_TAG_UB
    /// 524,287, as on some real networks.
    func testModelParallelRunResumedAtStep600000Trains() throws {
        let dir = Paths.temporaryDirectory("tags")
        let data = tinyDataset(dir)
        let resume = try checkpoints(at: [600_000], in: dir, data: data)[0]
        let job = ["-np", "2", Paths.binary, "train", "--resume", resume, "--steps", "600002", "--loss-log", dir + "/losses.txt"] + small(data)
        var r = mpirun(["--mca", "pml", "cm", "--mca", "mtl", "ofi", "--mca", "mtl_ofi_tag_mode", "ofi_tag_2"] + job, timeout: 180)
        if r.status != 0 && (r.err + r.out).contains("cannot be selected") {
            print("libfabric's MPI transport is not available here; resuming at step 600,000 on the default transport")
            r = mpirun(job, timeout: 180)
        }
        XCTAssertEqual(r.status, 0, r.err + r.out)
        XCTAssertTrue(r.out.contains("at step 600000"), r.out)
        XCTAssertTrue(r.out.contains("step 600002/600002"), r.out)
        let steps = ((try? String(contentsOfFile: dir + "/losses.txt", encoding: .utf8)) ?? "").split(separator: "\n")
            .compactMap { $0.split(separator: " ").first.flatMap { Int($0) } }
        XCTAssertEqual(steps, [600_000, 600_001], "the loss log should hold the two resumed steps")
    }

    /// Acceptance: a model-parallel rank that is stopped (kill -STOP) ends the job after --stall-timeout: its
    /// partner names the exchange point and the stopped rank, and every rank and mpirun are gone.
    func testAStoppedRankEndsTheModelParallelJob() throws {
        let dir = Paths.temporaryDirectory("stall-model")
        let data = tinyDataset(dir)
        try stopRankOne(of: ["train", "--mode", "model", "--width", "0.125", "--steps", "100000", "--stall-timeout", "5"] + small(data),
                        in: dir, timeout: 5, within: 25) { line in
            // The partner is caught in a tower exchange (naming its point) or, between steps, in the end-of-step
            // agreement (where a single CPU shared by both ranks often leaves it).
            XCTAssertTrue(line.contains(" for rank 1 "), line)
            let inExchange = line.contains("in the tower exchange ")
                && ExchangePoint.allCases.contains { line.contains("tower exchange \($0.name) ") || line.contains("tower exchange at \($0.name) ") }
            XCTAssertTrue(inExchange || line.contains("in the end-of-step agreement"), "the point is not named: \(line)")
        }
    }

    /// Acceptance: the same for a data-parallel rank: its replica names the point it waits in and the stopped rank.
    func testAStoppedRankEndsTheDataParallelJob() throws {
        let dir = Paths.temporaryDirectory("stall-data")
        let data = tinyDataset(dir)
        try stopRankOne(of: ["train", "--mode", "data", "--width", "0.125", "--steps", "100000", "--stall-timeout", "5"] + small(data),
                        in: dir, timeout: 5, within: 25) { line in
            // The replica is caught at the barrier before or after the shared update (the gradient sum on one
            // node), in the loss sum after it or, between steps, in the end-of-step agreement: which one depends on
            // where the stop lands in the step (as for model parallelism above; fresh-clone runs have caught it in
            // each). Whichever it is, it must be named, never a bare "a barrier (MPI_Barrier)".
            XCTAssertTrue(line.contains(" for rank 1 "), line)
            let points = ["in the barrier before the shared update (every replica's backward done) for rank 1 ",
                          "in the barrier after the shared update (every share written) for rank 1 ",
                          "in the sum of the batch's loss over the replicas for rank 1 ", "in the end-of-step agreement"]
            XCTAssertTrue(points.contains { line.contains($0) }, "the point is not named: \(line)")
        }
    }

    /// Acceptance: ranks that resumed from different files (one at step 600,000, one at 600,001: the same relative
    /// --resume path in two working directories, so the settings handshake sees no difference) stop at their first
    /// exchange, naming both steps and the point, instead of trading mismatched data or waiting for ever.
    func testTowersAtDifferentStepsAreCaught() throws {
        let dir = Paths.temporaryDirectory("desync")
        let data = tinyDataset(dir)
        let files = try checkpoints(at: [600_000, 600_001], in: dir, data: data)
        var job: [String] = []
        for (rank, file) in files.enumerated() {
            let folder = dir + "/rank\(rank)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try FileManager.default.moveItem(atPath: file, toPath: folder + "/resume.safetensors")
            job += (rank == 0 ? [] : [":"]) + ["-np", "1", "--wdir", folder, Paths.binary, "train", "--resume", "resume.safetensors",
                                               "--steps", "600003"] + small(data)
        }
        let r = mpirun(job, timeout: 60)
        XCTAssertNotEqual(r.status, 0, r.out)
        XCTAssertLessThan(r.seconds, 30, "the mismatch should stop the job at once")
        XCTAssertTrue(r.err.contains("out of step: rank 0 is at step 600000 in the tower exchange before conv3, but its partner rank 1 is at step 600001"),
                      r.err)
        XCTAssertFalse(r.out.contains("step 600001/"), "no step may complete:\n\(r.out)")
    }

    /// The same for data parallelism, in shared memory and with the allreduce: nothing would catch it later (rank 1's
    /// weights would go into the one shared copy, or be overwritten by rank 0's, while it trained on its own step's
    /// shard and schedule), so the replicas compare their first steps at start-up, and every rank refuses.
    func testReplicasAtDifferentStepsAreRefusedAtStartUp() throws {
        let dir = Paths.temporaryDirectory("desync-data")
        let data = tinyDataset(dir)
        let files = try checkpoints(at: [600_000, 600_001], in: dir, data: data)
        for (rank, file) in files.enumerated() {
            let folder = dir + "/rank\(rank)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try FileManager.default.moveItem(atPath: file, toPath: folder + "/resume.safetensors")
        }
        for sum in ["shared-memory", "allreduce"] {
            var job: [String] = []
            for rank in 0..<2 {
                job += (rank == 0 ? [] : [":"]) + ["-np", "1", "--wdir", dir + "/rank\(rank)", Paths.binary, "train", "--mode", "data",
                                                   "--gradient-sum", sum, "--resume", "resume.safetensors", "--steps", "600003"] + small(data)
            }
            let r = mpirun(job, timeout: 60)
            XCTAssertNotEqual(r.status, 0, "\(sum): \(r.out)")
            XCTAssertLessThan(r.seconds, 30, "\(sum): the mismatch should stop the job at once")
            XCTAssertTrue(r.err.contains("the replicas would start at different steps (rank 0 at step 600000, rank 1 at step 600001)"), "\(sum): \(r.err)")
            XCTAssertFalse(r.out.contains("step 600001/"), "\(sum): no step may complete:\n\(r.out)")
        }
    }

    /// Starts `arguments` under `mpirun -np 2`, waits for its first step, stops rank 1 (SIGSTOP), and checks that
    /// rank 0 gives up after `timeout` seconds (not before) and that mpirun and both ranks are gone within `within`
    /// seconds of the stop; `check` gets rank 0's error line. Kills whatever is left, whatever happens. The tests give
    /// --stall-timeout 5: over a hundred of these runs' steps (~40 ms), so no healthy wait comes near it, while the
    /// test waits out the timeout itself only once.
    func stopRankOne(of arguments: [String], in dir: String, timeout: Double, within: Double,
                     check: (String) -> Void, file: StaticString = #filePath, line: UInt = #line) throws {
        let job = try BackgroundJob(MPI.launcher, ["--oversubscribe", "-np", "2", Paths.binary] + arguments, in: dir)
        var ranks: [Int: pid_t] = [:]
        defer {
            for pid in ranks.values where BackgroundJob.isAlexNet(pid) { kill(pid, SIGKILL) }
            job.kill()
        }
        let started = Date()
        while !job.output.contains("step     1/") && job.isRunning && Date().timeIntervalSince(started) < 180 { usleep(100_000) }
        ranks = job.childRanks()
        guard job.output.contains("step     1/"), let stopped = ranks[1], ranks[0] != nil else {
            return XCTFail("the job did not start training with two ranks (\(ranks)):\n\(job.output)\n\(job.errors)", file: file, line: line)
        }
        XCTAssertEqual(kill(stopped, SIGSTOP), 0, file: file, line: line)
        let stop = Date()
        while job.isRunning && Date().timeIntervalSince(stop) < within + 20 { usleep(100_000) }
        let seconds = Date().timeIntervalSince(stop)
        XCTAssertFalse(job.isRunning, "mpirun still runs \(Int(seconds)) s after rank 1 was stopped", file: file, line: line)
        XCTAssertLessThan(seconds, within, "the job took \(seconds) s to end after rank 1 was stopped", file: file, line: line)
        XCTAssertGreaterThan(seconds, timeout - 1, "the job ended before --stall-timeout \(timeout) had passed", file: file, line: line)
        usleep(500_000)
        for (rank, pid) in ranks.sorted(by: { $0.key < $1.key }) {
            XCTAssertTrue(BackgroundJob.isGone(pid), "rank \(rank) (pid \(pid)) is still alive", file: file, line: line)
        }
        let errors = job.errors
        let report = errors.split(separator: "\n").first { $0.contains("rank 0: error: waited") }.map(String.init)
        guard let report else { return XCTFail("rank 0 printed no stall report:\n\(errors)", file: file, line: line) }
        let limit = String(format: "%g", timeout)
        XCTAssertTrue(report.hasPrefix("alexnet-mpi: rank 0: error: waited \(limit) s in ") && report.hasSuffix("(--stall-timeout \(limit))"),
                      report, file: file, line: line)
        check(report)
    }
}

/// mpirun started in the background with its output in files, so that a test can act on its ranks while it runs.
final class BackgroundJob {
    let process = Process()
    let outPath: String, errPath: String

    init(_ executable: String, _ arguments: [String], in dir: String) throws {
        outPath = dir + "/job.out"
        errPath = dir + "/job.err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                       "OMPI_MCA_btl_vader_single_copy_mechanism": "none"] { env[k] = v }
        process.environment = env
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        try process.run()
    }

    var isRunning: Bool { process.isRunning }
    var output: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
    var errors: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

    /// mpirun's child processes by MPI rank (OMPI_COMM_WORLD_RANK in their environment), from /proc.
    func childRanks() -> [Int: pid_t] {
        var ranks: [Int: pid_t] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), Self.parent(of: pid) == process.processIdentifier,
                  let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            for variable in environment.split(separator: 0) {
                let text = String(decoding: variable, as: UTF8.self)
                if text.hasPrefix("OMPI_COMM_WORLD_RANK="), let rank = Int(text.dropFirst("OMPI_COMM_WORLD_RANK=".count)) {
                    ranks[rank] = pid
                }
            }
        }
        return ranks
    }

    /// /proc/pid/stat: "pid (name) state ppid ...": the fields after the last ')'.
    static func statFields(_ pid: pid_t) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    static func parent(of pid: pid_t) -> pid_t? { statFields(pid).flatMap { $0.count > 1 ? pid_t($0[1]) : nil } }

    /// No such process, or only its exit status is left (a zombie whose new parent does not reap it).
    static func isGone(_ pid: pid_t) -> Bool {
        guard let fields = statFields(pid), let state = fields.first else { return true }
        return state == "Z" || state == "X"
    }

    /// A live process of this binary (so that cleanup never kills a process that reused a rank's pid).
    static func isAlexNet(_ pid: pid_t) -> Bool {
        !isGone(pid) && ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").contains("alexnet-mpi")
    }

    func kill() {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
