// Checkpoint folders for long runs: step-numbered files, a `latest` pointer, the newest kept; resuming takes the newest
// that verifies; a run resumed from its folder equals one that never stopped, in one process and under mpirun (model
// and data), also after SIGKILLs at random moments, several of them during checkpoint writes.
import AlexNet
import Foundation
import XCTest

final class CheckpointDirectoryTests: ProcessTestCase {
    override class var needsMPI: Bool { true }

    func testCommitKeepsTheNewestAndPointsLatestAtTheLastOne() throws {
        let dir = CheckpointDirectory(path: Paths.temporaryDirectory("checkpoint-folder") + "/run", keep: 2)
        try dir.prepare()
        for step in [5, 10, 15] {
            FileManager.default.createFile(atPath: dir.file(step: step), contents: Data("checkpoint \(step)".utf8))
            try dir.commit(step: step)
        }
        XCTAssertEqual(dir.steps(), [10, 15])
        XCTAssertEqual(dir.latest(), "step-000000015.safetensors")
        XCTAssertEqual(CheckpointDirectory.step(ofFile: "step-000000015.safetensors"), 15)
        XCTAssertNil(CheckpointDirectory.step(ofFile: "latest"))
        // latest names an older file (a crash between the checkpoint and the pointer): it is tried first, then the rest
        // newest first.
        try Data("step-000000010.safetensors\n".utf8).write(to: URL(fileURLWithPath: dir.path + "/latest"))
        XCTAssertEqual(dir.candidates().map { ($0 as NSString).lastPathComponent }, ["step-000000010.safetensors", "step-000000015.safetensors"])
        // newest() passes over what does not load, saying why.
        let found = dir.newest { path in if path.hasSuffix("10.safetensors") { throw AlexNetError("\(path): damaged") } }
        XCTAssertEqual(found.map { ($0.path as NSString).lastPathComponent }, "step-000000015.safetensors")
        XCTAssertEqual(found?.skipped.count, 1)
        XCTAssertTrue(found?.skipped.first?.contains("damaged") ?? false)
        XCTAssertNil(dir.newest { _ in throw AlexNetError("nothing loads") })
    }

    /// SmallData (256 training, 16 held-out images): the runs' final evaluations stay short.
    var common: [String] { ["train", "--data", SmallData.path, "--width", "0.125", "--batch", "8", "--threads", "1", "--seed", "4", "--lr", "0.01"] }

    func train(_ args: [String], ranks: Int, mode: String? = nil, environment: [String: String] = [:]) -> (status: Int32, out: String, err: String) {
        let all = common + args + (mode.map { ["--mode", $0] } ?? [])
        if ranks == 1 { return runProcess(Paths.binary, all, environment: environment, timeout: 300) }
        let r = mpirun(["-np", "\(ranks)", Paths.binary] + all, timeout: 300)
        return (r.status, r.out, r.err)
    }

    /// The paper's schedule, made to drop at steps 4, 6 and 8: evaluated every 2 steps, a drop after 1 evaluation
    /// without an improvement of more than 0.9 (none is).
    let schedule = ["--lr-schedule", "paper", "--lr-patience", "1", "--lr-threshold", "0.9", "--eval-every", "2"]

    func drops(_ out: String) -> Int { out.split(separator: "\n").filter { $0.hasPrefix("learning rate ") && $0.contains(" → ") }.count }

    /// 2k steps in one go, and k steps then k more resumed from the folder: the same checkpoint bytes (weights, momentum,
    /// state) and the same per-step losses, with augmentation, dropout and the paper's schedule on (it drops the rate
    /// before and after the break), in one process, model and data layouts. And a resume from a checkpoint written
    /// just before an evaluation was due (the periodic save at step 4) makes that evaluation first.
    func testAResumedRunEqualsOneThatNeverStopped() throws {
        let root = Paths.temporaryDirectory("checkpoint-resume")
        for (name, ranks, mode) in [("single", 1, nil as String?), ("model", 2, "model"), ("data", 2, "data")] {
            let whole = root + "/\(name)-whole", parts = root + "/\(name)-parts", four = root + "/\(name)-from4"
            var r = train(schedule + ["--steps", "12", "--checkpoint-dir", whole, "--save-every", "4", "--keep", "4", "--loss-log", whole + ".log"],
                          ranks: ranks, mode: mode)
            XCTAssertEqual(r.status, 0, "\(name): \(r.err)")
            XCTAssertEqual(drops(r.out), 3, "\(name): the schedule should drop 3 times\n\(r.out)")
            r = train(schedule + ["--steps", "6", "--checkpoint-dir", parts, "--loss-log", parts + ".log"], ranks: ranks, mode: mode)
            XCTAssertEqual(r.status, 0, "\(name): \(r.err)")
            XCTAssertEqual(drops(r.out), 2, "\(name): drops at steps 4 and 6\n\(r.out)")
            r = train(schedule + ["--steps", "12", "--checkpoint-dir", parts, "--resume", parts, "--loss-log", parts + ".log"], ranks: ranks, mode: mode)
            XCTAssertEqual(r.status, 0, "\(name): \(r.err)")
            XCTAssertTrue(r.out.contains("resuming \(parts)/step-000000006.safetensors at step 6"), "\(name): \(r.out)")
            XCTAssertEqual(drops(r.out), 1, "\(name): the drop at step 8\n\(r.out)")
            let a = FileManager.default.contents(atPath: CheckpointDirectory(path: whole).file(step: 12))
            let b = FileManager.default.contents(atPath: CheckpointDirectory(path: parts).file(step: 12))
            XCTAssertNotNil(a, name)
            XCTAssertTrue(a == b, "\(name): the resumed run's final checkpoint differs from the uninterrupted run's")
            XCTAssertEqual(readLosses(whole + ".log").count, 12, name)
            XCTAssertEqual(readLosses(parts + ".log"), readLosses(whole + ".log"), "\(name): losses")
            XCTAssertEqual(CheckpointDirectory(path: whole).steps(), [4, 8, 12], "\(name): every 4 steps and the end")
            // The step-4 checkpoint was written before step 4's evaluation: resuming from it evaluates first.
            try FileManager.default.createDirectory(atPath: four, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: CheckpointDirectory(path: whole).file(step: 4), toPath: CheckpointDirectory(path: four).file(step: 4))
            r = train(schedule + ["--steps", "12", "--checkpoint-dir", four, "--resume", four], ranks: ranks, mode: mode)
            XCTAssertEqual(r.status, 0, "\(name): \(r.err)")
            XCTAssertTrue(r.out.contains("step 4: "), "\(name): the owed evaluation\n\(r.out)")
            XCTAssertEqual(drops(r.out), 3, "\(name): drops at 4 (owed), 6 and 8")
            XCTAssertTrue(FileManager.default.contents(atPath: CheckpointDirectory(path: four).file(step: 12)) == a,
                          "\(name): resumed at step 4, the final checkpoint differs")
        }
    }

    /// A checkpoint's schedule is kept on resume; another schedule is refused unless allowed.
    func testResumeKeepsTheScheduleAndRefusesAnother() throws {
        let root = Paths.temporaryDirectory("checkpoint-schedule")
        var r = train(schedule + ["--steps", "6", "--checkpoint-dir", root + "/run"], ranks: 1)
        XCTAssertEqual(r.status, 0, r.err)
        r = train(["--steps", "8", "--resume", root + "/run", "--lr-schedule", "step", "--lr-steps", "1"], ranks: 1)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("learning-rate schedule") && r.err.contains("--resume-allow-changes schedule"), r.err)
        r = train(schedule + ["--steps", "8", "--resume", root + "/run"], ranks: 1)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("learning rate: paper") && r.out.contains("at most 3 times; 2 done"), "the start-up line shows the state\n\(r.out)")
    }

    /// SIGKILL at 20 random moments (saves are slowed so that many land inside a checkpoint write); each time
    /// --auto-resume continues from the newest complete checkpoint; the end equals a run never interrupted.
    func testKilledTwentyTimesStillEndsAsAnUninterruptedRun() throws {
        let root = Paths.temporaryDirectory("checkpoint-kill")
        let steps = ["--steps", "40", "--save-every", "1", "--keep", "2"]
        let reference = train(steps + ["--checkpoint-dir", root + "/reference", "--loss-log", root + "/reference.log"], ranks: 1)
        XCTAssertEqual(reference.status, 0, reference.err)
        let folder = root + "/killed"
        var generator = SystemRandomNumberGenerator()
        var duringWrites = 0, kills = 0
        while kills < 20 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Paths.binary)
            p.arguments = common + steps + ["--checkpoint-dir", folder, "--auto-resume", "--loss-log", root + "/killed.log"]
            var environment = ProcessInfo.processInfo.environment
            environment["ALEXNET_DEBUG_SAVE_DELAY_MS"] = "40"   // a pause between writing a checkpoint and renaming it
            p.environment = environment
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            // 0.2-0.8 s: from start-up (~0.1 s with a resume) to several steps in; a step with its slowed save takes
            // ~0.1 s here, ~40% of it inside the write, so the moments cover every phase of the step and the save.
            usleep(UInt32.random(in: 200_000...800_000, using: &generator))
            guard p.isRunning else {   // it finished before the kill: start the whole run again
                p.waitUntilExit()
                XCTAssertEqual(p.terminationStatus, 0)
                try? FileManager.default.removeItem(atPath: folder)
                try? FileManager.default.removeItem(atPath: root + "/killed.log")
                continue
            }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            kills += 1
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
            if names.contains(where: { $0.contains(".partial-") }) { duringWrites += 1 }
        }
        print("\(kills) kills, \(duringWrites) of them inside a checkpoint write")
        let last = train(steps + ["--checkpoint-dir", folder, "--auto-resume", "--loss-log", root + "/killed.log"], ranks: 1)
        XCTAssertEqual(last.status, 0, last.err)
        XCTAssertGreaterThanOrEqual(duringWrites, 3, "kills inside a checkpoint write (a partial file left behind)")
        let a = FileManager.default.contents(atPath: CheckpointDirectory(path: root + "/reference").file(step: 40))
        let b = FileManager.default.contents(atPath: CheckpointDirectory(path: folder).file(step: 40))
        XCTAssertNotNil(a)
        XCTAssertTrue(a == b, "after \(kills) kills (\(duringWrites) during writes) the final checkpoint differs from the uninterrupted run's")
        XCTAssertEqual(readLosses(root + "/killed.log"), readLosses(root + "/reference.log"))
        XCTAssertFalse(((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).contains { $0.contains(".partial-") },
                       "the last save removes stale partial files")
    }
}
