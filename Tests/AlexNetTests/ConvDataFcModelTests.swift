// The conv-data/fc-model layout (--mode owt) under mpirun: one process's numbers on 2, 3 and 4 ranks, the PyTorch
// fixture, bytes moved equal to the prediction, and checkpoints that resume across layouts both ways.
import AlexNet
import Foundation
import XCTest

extension DataParallelTests {
    /// Acceptance: 20 steps with dropout and augmentation on 2, 3 and 4 ranks equal one process within 1e-5 (losses
    /// and the weights as one vector; see `common` for why 20 steps at this seed stay before any max-pool flip), and
    /// every rank's slice exchange moves the predicted bytes.
    func testConvDataFcModelMatchesOneProcess() throws {
        let dir = Paths.temporaryDirectory("owt")
        let reference = oneProcessReference()
        for n in [2, 3, 4] {
            let tag = "owt\(n)"
            let r = mpirun(["-np", "\(n)", Paths.binary] + common + ["--mode", "owt", "--loss-log", dir + "/\(tag).txt",
                                                                     "--save", dir + "/\(tag).safetensors"])
            XCTAssertEqual(r.status, 0, "\(tag): " + r.err + r.out)
            try compare(tag, losses: readLosses(dir + "/\(tag).txt"), weights: dir + "/\(tag).safetensors", against: reference)
            let lines = r.out.split(separator: "\n").filter { $0.contains("fc slice exchange") && $0.contains("measured") }
            XCTAssertEqual(lines.count, n, "\(tag): one exchange line a rank:\n\(r.out)")
            XCTAssertTrue(lines.allSatisfy { $0.contains("(equal)") }, "\(tag): measured bytes differ from the prediction:\n\(r.out)")
            XCTAssertTrue(r.out.contains("gradient allreduce"), "\(tag): no allreduce figures:\n\(r.out)")
        }
    }

    /// Acceptance: the PyTorch fixture reproduces under -np 2 and -np 3 --mode owt (its batch of 4 splits 2 + 2, and
    /// 1 + 1 + 2: uneven image blocks).
    func testFixtureUnderConvDataFcModel() throws {
        for n in [2, 3] {
            let out = Paths.temporaryDirectory("fixture-owt\(n)") + "/after.safetensors"
            let r = try mpirun(["-np", "\(n)", Paths.binary] + Fixture.trainArguments(saveTo: out) + ["--mode", "owt"])
            XCTAssertEqual(r.status, 0, r.err + r.out)
            try Fixture.assertTwoUpdatesMatchPyTorch(out, "owt on \(n) ranks")
        }
    }

    /// Acceptance: a checkpoint saved by owt on 3 ranks resumes in one process and under model parallelism, and one
    /// saved by model parallelism resumes under owt on 3 ranks, each continuing an uninterrupted run's losses and
    /// ending at its weights.
    func testConvDataFcModelCheckpointsResumeAcrossLayouts() throws {
        let dir = Paths.temporaryDirectory("owt-resume")
        let (wholeLosses, wholeWeights) = oneProcessReference()
        guard wholeLosses.count == 20 else { return XCTFail("the uninterrupted run logged \(wholeLosses.count) losses") }
        let half = common.map { $0 == "20" ? "10" : $0 }, rest = Array(wholeLosses[10...])
        let owtHalf = mpirun(["-np", "3", Paths.binary] + half + ["--mode", "owt", "--save", dir + "/owt-half.safetensors"])
        XCTAssertEqual(owtHalf.status, 0, owtHalf.err + owtHalf.out)
        let single = runProcess(Paths.binary, common + ["--resume", dir + "/owt-half.safetensors", "--loss-log", dir + "/single.txt",
                                                        "--save", dir + "/single.safetensors"])
        XCTAssertEqual(single.status, 0, single.err)
        try compare("owt checkpoint resumed in one process", losses: readLosses(dir + "/single.txt"),
                    weights: dir + "/single.safetensors", against: (rest, wholeWeights))
        let model = mpirun(["-np", "2", Paths.binary] + common + ["--mode", "model", "--resume", dir + "/owt-half.safetensors",
                                                                  "--loss-log", dir + "/model.txt", "--save", dir + "/model.safetensors"])
        XCTAssertEqual(model.status, 0, model.err + model.out)
        try compare("owt checkpoint resumed under model parallelism", losses: readLosses(dir + "/model.txt"),
                    weights: dir + "/model.safetensors", against: (rest, wholeWeights))
        let owt = mpirun(["-np", "3", Paths.binary] + common + ["--mode", "owt", "--resume", modelParallelHalfway(),
                                                                "--loss-log", dir + "/owt.txt", "--save", dir + "/owt.safetensors"])
        XCTAssertEqual(owt.status, 0, owt.err + owt.out)
        try compare("model-parallel checkpoint resumed under owt", losses: readLosses(dir + "/owt.txt"),
                    weights: dir + "/owt.safetensors", against: (rest, wholeWeights))
    }

    func testConvDataFcModelRefusesOneRankAndTooSmallBatches() {
        let r = mpirun(["-np", "3", Paths.binary, "train", "--mode", "owt", "--width", "0.125", "--batch", "2", "--threads", "1"], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--batch 2") && r.err.contains("no image"), r.err)
        let alone = runProcess(Paths.binary, ["train", "--mode", "owt", "--width", "0.125", "--steps", "1"], timeout: 60)
        XCTAssertNotEqual(alone.status, 0)
        XCTAssertTrue(alone.err.contains("--mode owt") && alone.err.contains("mpirun"), alone.err)
    }
}
