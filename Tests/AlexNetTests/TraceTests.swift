// --trace: the Chrome trace-event JSON parses, every span lies inside its step and nests on its row; under mpirun the
// ranks' clocks are aligned (even with one rank's clock skewed by seconds) so that paired exchanges overlap; data
// parallelism's allreduce buckets sit on the progress-thread row and cover every gradient; bad options refuse in a line.
import AlexNet
import Foundation
import XCTest

/// A parsed trace file: its complete ("X") spans, process and row names, and metadata.
struct ParsedTrace {
    struct Span {
        let name: String, category: String, pid: Int, tid: Int, ts: Double, dur: Double, args: [String: String]
        var end: Double { ts + dur }
    }
    var spans: [Span] = []
    var processNames: [Int: String] = [:]
    var rowNames: [Int: [Int: String]] = [:]   // pid → tid → name
    var metadata: [String: Any] = [:]

    init(path: String) throws {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
        let root = try XCTUnwrap(object as? [String: Any], "\(path): not a JSON object")
        XCTAssertEqual(root["displayTimeUnit"] as? String, "ms")
        metadata = try XCTUnwrap(root["metadata"] as? [String: Any])
        let events = try XCTUnwrap(root["traceEvents"] as? [[String: Any]])
        for e in events {
            let name = try XCTUnwrap(e["name"] as? String, "\(e)"), ph = try XCTUnwrap(e["ph"] as? String, "\(e)")
            let ts = try XCTUnwrap(e["ts"] as? Double, "\(e)")
            let pid = try XCTUnwrap(e["pid"] as? Int, "\(e)"), tid = try XCTUnwrap(e["tid"] as? Int, "\(e)")
            switch ph {
            case "X":
                let dur = try XCTUnwrap(e["dur"] as? Double, "\(e)")
                spans.append(Span(name: name, category: e["cat"] as? String ?? "", pid: pid, tid: tid, ts: ts, dur: dur,
                                  args: e["args"] as? [String: String] ?? [:]))
            case "M":
                let label = (e["args"] as? [String: Any])?["name"] as? String
                if name == "process_name" { processNames[pid] = label }
                if name == "thread_name" { rowNames[pid, default: [:]][tid] = label }
            default:
                XCTFail("unexpected event kind \(ph): \(e)")
            }
        }
    }

    func row(_ pid: Int, named name: String) -> Int? { rowNames[pid]?.first { $0.value == name }?.key }
    func steps(of pid: Int) -> [Span] { spans.filter { $0.pid == pid && $0.category == "step" }.sorted { $0.ts < $1.ts } }

    /// Every span has dur ≥ 0; the spans of a row either nest or do not overlap; every span of the rows in `inSteps`
    /// (all but the prefetch row by default) lies inside one of its process's step spans.
    func checkNesting(file: StaticString = #filePath, line: UInt = #line) {
        let slack = 0.01   // µs: times are whole nanoseconds
        for s in spans { XCTAssertGreaterThanOrEqual(s.dur, 0, "\(s)", file: file, line: line) }
        let rows = Dictionary(grouping: spans) { "\($0.pid)/\($0.tid)" }
        for (key, row) in rows {
            var open: [Span] = []
            for s in row.sorted(by: { $0.ts != $1.ts ? $0.ts < $1.ts : $0.dur > $1.dur }) {
                while let top = open.last, top.end <= s.ts + slack { open.removeLast() }
                if let top = open.last {
                    XCTAssertLessThanOrEqual(s.end, top.end + slack, "row \(key): \(s.name) overlaps \(top.name) without nesting", file: file, line: line)
                }
                open.append(s)
            }
        }
        for s in spans where s.category != "step" && rowNames[s.pid]?[s.tid] != "data prefetch" {
            XCTAssertTrue(steps(of: s.pid).contains { $0.ts - slack <= s.ts && s.end <= $0.end + slack },
                          "\(s.name) of pid \(s.pid) at \(s.ts) µs lies in no step span", file: file, line: line)
        }
    }
}

/// In one process, without the binary: the recorder, the clocks, the trainer's step window and the file.
final class TraceRecorderTests: XCTestCase {
    func testThreeStepRunGivesNestedSpansInsideTheirSteps() throws {
        var s = TrainingSettings()
        s.model = ModelConfig(width: 0.125, classes: 10, dropout: 0.5)
        (s.batch, s.steps, s.progressEvery, s.writesFiles) = (8, 3, 1e9, false)
        s.layout = .threadedTowers   // two tower rows
        let trainer = try Trainer(settings: s, data: .smallEmbedded(seed: s.seed))
        trainer.log = { _ in }
        let recorder = TraceRecorder(window: 0...2)
        trainer.replica.attach(trace: recorder, row: "model")
        trainer.trace = recorder
        _ = try trainer.run()
        XCTAssertFalse(recorder.enabled, "the window closes after its last step")
        let path = Paths.temporaryDirectory("trace-in-process") + "/trace.json"
        try TraceFile.write([recorder.rankTrace(rank: 0, process: "rank 0 (whole model)")], metadata: ["layout": "single"], to: path)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".partial"))

        let trace = try ParsedTrace(path: path)
        XCTAssertEqual(trace.processNames, [0: "rank 0 (whole model)"])
        XCTAssertEqual(trace.metadata["layout"] as? String, "single")
        XCTAssertEqual(trace.steps(of: 0).map(\.name), ["step 0", "step 1", "step 2"])
        XCTAssertEqual(trace.steps(of: 0).map(\.tid), [0, 0, 0], "step spans are on the main row")
        XCTAssertEqual(trace.rowNames[0]?[0], "main")
        trace.checkNesting()
        // Both towers' rows hold every layer's forward and backward once a step; tower 0's the data wait and the update.
        for tower in ["tower 0", "tower 1"] {
            let row = try XCTUnwrap(trace.row(0, named: tower), "no \(tower) row in \(trace.rowNames)")
            let names = trace.spans.filter { $0.tid == row }.map(\.name)
            for layer in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"] {
                XCTAssertEqual(names.filter { $0 == "\(layer) forward" }.count, 3, "\(tower) \(layer) forward")
                XCTAssertEqual(names.filter { $0 == "\(layer) backward" }.count, 3, "\(tower) \(layer) backward")
            }
            XCTAssertEqual(names.filter { $0 == "update" }.count, 3, tower)
            XCTAssertGreaterThanOrEqual(names.filter { $0 == "conv3 exchange" }.count, 3, "\(tower): the towers' exchanges")
        }
        let tower0 = try XCTUnwrap(trace.row(0, named: "tower 0"))
        XCTAssertGreaterThanOrEqual(trace.spans.filter { $0.tid == tower0 && $0.name == "data wait" }.count, 3)
        // A step's layer spans (which do not overlap on a row) add up to less than the step.
        for step in trace.steps(of: 0) {
            let inside = trace.spans.filter { $0.tid == tower0 && $0.category != "step" && $0.ts >= step.ts && $0.end <= step.end }
            XCTAssertLessThanOrEqual(inside.filter { $0.category != "exchange" }.map(\.dur).reduce(0, +), step.dur + 0.01)
        }
        // Spans only inside the window: a recorder whose window has not opened keeps nothing.
        let idle = TraceRecorder(window: 5...6)
        idle.record(.conv1, .forward, row: 0, start: 1, end: 2)
        idle.beginStep(4); idle.endStep(4)
        XCTAssertTrue(idle.recorded.isEmpty)
    }

    func testWindowParsingAndDefault() {
        XCTAssertEqual(TraceFile.parseWindow("1:3"), 1...3)
        XCTAssertEqual(TraceFile.parseWindow("4:4"), 4...4)
        for bad in ["3:1", "1", "a:b", "-1:2", "1:2:3", ":", ""] { XCTAssertNil(TraceFile.parseWindow(bad), bad) }
        XCTAssertEqual(TraceFile.defaultWindow(steps: 100), 1...3)
        XCTAssertEqual(TraceFile.defaultWindow(steps: 3), 1...2)
        XCTAssertEqual(TraceFile.defaultWindow(steps: 1), 0...0)
    }
}

/// The binary: one process, and mpirun -np 2 in the model and data layouts.
final class TraceCommandTests: ProcessTestCase {
    override class var needsMPI: Bool { true }
    var common: [String] { ["train", "--data", SmallData.path, "--width", "0.125", "--batch", "8", "--steps", "3", "--threads", "1"] }

    func testOneProcessWritesTheDefaultWindowAndBadOptionsRefuse() throws {
        let dir = Paths.temporaryDirectory("trace-cli")
        let r = runProcess(Paths.binary, common + ["--trace", dir + "/one.json", "--loss-log", dir + "/traced.txt"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.err)
        // Tracing only watches: the same losses, bit for bit, without it.
        let plain = runProcess(Paths.binary, common + ["--loss-log", dir + "/plain.txt"], timeout: 120)
        XCTAssertEqual(plain.status, 0, plain.err)
        XCTAssertEqual(readLosses(dir + "/traced.txt").count, 3)
        XCTAssertEqual(readLosses(dir + "/traced.txt"), readLosses(dir + "/plain.txt"))
        let trace = try ParsedTrace(path: dir + "/one.json")
        XCTAssertEqual(trace.steps(of: 0).map(\.name), ["step 1", "step 2"], "default 1:3 clipped to --steps 3")
        XCTAssertEqual(Set(trace.spans.map(\.pid)), [0])
        XCTAssertEqual(trace.metadata["layout"] as? String, "single")
        trace.checkNesting()
        for (args, expected) in [(["--trace", dir + "/x.json", "--trace-steps", "2:1"], "--trace-steps must be A:B"),
                                 (["--trace", dir + "/x.json", "--trace-steps", "1:3"], "--trace-steps 1:3: the run has steps 0…2"),
                                 (["--trace-steps", "1:2"], "--trace-steps goes with --trace"),
                                 (["--trace", dir + "/missing/x.json"], "--trace \(dir)/missing/x.json: the folder")] {
            let bad = runProcess(Paths.binary, common + args, timeout: 60)
            XCTAssertNotEqual(bad.status, 0, "\(args)")
            XCTAssertEqual(bad.err.split(separator: "\n").filter { $0.contains(expected) }.count, 1, "\(args): \(bad.err)")
            XCTAssertFalse(bad.err.contains("Fatal error"), "\(args): \(bad.err)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x.json"))
        }
    }

    /// Model parallelism with rank 1's trace clock 2.5 s ahead: alignment takes it out, so both ranks' steps start
    /// together and the paired tower exchanges (blocking on both sides) overlap in time.
    func testModelLayoutRanksAreAlignedAndExchangesOverlap() throws {
        let path = Paths.temporaryDirectory("trace-model") + "/model.json"
        let r = mpirun(["-np", "2", Paths.binary] + common + ["--mode", "model", "--trace", path, "--trace-steps", "0:2",
                                                             "--debug-trace-skew-rank", "1"], timeout: 240)
        XCTAssertEqual(r.status, 0, r.err)
        let trace = try ParsedTrace(path: path)
        XCTAssertEqual(Set(trace.spans.map(\.pid)), [0, 1])
        XCTAssertEqual(trace.processNames, [0: "rank 0 (tower 0)", 1: "rank 1 (tower 1)"])
        XCTAssertEqual(trace.metadata["layout"] as? String, "model")
        let offsets = try XCTUnwrap(trace.metadata["clock_offsets_ns"] as? [Int])
        XCTAssertEqual(Double(offsets[1]), -2.5e9, accuracy: 5e6, "the measured offset takes the skew out")
        trace.checkNesting()
        let steps0 = trace.steps(of: 0), steps1 = trace.steps(of: 1)
        XCTAssertEqual(steps0.map(\.name), ["step 0", "step 1", "step 2"])
        XCTAssertEqual(steps1.map(\.name), steps0.map(\.name))
        // Within 50 ms (50× less than the skew): two ranks oversubscribing a busy 2-core machine wake from the
        // collective that ends a step up to a few scheduler ticks (4 ms) apart; measured 0–12 ms.
        for (a, b) in zip(steps0, steps1) {
            XCTAssertEqual(a.ts, b.ts, accuracy: 50_000, "\(a.name) starts \(abs(a.ts - b.ts)) µs apart on the two ranks")
        }
        XCTAssertNotNil(trace.row(0, named: "tower 0")); XCTAssertNotNil(trace.row(1, named: "tower 1"))
        for (a, b) in zip(steps0, steps1) {
            let mine = trace.spans.filter { $0.pid == 0 && $0.category == "exchange" && $0.ts >= a.ts && $0.end <= a.end && $0.name != "loss exchange" }
            let theirs = trace.spans.filter { $0.pid == 1 && $0.category == "exchange" && $0.ts >= b.ts && $0.end <= b.end && $0.name != "loss exchange" }
            XCTAssertFalse(mine.isEmpty, a.name)
            let overlapping = mine.filter { m in theirs.contains { $0.name == m.name && $0.ts < m.end && m.ts < $0.end } }
            XCTAssertFalse(overlapping.isEmpty, "\(a.name): no exchange of rank 0 overlaps rank 1's of the same name")
        }
    }

    /// Data parallelism: each step's allreduce buckets are on each rank's "allreduce progress" row, inside the step,
    /// and together cover every gradient of the model once.
    func testDataLayoutBucketsAreOnTheProgressRow() throws {
        let path = Paths.temporaryDirectory("trace-data") + "/data.json"
        let r = mpirun(["-np", "2", Paths.binary] + common + ["--mode", "data", "--gradient-sum", "allreduce", "--trace", path, "--trace-steps", "0:2"], timeout: 240)
        XCTAssertEqual(r.status, 0, r.err)
        let trace = try ParsedTrace(path: path)
        XCTAssertEqual(trace.processNames, [0: "rank 0 (replica 0)", 1: "rank 1 (replica 1)"])
        trace.checkNesting()
        let parameters = ModelConfig(width: 0.125, classes: 10, dropout: 0.5).tensors.reduce(0) { $0 + $1.shape.reduce(1, *) }
        for pid in [0, 1] {
            let row = try XCTUnwrap(trace.row(pid, named: "allreduce progress"), "pid \(pid): rows \(trace.rowNames[pid] ?? [:])")
            let buckets = trace.spans.filter { $0.pid == pid && $0.category == "allreduce" }
            XCTAssertTrue(buckets.allSatisfy { $0.tid == row && $0.name.hasPrefix("allreduce bucket ") }, "\(buckets)")
            for step in trace.steps(of: pid) {
                let inStep = buckets.filter { $0.ts >= step.ts && $0.end <= step.end + 0.01 }
                XCTAssertFalse(inStep.isEmpty, "pid \(pid) \(step.name): no bucket")
                let floats = try inStep.map { try XCTUnwrap($0.args["floats"].flatMap { Int($0) }, "\($0)") }.reduce(0, +)
                XCTAssertEqual(floats, parameters, "pid \(pid) \(step.name): the buckets' floats")
            }
            XCTAssertEqual(trace.steps(of: pid).count, 3)
        }
    }
}
