// Model parallelism under `mpirun -np 2`: the same numbers as one process, the PyTorch fixture, failures that stop
// every rank, and settings that are refused before any work.
import AlexNet
import Foundation
import XCTest

final class ModelParallelTests: ProcessTestCase {
    override class var needsMPI: Bool { true }

    /// Acceptance (the README's "bit for bit"): two ranks train exactly the per-step losses, final weights and
    /// momentum of one process, dropout and augmentation on, 20 steps. Each tower's arithmetic is the same in both
    /// layouts (an exchange only moves floats, and adds a partner's partial in the same order), so nothing may differ.
    func testTwoRanksTrainBitForBitTheNumbersOfOneProcess() throws {
        let dir = Paths.temporaryDirectory("mp-vs-single")
        let common = ["train", "--data", SmallData.path, "--width", "0.125", "--batch", "8", "--steps", "20", "--seed", "3",
                      "--dropout", "0.5"]
        let one = runProcess(Paths.binary, common + ["--threads", "2", "--loss-log", dir + "/one.txt", "--save", dir + "/one.safetensors"])
        XCTAssertEqual(one.status, 0, one.err)
        let two = mpirun(["-np", "2", Paths.binary] + common + ["--threads", "1", "--mode", "model",
                                                                "--loss-log", dir + "/two.txt", "--save", dir + "/two.safetensors"])
        XCTAssertEqual(two.status, 0, two.err + two.out)
        // The loss log prints each loss with 17 significant digits: equal text is the equal double.
        let a = readLosses(dir + "/one.txt"), b = readLosses(dir + "/two.txt")
        XCTAssertEqual(a.count, 20)
        XCTAssertEqual(b, a, "per-step losses of two ranks vs one process")
        let fa = try SafetensorsFile(path: dir + "/one.safetensors"), fb = try SafetensorsFile(path: dir + "/two.safetensors")
        for (name, _) in ModelConfig(width: 0.125, classes: 10).tensors {
            for tensor in [name, "momentum." + name] {
                let wa = try fa.readAll(tensor).values, wb = try fb.readAll(tensor).values
                XCTAssertEqual(wa.count, wb.count, tensor)
                let differing = zip(wa, wb).filter { $0.bitPattern != $1.bitPattern }.count
                XCTAssertEqual(differing, 0, "\(tensor): \(differing) of \(wa.count) floats differ between two ranks and one process")
            }
        }
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
            let r = mpirun(["-np", "2", Paths.binary, "train", "--data", SmallData.path, "--width", "0.125", "--batch", "4",
                            "--steps", "50", "--threads", "1",
                            "--debug-fail-rank", "1", "--debug-fail-step", "\(step)", "--debug-fail-kind", kind], timeout: 60)
            XCTAssertNotEqual(r.status, 0, "\(kind): the job should fail")
            // Start-up and failure included, these jobs take 3 to 6 s on a busy 2-core machine; a rank left waiting for
            // its partner would run into the 60 s timeout.
            XCTAssertLessThan(r.seconds, 20, "\(kind): the job took \(r.seconds) s to stop")
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
