// `alexnet-mpi evaluate`: a checkpoint's top-1/top-5 on a dataset folder agree with the training run's own held-out
// figure, and are the same in one process and under mpirun -np 2 in the model, data and owt layouts.
import AlexNet
import Foundation
import XCTest

final class EvaluateTests: ProcessTestCase {
    override class var needsMPI: Bool { true }

    /// (top-1 error, top-5 error) in % of each "centre crop" / "ten views" line of evaluate's output.
    func errors(_ out: String) -> [String: (Double, Double)] {
        var found: [String: (Double, Double)] = [:]
        for line in out.split(separator: "\n") {
            let text = String(line)
            guard let kind = ["centre crop", "ten views"].first(where: { text.hasPrefix($0) }) else { continue }
            let numbers = text.split(whereSeparator: { " %,:()".contains($0) }).compactMap { Double($0) }
            if numbers.count >= 2 { found[kind] = (numbers[0], numbers[1]) }
        }
        return found
    }

    func testEvaluateAgreesWithTrainingAndAcrossLayouts() throws {
        let dir = Paths.temporaryDirectory("evaluate")
        let bin = Paths.binary
        for (sub, extra) in [("", ["--count", "256"]), ("/heldout", ["--count", "60", "--held-out"])] {
            let r = runProcess(bin, ["export-embedded", "--out", dir + "/data" + sub] + extra, timeout: 120)
            XCTAssertEqual(r.status, 0, r.err)
        }
        // A briefly trained model (about 15% right on 10 classes): its scores differ from image to image and view to
        // view, so a layout that mixed up images, views or shares would not reproduce the same hits.
        let checkpoint = dir + "/model.safetensors"
        let train = runProcess(bin, ["train", "--data", dir + "/data", "--width", "0.125", "--batch", "32", "--steps", "60",
                                     "--lr", "0.015", "--threads", "1", "--save", checkpoint], timeout: 300)
        XCTAssertEqual(train.status, 0, train.err)
        let heldOut = train.out.split(separator: "\n").last { $0.hasPrefix("done:") }.map(String.init) ?? ""
        let trainTop1 = heldOut.range(of: "held-out top-1 ").flatMap { Double(heldOut[$0.upperBound...].prefix { $0 != "%" }) }

        let one = runProcess(bin, ["evaluate", "--checkpoint", checkpoint, "--data", dir + "/data", "--threads", "1"], timeout: 300)
        XCTAssertEqual(one.status, 0, one.err)
        let reference = errors(one.out)
        guard let centre = reference["centre crop"], let ten = reference["ten views"], let trained = trainTop1 else {
            return XCTFail("no result lines in evaluate's output:\n\(one.out)\nor train's:\n\(train.out)")
        }
        // The training run evaluated the same 60 held-out images on the centre crop at its end.
        XCTAssertEqual(100 - centre.0, trained, accuracy: 1e-6, one.out)
        XCTAssertLessThan(centre.1, centre.0 + 1e-9, "top-5 error is at most top-1 error")
        XCTAssertLessThan(ten.1, ten.0 + 1e-9)

        for mode in ["model", "data", "owt"] {
            let r = mpirun(["-np", "2", bin, "evaluate", "--checkpoint", checkpoint, "--data", dir + "/data", "--mode", mode,
                            "--threads", "1"], timeout: 300)
            XCTAssertEqual(r.status, 0, "\(mode): \(r.err)")
            let e = errors(r.out)
            XCTAssertEqual(e["centre crop"]?.0, centre.0, "\(mode) centre top-1\n\(r.out)")
            XCTAssertEqual(e["centre crop"]?.1, centre.1, "\(mode) centre top-5")
            XCTAssertEqual(e["ten views"]?.0, ten.0, "\(mode) ten-view top-1")
            XCTAssertEqual(e["ten views"]?.1, ten.1, "\(mode) ten-view top-5")
        }
    }

    /// --eval-every measures held-out accuracy between steps without disturbing training: the losses equal a run's
    /// without it, bit for bit (the prefetcher fills its buffers meanwhile), in one process and under mpirun -np 2.
    func testEvalEveryReportsBetweenStepsAndLeavesTrainingAlone() throws {
        let dir = Paths.temporaryDirectory("eval-every")
        for (sub, extra) in [("", ["--count", "128"]), ("/heldout", ["--count", "40", "--held-out"])] {
            let r = runProcess(Paths.binary, ["export-embedded", "--out", dir + "/data" + sub] + extra, timeout: 60)
            XCTAssertEqual(r.status, 0, r.err)
        }
        let common = ["train", "--data", dir + "/data", "--width", "0.125", "--batch", "16", "--steps", "12", "--threads", "1"]
        for ranks in [1, 2] {
            func run(_ name: String, _ extra: [String]) -> (out: String, losses: [Double]) {
                let log = dir + "/\(name)-\(ranks).log"
                let args = common + ["--loss-log", log] + extra + (ranks == 2 ? ["--mode", "data"] : [])
                var r: (status: Int32, out: String, err: String)
                if ranks == 1 {
                    r = runProcess(Paths.binary, args, timeout: 120)
                } else {
                    let m = mpirun(["-np", "2", Paths.binary] + args, timeout: 180)
                    r = (m.status, m.out, m.err)
                }
                XCTAssertEqual(r.status, 0, "\(name) on \(ranks): \(r.err)")
                return (r.out, readLosses(log))
            }
            let plain = run("plain", []), evaluated = run("evaluated", ["--eval-every", "5"])
            XCTAssertEqual(plain.losses.count, 12)
            XCTAssertEqual(evaluated.losses, plain.losses, "\(ranks) rank(s): --eval-every changed the training")
            let lines = evaluated.out.split(separator: "\n").filter { $0.hasPrefix("step 5: held-out top-1") || $0.hasPrefix("step 10: held-out top-1") }
            XCTAssertEqual(lines.count, 2, evaluated.out)
            XCTAssertFalse(plain.out.contains("step 5: held-out"))
        }
    }

    /// Weights without training state (as PyTorch writes them) need --width and --classes; a missing file is named.
    func testEvaluateWeightsWithoutState() throws {
        let dir = Paths.temporaryDirectory("evaluate-stateless")
        let r = runProcess(Paths.binary, ["export-embedded", "--out", dir + "/data", "--count", "8"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.err)
        let path = dir + "/weights.safetensors"
        let shapes = ModelConfig(width: 0.125, classes: 10).tensors
        let buffers = shapes.map { [Float](repeating: 0.01, count: $0.1.reduce(1, *)) }
        try buffers.withUnsafeBufferPointers { pointers in
            try SafetensorsFile.write(path: path, tensors: zip(shapes, pointers).map { ($0.0, $0.1, $1) }, metadata: [:])
        }
        let refused = runProcess(Paths.binary, ["evaluate", "--checkpoint", path, "--data", dir + "/data"], timeout: 60)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.err.contains("weights.safetensors holds no training state") && refused.err.contains("--width and --classes"), refused.err)
        let told = runProcess(Paths.binary, ["evaluate", "--checkpoint", path, "--data", dir + "/data", "--width", "0.125",
                                             "--classes", "10", "--views", "centre", "--threads", "1"], timeout: 120)
        XCTAssertEqual(told.status, 0, told.err)
        XCTAssertNotNil(errors(told.out)["centre crop"], told.out)
        XCTAssertNil(errors(told.out)["ten views"], "--views centre runs the centre crop alone")
        let missing = runProcess(Paths.binary, ["evaluate", "--checkpoint", dir + "/none.safetensors", "--data", dir + "/data"], timeout: 60)
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.err.contains("none.safetensors: no such file"), missing.err)
    }
}

extension Array where Element == [Float] {
    /// Every inner array's buffer at once, valid inside `body`.
    func withUnsafeBufferPointers<R>(_ body: ([UnsafeBufferPointer<Float>]) throws -> R) rethrows -> R {
        var pointers: [UnsafeBufferPointer<Float>] = []
        func nest(_ i: Int) throws -> R {
            if i == count { return try body(pointers) }
            return try self[i].withUnsafeBufferPointer { pointers.append($0); return try nest(i + 1) }
        }
        return try nest(0)
    }
}
