// Acceptance: the default run (`alexnet-mpi` with no options: the embedded shapes, trained from scratch at W = 1/8 for
// 560 steps, ε = 0.01 ÷ 10 after 3 epochs) reaches at least 95% held-out top-1 (10 classes: chance is 10%). Its time is a
// benchmark, not a test: the README gives it (under 90 s on 2 cores).
import Foundation
import XCTest

final class DefaultRunTests: ProcessTestCase {
    func testDefaultRunLearnsTheEmbeddedShapes() throws {
        let r = runProcess(Paths.binary, [], timeout: 600)
        XCTAssertEqual(r.status, 0, r.err)
        guard let line = r.out.split(separator: "\n").first(where: { $0.hasPrefix("done:") }),
              let range = line.range(of: "held-out top-1 "),
              let top1 = Double(line[range.upperBound...].prefix { $0 != "%" }) else {
            return XCTFail("no summary line in:\n\(r.out)")
        }
        print(line)
        XCTAssertGreaterThanOrEqual(top1, 95, "held-out top-1 \(top1)% after the default run")
    }
}
