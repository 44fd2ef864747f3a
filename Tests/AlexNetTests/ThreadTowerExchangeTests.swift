// The two-thread tower exchange: it gathers and reduce-scatters like the MPI one, and a tower that stops
// releases its partner with an error instead of a hang. Each tower gets a thread of its own, so the tests pass on
// one core (`taskset -c 0`): DispatchQueue.concurrentPerform runs its iterations one after the other there, and
// tower 0 would wait at the barrier for a tower 1 that never starts.
import AlexNet
import Foundation
import XCTest

/// What each tower's thread produced (or threw), written under a lock and read after the threads finish.
final class TowerOutcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var outcomes: [Int: Result<[[Float]], Error>] = [:]
    func set(_ tower: Int, _ outcome: Result<[[Float]], Error>) { lock.lock(); outcomes[tower] = outcome; lock.unlock() }
    func get(_ tower: Int) -> Result<[[Float]], Error>? { lock.lock(); defer { lock.unlock() }; return outcomes[tower] }
}

/// The exchange pair handed to the towers' threads (each thread touches only its own end).
final class ExchangePair: @unchecked Sendable {
    let ends = ThreadTowerExchange.pair()
}

final class ThreadTowerExchangeTests: XCTestCase {
    /// Runs `body(t)` for the given towers, each on a new thread; waits up to `timeout` seconds for all of them. On a
    /// timeout both ends are abandoned (so the blocked threads return) and the test fails instead of hanging.
    func runTowers(_ towers: [Int], pair: ExchangePair, timeout: Double = 30,
                   _ body: @escaping @Sendable (Int) throws -> [[Float]]) -> TowerOutcomes? {
        let outcomes = TowerOutcomes(), finished = DispatchSemaphore(value: 0)
        for t in towers {
            let thread = Thread {
                outcomes.set(t, Result { try body(t) })
                finished.signal()
            }
            thread.start()
        }
        let deadline = DispatchTime.now() + timeout
        for _ in towers {
            if finished.wait(timeout: deadline) == .timedOut {
                for end in pair.ends { end.abandon("the test gave up after \(timeout) s") }
                XCTFail("the towers did not finish within \(timeout) s: the exchange blocked")
                return nil
            }
        }
        return outcomes
    }

    func testGatherAndReduceScatterAcrossThreads() throws {
        let pair = ExchangePair()
        let offsets = [0, 3, 7]
        guard let outcomes = runTowers([0, 1], pair: pair, { t in
            var buffer = [Float](repeating: -1, count: 7)
            for i in offsets[t]..<offsets[t + 1] { buffer[i] = Float(10 * t + i) }
            var partial = (0..<7).map { Float(100 * (t + 1) + $0) }
            var out = [Float](repeating: 0, count: offsets[t + 1] - offsets[t])
            try buffer.withUnsafeMutableBufferPointer { b in
                try pair.ends[t].allGather(b.baseAddress!, offsets: offsets, at: .fc6Input)
            }
            try partial.withUnsafeMutableBufferPointer { p in try out.withUnsafeMutableBufferPointer { o in
                try pair.ends[t].reduceScatter(partials: [p.baseAddress!], offsets: offsets, into: o.baseAddress!, at: .fc6InputGradient)
            } }
            return [buffer, out]
        }) else { return }
        let tower0 = try XCTUnwrap(outcomes.get(0)).get(), tower1 = try XCTUnwrap(outcomes.get(1)).get()
        XCTAssertEqual(tower0[0], [0, 1, 2, 13, 14, 15, 16])
        XCTAssertEqual(tower1[0], tower0[0])
        XCTAssertEqual(tower0[1], [300, 302, 304])            // (100 + i) + (200 + i)
        XCTAssertEqual(tower1[1], [306, 308, 310, 312])
    }

    func testAStoppedTowerReleasesItsPartner() throws {
        let pair = ExchangePair()
        let start = Date()
        // Tower 0 waits in a gather; this thread (tower 1) gives up instead of joining it.
        let waiting = Thread { usleep(100_000); pair.ends[1].abandon("out of memory") }
        waiting.start()
        guard let outcomes = runTowers([0], pair: pair, timeout: 10, { _ in
            var buffer = [Float](repeating: 0, count: 4)
            try buffer.withUnsafeMutableBufferPointer { try pair.ends[0].allGather($0.baseAddress!, offsets: [0, 2, 4], at: .conv3Input) }
            return [buffer]
        }) else { return }
        switch try XCTUnwrap(outcomes.get(0)) {
        case .success: XCTFail("the gather should fail when the partner abandons it")
        case .failure(let error): XCTAssertTrue("\(error)".contains("tower 1") && "\(error)".contains("out of memory"), "\(error)")
        }
        // Released as soon as tower 1 gave up (0.1 s), not by the 10 s timeout.
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }
}
