// Every layout feeds the network the same pixels: the first batch after crop, flip, PCA colour noise and mean
// subtraction, dumped by each rank, is bit-identical to one process's in the model, data and owt layouts.
import AlexNet
import Foundation
import XCTest

final class LayoutPixelsTests: ProcessTestCase {
    override class var needsMPI: Bool { true }

    func testTheFirstAugmentedBatchIsIdenticalInEveryLayout() throws {
        let dir = Paths.temporaryDirectory("layout-pixels")
        let export = runProcess(Paths.binary, ["export-embedded", "--out", dir + "/data", "--count", "40"], timeout: 60)
        XCTAssertEqual(export.status, 0, export.err)
        // Pixel data: random 227 crops of 256 × 256, flips and colour noise apply. Batch 8: the data layout splits
        // it 4 + 4, owt on 3 ranks unevenly 2 + 3 + 3.
        let common = ["train", "--data", dir + "/data", "--width", "0.125", "--batch", "8", "--steps", "1", "--threads", "1",
                      "--seed", "3"]
        func dump(_ name: String, ranks: Int, mode: String?) throws -> (input: [Float], labels: [Int]) {
            let prefix = dir + "/" + name
            var args = common + ["--debug-dump-first-batch", prefix]
            if let mode { args += ["--mode", mode] }
            let r: (status: Int32, err: String)
            if ranks == 1 {
                let one = runProcess(Paths.binary, args, timeout: 120); r = (one.status, one.err)
            } else {
                let many = mpirun(["-np", "\(ranks)", Paths.binary] + args, timeout: 180); r = (many.status, many.err)
            }
            XCTAssertEqual(r.status, 0, "\(name): \(r.err)")
            // (3, n, 227, 227) of each rank; a replica's ranks (model: both) hold the same images.
            var planes: [[Float]] = [[], [], []], labels: [Int] = []
            let distinct = mode == "model" ? [0] : Array(0..<ranks)
            for rank in distinct {
                let input = try NpyArray(path: "\(prefix).rank\(rank).input.npy", allowed: [.float32])
                let n = input.shape[1], plane = n * 227 * 227
                let values = input.withBytes { Array(UnsafeBufferPointer(start: $0.assumingMemoryBound(to: Float.self), count: 3 * plane)) }
                for c in 0..<3 { planes[c] += values[(c * plane)..<((c + 1) * plane)] }
                labels += try NpyArray(path: "\(prefix).rank\(rank).labels.npy", allowed: [.int64]).integers()
            }
            if mode == "model" {   // the other tower's rank assembled the very same batch
                let a = try NpyArray(path: "\(prefix).rank0.input.npy", allowed: [.float32]).withBytes { Data(bytes: $0, count: 3 * 8 * 227 * 227 * 4) }
                let b = try NpyArray(path: "\(prefix).rank1.input.npy", allowed: [.float32]).withBytes { Data(bytes: $0, count: 3 * 8 * 227 * 227 * 4) }
                XCTAssertEqual(a, b, "model parallel: the two ranks' inputs differ")
            }
            return (planes[0] + planes[1] + planes[2], labels)
        }
        let single = try dump("single", ranks: 1, mode: nil)
        XCTAssertEqual(single.input.count, 3 * 8 * 227 * 227)
        // Augmentation really happened: not the plain centre crop of the mean-subtracted image, and mirrored or
        // shifted views differ from image to image; the values are mean-subtracted (centred near 0).
        let mean = single.input.reduce(0, +) / Float(single.input.count)
        XCTAssertLessThan(abs(mean), 0.5, "mean-subtracted input")
        XCTAssertGreaterThan(Set(single.input.prefix(1000)).count, 10)
        for (name, ranks, mode) in [("model", 2, "model"), ("data", 2, "data"), ("owt", 3, "owt")] {
            let other = try dump(name, ranks: ranks, mode: mode)
            XCTAssertEqual(other.labels, single.labels, "\(name): labels")
            XCTAssertEqual(other.input.count, single.input.count, "\(name): size")
            let differing = zip(other.input, single.input).filter { $0.0.bitPattern != $0.1.bitPattern }.count
            XCTAssertEqual(differing, 0, "\(name): \(differing) input values differ from one process's")
        }
    }
}
