// The two-thread tower exchange: it gathers and reduce-scatters like the MPI one, and a tower that stops
// releases its partner with an error instead of a hang.
import AlexNet
import Foundation
import XCTest

final class ThreadTowerExchangeTests: XCTestCase {
    /// Two real threads (not concurrentPerform, which runs the iterations one after the other on a single CPU and
    /// would leave the first side waiting at the barrier for ever).
    func testGatherAndReduceScatterAcrossThreads() throws {
        let pair = ThreadTowerExchange.pair()
        let results = Results()
        let offsets = [0, 3, 7]
        let threads = (0..<2).map { t in
            Thread {
                var buffer = [Float](repeating: -1, count: 7)
                for i in offsets[t]..<offsets[t + 1] { buffer[i] = Float(10 * t + i) }
                var partial = (0..<7).map { Float(100 * (t + 1) + $0) }
                var out = [Float](repeating: 0, count: offsets[t + 1] - offsets[t])
                buffer.withUnsafeMutableBufferPointer { b in
                    try! pair[t].allGather(b.baseAddress!, offsets: offsets, at: .fc6Input)
                }
                partial.withUnsafeMutableBufferPointer { p in out.withUnsafeMutableBufferPointer { o in
                    try! pair[t].reduceScatter(partials: [p.baseAddress!], offsets: offsets, into: o.baseAddress!, at: .fc6InputGradient)
                } }
                results.set(t, gathered: buffer, reduced: out)
            }
        }
        threads.forEach { $0.start() }
        XCTAssertTrue(results.waitForBoth(timeout: 30), "the two towers did not both finish")
        let (gathered, reduced) = results.values
        XCTAssertEqual(gathered[0], [0, 1, 2, 13, 14, 15, 16])
        XCTAssertEqual(gathered[1], gathered[0])
        XCTAssertEqual(reduced[0], [300, 302, 304])            // (100 + i) + (200 + i)
        XCTAssertEqual(reduced[1], [306, 308, 310, 312])
    }

    /// What each tower thread produced, behind a lock.
    final class Results: @unchecked Sendable {
        private let condition = NSCondition()
        private var gathered = [[Float]](repeating: [], count: 2), reduced = [[Float]](repeating: [], count: 2)
        private var finished = 0
        func set(_ t: Int, gathered g: [Float], reduced r: [Float]) {
            condition.lock(); gathered[t] = g; reduced[t] = r; finished += 1; condition.broadcast(); condition.unlock()
        }
        func waitForBoth(timeout: Double) -> Bool {
            condition.lock(); defer { condition.unlock() }
            let deadline = Date().addingTimeInterval(timeout)
            while finished < 2 { if !condition.wait(until: deadline) { return false } }
            return true
        }
        var values: ([[Float]], [[Float]]) { condition.lock(); defer { condition.unlock() }; return (gathered, reduced) }
    }

    func testAStoppedTowerReleasesItsPartner() {
        let pair = ThreadTowerExchange.pair()
        let done = expectation(description: "tower 0 returns")
        Thread {
            var buffer = [Float](repeating: 0, count: 4)
            do {
                try buffer.withUnsafeMutableBufferPointer { try pair[0].allGather($0.baseAddress!, offsets: [0, 2, 4], at: .conv3Input) }
                XCTFail("the gather should fail")
            } catch {
                XCTAssertTrue("\(error)".contains("tower 1"), "\(error)")
            }
            done.fulfill()
        }.start()
        usleep(100_000)
        pair[1].abandon("out of memory")
        wait(for: [done], timeout: 5)
    }
}
