// The `alexnet-mpi` binary as a user runs it: the PyTorch fixture through `train`, and one-line errors for bad input.
import AlexNet
import Foundation
import XCTest

final class CommandLineTests: ProcessTestCase {
    /// Acceptance: train --data … --init-from … --save … --no-augment --dropout 0 --steps 2 reproduces PyTorch's two updates.
    func testFixtureThroughTheCommandLine() throws {
        let out = Paths.temporaryDirectory("cli-fixture") + "/after.safetensors"
        let r = runProcess(Paths.binary, try Fixture.trainArguments(saveTo: out))
        XCTAssertEqual(r.status, 0, r.err)
        try Fixture.assertTwoUpdatesMatchPyTorch(out, "one process")
        XCTAssertTrue(r.out.contains("conv1"), "start-up table missing")
        XCTAssertTrue(r.out.contains("done:"), "summary missing")
    }

    /// `--help` at every level prints the help text and exits 0 (it used to print ArgumentParser's help request as an
    /// error and exit 1).
    func testHelpPrintsUsageAndSucceeds() throws {
        for (arguments, expected) in [([], "SUBCOMMANDS"), (["train"], "--width"), (["bench"], "--steps"), (["help", "bench"], "--steps")] {
            let r = runProcess(Paths.binary, arguments.first == "help" ? arguments : arguments + ["--help"], timeout: 60)
            XCTAssertEqual(r.status, 0, "\(arguments): \(r.err)")
            XCTAssertTrue(r.out.contains("USAGE:") && r.out.contains(expected), "\(arguments): \(r.out)\n\(r.err)")
            XCTAssertFalse(r.err.contains("error"), "\(arguments): \(r.err)")
        }
    }

    /// In a log the progress line comes every --progress-every seconds: with a long interval, only the first and the
    /// last step's; with 0, every step's.
    func testProgressEveryPacesTheProgressLines() throws {
        let dir = Paths.temporaryDirectory("cli-progress")
        let r0 = runProcess(Paths.binary, ["export-embedded", "--out", dir, "--count", "64"], timeout: 60)
        XCTAssertEqual(r0.status, 0, r0.err)
        for (every, expected) in [("1000", 2), ("0", 6)] {
            let r = runProcess(Paths.binary, ["train", "--data", dir, "--width", "0.125", "--batch", "8", "--steps", "6", "--threads", "1",
                                              "--progress-every", every], timeout: 120)
            XCTAssertEqual(r.status, 0, r.err)
            let lines = r.out.split(separator: "\n").filter { $0.hasPrefix("step ") && $0.contains("/6 ") }
            XCTAssertEqual(lines.count, expected, "--progress-every \(every):\n\(r.out)")
            XCTAssertTrue(lines.allSatisfy { $0.contains("smoothed") && $0.contains(" lr ") && $0.contains("ETA") }, "\(lines)")
            XCTAssertFalse(r.out.contains("\r"), "a log gets plain lines")
        }
    }

    /// Each bad input: exit code ≠ 0, one line on stderr naming the problem, no crash trace.
    func testBadInputGivesOneLineErrors() throws {
        try Paths.requireFixture()
        let dir = Paths.temporaryDirectory("cli-bad")
        // A float64 dataset, a labels-out-of-range dataset.
        let n = 2, plane = 3 * 227 * 227
        let f64 = dir + "/f64"
        try FileManager.default.createDirectory(atPath: f64, withIntermediateDirectories: true)
        try [Double](repeating: 0, count: n * plane).withUnsafeBytes {
            try NpyArray.write(path: f64 + "/images.npy", descr: "<f8", shape: [n, 3, 227, 227], bytes: $0)
        }
        try [Int64](repeating: 0, count: n).withUnsafeBytes { try NpyArray.write(path: f64 + "/labels.npy", dtype: .int64, shape: [n], bytes: $0) }
        let range = dir + "/range"
        try FileManager.default.createDirectory(atPath: range, withIntermediateDirectories: true)
        try [Float](repeating: 0, count: n * plane).withUnsafeBytes {
            try NpyArray.write(path: range + "/images.npy", dtype: .float32, shape: [n, 3, 227, 227], bytes: $0)
        }
        try [Int64](arrayLiteral: 1, 10).withUnsafeBytes { try NpyArray.write(path: range + "/labels.npy", dtype: .int64, shape: [n], bytes: $0) }
        let unreadable = dir + "/unreadable.safetensors"
        try Data("not a safetensors file".utf8).write(to: URL(fileURLWithPath: unreadable))

        let tiny = ["--width", "0.125", "--steps", "1", "--threads", "1"]
        let cases: [([String], [String])] = [
            (["train", "--data", dir + "/missing"] + tiny, ["missing", "no such directory"]),
            (["train", "--data", f64] + tiny, ["images.npy", "<f8"]),
            (["train", "--data", range, "--classes", "10"] + tiny, ["label 10", "out of range"]),
            (["train", "--data", range, "--batch", "3"] + tiny, ["--batch 3", "larger than the training set"]),
            (["train", "--init-from", dir + "/nope.safetensors"] + tiny, ["nope.safetensors", "no such file"]),
            (["train", "--init-from", unreadable] + tiny, ["unreadable.safetensors"]),
            (["train", "--init-from", Paths.fixture + "/weights.safetensors", "--classes", "12"] + tiny, ["fc8.weight", "shape"]),
            (["train", "--width", "0"], ["--width", "positive"]),
            (["train", "--width", "-1"], ["--width"]),
            (["train", "--batch", "0"], ["--batch"]),
            (["train", "--progress-every", "-1"], ["--progress-every"]),
            (["train", "--lr-schedule", "cosine"], ["--lr-schedule", "cosine"]),
            (["train", "--lr-schedule", "constant", "--lr-steps", "3"], ["--lr-steps"]),
            (["train", "--save-each-epoch"], ["--save-each-epoch", "--checkpoint-dir"]),
            (["train", "--auto-resume"], ["--auto-resume", "--checkpoint-dir"]),
            (["train", "--mode", "model", "--gradient-sum", "shared-memory"], ["--gradient-sum shared-memory", "--mode data"]),
            (["bench", "--mode", "owt", "--gradient-sum", "shared-memory"], ["--gradient-sum shared-memory", "owt"]),
            (["train", "--gradient-sum", "nccl"], ["--gradient-sum", "nccl"]),
        ]
        for (arguments, words) in cases {
            let r = runProcess(Paths.binary, arguments, timeout: 120)
            XCTAssertNotEqual(r.status, 0, "\(arguments) should fail")
            let lines = r.err.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            let first = lines.first.map(String.init) ?? ""
            for w in words { XCTAssertTrue(first.contains(w), "\(arguments): '\(first)' does not mention '\(w)'") }
            XCTAssertFalse(r.err.contains("Stack dump") || r.err.contains("Fatal error") || r.err.contains("Backtrace"),
                           "\(arguments): crash trace:\n\(r.err)")
            // Our own errors are one line; ArgumentParser's validation adds its usage text after the first line.
            if arguments.contains("--data") || arguments.contains("--init-from") {
                XCTAssertEqual(lines.count, 1, "\(arguments): more than one line:\n\(r.err)")
            }
        }
    }

}

final class SaveEveryTests: ProcessTestCase {
    /// A run that fails late keeps what --save-every wrote: the checkpoint of the last multiple, resumable.
    func testACrashLosesAtMostSaveEverySteps() throws {
        let path = Paths.temporaryDirectory("save-every") + "/run.safetensors"
        let r = runProcess(Paths.binary, ["train", "--data", SmallData.path, "--width", "0.125", "--batch", "8", "--steps", "12", "--threads", "1",
                                          "--save", path, "--save-every", "5", "--debug-fail-rank", "0", "--debug-fail-step", "11"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("injected failure at step 11"), r.err)
        let state = try Checkpoint.load(path, into: ParameterStore(config: ModelConfig(width: 0.125, classes: 10), towers: 0..<2))
        XCTAssertEqual(state?.step, 10)
        let resumed = runProcess(Paths.binary, ["train", "--data", SmallData.path, "--width", "0.125", "--batch", "8", "--steps", "12",
                                                "--threads", "1", "--resume", path])
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertTrue(resumed.out.contains("resuming") && resumed.out.contains("step    12/12"), resumed.out)
    }
}

final class ThreadDefaultTests: ProcessTestCase {
    /// CPUs in this process's affinity mask as the kernel reports them (sched_getaffinity, looked up at run time:
    /// Glibc's module map does not export it), independent of the library's reading of /proc/self/status.
    static func affinityCount() -> Int? {
        typealias GetAffinity = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "sched_getaffinity") else { return nil }
        var mask = [UInt8](repeating: 0, count: 128)   // 1024 CPUs, glibc's cpu_set_t
        let status = mask.withUnsafeMutableBytes { unsafeBitCast(symbol, to: GetAffinity.self)(0, $0.count, $0.baseAddress!) }
        return status == 0 ? mask.reduce(0) { $0 + $1.nonzeroBitCount } : nil
    }

    /// The library counts the cores this process may run on: its affinity mask, not the machine's cores.
    func testAvailableCoresIsTheAffinityMask() throws {
        let mask = try XCTUnwrap(Self.affinityCount(), "sched_getaffinity failed")
        XCTAssertEqual(Parallel.availableCores, mask)
    }

    /// --threads defaults to the cores the process may run on (its affinity), as under mpirun's binding.
    func testDefaultThreadsFollowTheAffinity() throws {
        let taskset = try XCTUnwrap(Paths.onPath("taskset"), "taskset is not on PATH: install util-linux")
        let r = runProcess(taskset, ["-c", "0", Paths.binary, "train", "--data", SmallData.path, "--width", "0.125", "--batch", "4", "--steps", "1"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("both towers, 1 thread"), r.out)
        // With two cores allowed the default is 2 threads, one a tower (a child may widen its mask again).
        guard ProcessInfo.processInfo.activeProcessorCount >= 2 else { return }
        let two = runProcess(taskset, ["-c", "0,1", Paths.binary, "train", "--data", SmallData.path, "--width", "0.125", "--batch", "4",
                                       "--steps", "1"])
        XCTAssertEqual(two.status, 0, two.err)
        XCTAssertTrue(two.out.contains("one thread each (2 threads)"), two.out)
    }
}
