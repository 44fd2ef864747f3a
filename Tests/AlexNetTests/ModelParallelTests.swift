// Model parallelism under `mpirun -np 2`: the same numbers as one process, the PyTorch fixture, failures that stop
// every rank, and settings that are refused before any work.
import AlexNet
import Foundation
import XCTest

final class ModelParallelTests: ProcessTestCase {
    override class var needsMPI: Bool { true }

    /// Acceptance: two ranks train the same per-step losses and final weights as one process, dropout and
    /// augmentation on, 20 steps.
    func testTwoRanksTrainTheSameNumbersAsOneProcess() throws {
        let dir = Paths.temporaryDirectory("mp-vs-single")
        let common = ["train", "--width", "0.125", "--batch", "8", "--steps", "20", "--seed", "3", "--dropout", "0.5"]
        let one = runProcess(Paths.binary, common + ["--threads", "2", "--loss-log", dir + "/one.txt", "--save", dir + "/one.safetensors"])
        XCTAssertEqual(one.status, 0, one.err)
        let two = mpirun(["-np", "2", Paths.binary] + common + ["--threads", "1", "--mode", "model",
                                                                "--loss-log", dir + "/two.txt", "--save", dir + "/two.safetensors"])
        XCTAssertEqual(two.status, 0, two.err + two.out)
        let a = readLosses(dir + "/one.txt"), b = readLosses(dir + "/two.txt")
        XCTAssertEqual(a.count, 20)
        XCTAssertEqual(b.count, 20)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-5 * abs(x)) }
        let fa = try SafetensorsFile(path: dir + "/one.safetensors"), fb = try SafetensorsFile(path: dir + "/two.safetensors")
        var bitwise = a == b
        for (name, _) in ModelConfig(width: 0.125, classes: 10).tensors {
            let wa = try fa.readAll(name).values, wb = try fb.readAll(name).values
            XCTAssertLessThan(relativeError(wb, wa), 1e-5, name)
            bitwise = bitwise && wa == wb
        }
        print("model parallel vs one process: \(bitwise ? "bit-identical" : "within 1e-5")")
        XCTAssertTrue(two.out.contains("(equal)"), "measured bytes should equal the prediction:\n\(two.out)")
    }

    /// Acceptance: the PyTorch fixture reproduces through the CLI under mpirun -np 2 --mode model.
    func testFixtureUnderModelParallelism() throws {
        let out = Paths.temporaryDirectory("mp-fixture") + "/after.safetensors"
        let r = try mpirun(["-np", "2", Paths.binary] + Fixture.trainArguments(saveTo: out) + ["--mode", "model"])
        XCTAssertEqual(r.status, 0, r.err + r.out)
        try Fixture.assertTwoUpdatesMatchPyTorch(out, "model parallel")
    }

    /// Acceptance: a rank that fails (an error, or killed) stops the other within seconds; the message names it.
    func testAFailingRankStopsTheOther() throws {
        for (kind, step) in [("error", 0), ("error", 3), ("kill", 2), ("exit", 1)] {
            let r = mpirun(["-np", "2", Paths.binary, "train", "--width", "0.125", "--batch", "4", "--steps", "50", "--threads", "1",
                            "--debug-fail-rank", "1", "--debug-fail-step", "\(step)", "--debug-fail-kind", kind], timeout: 60)
            XCTAssertNotEqual(r.status, 0, "\(kind): the job should fail")
            // The failure comes a second or two after start-up; the whole job must be over within 10 s of it.
            XCTAssertLessThan(r.seconds, 12, "\(kind): the job took \(r.seconds) s to stop")
            let text = r.out + r.err
            XCTAssertTrue(text.contains("rank 1"), "\(kind): the failed rank is not named:\n\(text)")
            if kind == "error" { XCTAssertTrue(text.contains("injected failure"), text) }
        }
    }

    /// Acceptance: settings that differ between ranks are refused at start-up, naming the field.
    func testSettingsMismatchIsRefused() {
        let base = [Paths.binary, "train", "--width", "0.125", "--batch", "4", "--steps", "2", "--threads", "1"]
        let r = mpirun(["-np", "1"] + base + ["--lr", "0.01", ":", "-np", "1"] + base + ["--lr", "0.02"], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--lr") && r.err.contains("0.01") && r.err.contains("0.02"), r.err)
        XCTAssertFalse(r.out.contains("step "), "no rank may train:\n\(r.out)")
    }

    /// Acceptance: --mode model on three ranks is refused before any work, saying which size works.
    func testModelModeRefusesThreeRanks() {
        let r = mpirun(["-np", "3", Paths.binary, "train", "--mode", "model", "--width", "0.125", "--threads", "1"], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("exactly 2 ranks"), r.err)
        XCTAssertFalse(r.out.contains("layer"), "no start-up table expected:\n\(r.out)")
    }
}
