// launch/scaling-study on this machine: a tiny sweep (data parallel on 2 emulated nodes, unshaped and 1 Gbit/s links)
// writes its tables, charts and report and leaves no namespace; the shaped link slows the step by about what
// `alexnet-mpi predict` says; SIGTERM midway keeps what was recorded and a rerun resumes from there.
import Foundation
import XCTest

/// The outcome of the tiny sweep both of the first two tests read, run once (by whichever test needs it first).
struct TinySweepOutcome {
    var status: Int32, out: String, err: String, dir: String, namespacesBefore: [String]
}

final class ScalingStudyTests: ProcessTestCase {
    override class var needsMPI: Bool { true }

    static let script = Paths.repository + "/launch/scaling-study"
    static let tiny = Shared<TinySweepOutcome>()
    /// The sweep of acceptance 2's test: data parallel, 2 ranks, unshaped and 1 Gbit/s links, W = 0.125, batch 16, 1 run.
    static let tinyArguments = ["--layouts", "data", "--ranks", "2", "--bandwidth", "none,1gbit", "--width", "0.125",
                                "--batch", "16", "--classes", "10", "--steps", "3", "--repeats", "1"]

    func requireRoot() throws {
        guard getuid() == 0 else { throw XCTSkip("launch/scaling-study runs emulated nodes (network namespaces, tc): run the tests as root") }
    }

    /// Namespaces of launch/emulated-cluster (`anm<pid>-…`) on this machine.
    func clusterNamespaces() -> [String] {
        runProcess(Paths.onPath("ip") ?? "/usr/sbin/ip", ["netns", "list"], timeout: 30).out.split(separator: "\n")
            .compactMap { $0.split(separator: " ").first.map(String.init) }
            .filter { $0.range(of: #"^anm[0-9]+-"#, options: .regularExpression) != nil }
    }

    /// The namespace prefixes (`anm<pid>`) the study's emulated-cluster runs announced in their logs under `dir`.
    func prefixes(in dir: String) -> Set<String> {
        var found = Set<String>()
        let files = (FileManager.default.subpaths(atPath: dir) ?? []).filter { $0.hasSuffix(".err") }
        for file in files {
            let text = (try? String(contentsOfFile: dir + "/" + file, encoding: .utf8)) ?? ""
            for match in text.matches(of: /anm[0-9]+(?=-n1)/) { found.insert(String(match.output)) }
        }
        return found
    }

    /// Processes whose command line contains `marker`.
    func processes(containing marker: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { Int($0) != nil }.compactMap { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return nil }
            let line = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return line.contains(marker) ? "\(pid): \(line)" : nil
        }
    }

    /// A directory holding a link to alexnet-mpi, so that every rank's command line names the directory.
    func studyDirectory(_ name: String) throws -> (dir: String, binary: String) {
        let dir = Paths.temporaryDirectory(name)
        let binary = dir + "/bin/alexnet-mpi"
        try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: binary, withDestinationPath: Paths.binary)
        return (dir, binary)
    }

    func tinySweep() throws -> TinySweepOutcome {
        try requireRoot()
        return try Self.tiny.get {
            let (dir, binary) = try studyDirectory("scaling-tiny")
            let before = clusterNamespaces()
            let r = runProcess(Self.script, ["--out", dir + "/study", "--binary", binary] + Self.tinyArguments, timeout: 400)
            return .init(status: r.status, out: r.out, err: r.err, dir: dir, namespacesBefore: before)
        }
    }

    func resultsJSON(_ dir: String) throws -> [[String: Any]] {
        let data = try XCTUnwrap(FileManager.default.contents(atPath: dir + "/study/results.json"), "no results.json in \(dir)/study")
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return try XCTUnwrap(object["points"] as? [[String: Any]], "results.json has no points")
    }

    /// Acceptance 1 at small scale: the tiny sweep completes, writes results.csv/json with the predicted figure beside
    /// each measured one, report.md embedding the four PNG charts, and leaves no namespace or process behind.
    func testTinySweepWritesTablesChartsAndReport() throws {
        let sweep = try tinySweep()
        XCTAssertEqual(sweep.status, 0, sweep.err)
        let study = sweep.dir + "/study"
        let csv = (try? String(contentsOfFile: study + "/results.csv", encoding: .utf8)) ?? ""
        let rows = csv.split(separator: "\n")
        XCTAssertEqual(rows.count, 3, "a header and one row a point (data on the unshaped and the 1gbit link):\n\(csv)")
        XCTAssertTrue(rows.first?.hasPrefix("layout,ranks,bandwidth,batch") ?? false, csv)
        for column in ["step_ms", "step_ms_min", "step_ms_max", "predicted_step_ms", "ratio", "allreduce_ms", "latency_us"] {
            XCTAssertTrue(rows.first?.split(separator: ",").contains(Substring(column)) ?? false, "no \(column) column")
        }
        let points = try resultsJSON(sweep.dir)
        XCTAssertEqual(points.count, 2)
        for p in points {
            let measured = try XCTUnwrap(p["step_ms"] as? Double), predicted = try XCTUnwrap(p["predicted_step_ms"] as? Double)
            XCTAssertGreaterThan(measured, 0)
            XCTAssertGreaterThan(predicted, 0)
            // The compared figure is the fastest run's (the least disturbed), and the median run's beside it.
            XCTAssertEqual(try XCTUnwrap(p["ratio"] as? Double), try XCTUnwrap(p["step_ms_min"] as? Double) / predicted, accuracy: 1e-9)
            XCTAssertEqual(try XCTUnwrap(p["ratio_median_run"] as? Double), measured / predicted, accuracy: 1e-9)
            XCTAssertLessThanOrEqual(try XCTUnwrap(p["step_ms_min"] as? Double), measured)
            XCTAssertGreaterThanOrEqual(try XCTUnwrap(p["step_ms_max"] as? Double), measured)
            // The gradient allreduce of W = 0.125, 10 classes crosses the link whole: 3,594,216 bytes.
            XCTAssertEqual(p["allreduce_bytes"] as? Double, 3_594_216, "\(p)")
            let latency = try XCTUnwrap(p["latency_us"] as? Double, "no measured latency: \(p)")
            XCTAssertGreaterThan(latency, 0)
            XCTAssertLessThan(latency, 10_000)
        }
        let report = (try? String(contentsOfFile: study + "/report.md", encoding: .utf8)) ?? ""
        XCTAssertTrue(report.contains("| data | 2 | 1gbit | 16 |"), "the main table lacks the 1gbit point:\n\(report)")
        XCTAssertTrue(report.contains("**Link 1gbit, 2 ranks, batch 16.**"), "no paragraph for the 1gbit link:\n\(report)")
        for png in ["throughput.png", "efficiency.png", "split.png", "layouts.png"] {
            let data = FileManager.default.contents(atPath: study + "/" + png) ?? Data()
            XCTAssertEqual(Array(data.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "\(png) is not a PNG")
            XCTAssertGreaterThan(data.count, 5_000, "\(png) is nearly empty")
            XCTAssertTrue(report.contains("](\(png))"), "report.md does not embed \(png)")
        }
        let runs = (try? String(contentsOfFile: study + "/runs.jsonl", encoding: .utf8)) ?? ""
        XCTAssertEqual(runs.split(separator: "\n").count, 2, "one recorded run a point:\n\(runs)")

        let used = prefixes(in: study)
        XCTAssertGreaterThanOrEqual(used.count, 4, "2 link probes and 2 points ran on emulated nodes: \(used)")
        XCTAssertEqual(clusterNamespaces().filter { used.contains(String($0.prefix(while: { $0 != "-" }))) }, [],
                       "namespaces of the study's runs are left")
        XCTAssertEqual(processes(containing: sweep.dir), [], "processes left behind")
    }

    /// Acceptance 2's test: a 1 Gbit/s link makes the data-parallel step slower than an unshaped one, by a factor
    /// within ±50% of the factor `predict` gives for the same two points (same rates, each link as measured).
    func testShapedLinkSlowsDataParallelStepAsPredicted() throws {
        let sweep = try tinySweep()
        XCTAssertEqual(sweep.status, 0, sweep.err)
        let points = try resultsJSON(sweep.dir)
        func point(_ bandwidth: String) throws -> [String: Any] {
            try XCTUnwrap(points.first { $0["bandwidth"] as? String == bandwidth && $0["layout"] as? String == "data" },
                          "no data point on the \(bandwidth) link")
        }
        let unshaped = try point("none"), shaped = try point("1gbit")
        let measured = try XCTUnwrap(shaped["step_ms"] as? Double) / XCTUnwrap(unshaped["step_ms"] as? Double)
        let predicted = try XCTUnwrap(shaped["predicted_step_ms"] as? Double) / XCTUnwrap(unshaped["predicted_step_ms"] as? Double)
        print(String(format: "1 Gbit/s against unshaped, data parallel on 2 nodes: measured %.2f× slower, predicted %.2f× (ratio %.2f)",
                     measured, predicted, measured / predicted))
        XCTAssertGreaterThan(measured, 1.1, "the 1 Gbit/s link did not slow the step: \(shaped) against \(unshaped)")
        XCTAssertGreaterThan(predicted, 1.1, "predict sees no cost in the 1 Gbit/s link: \(shaped)")
        XCTAssertLessThanOrEqual(abs(measured / predicted - 1), 0.5,
                                 String(format: "measured slowdown %.2f× is not within ±50%% of predicted %.2f×", measured, predicted))
        // The link's measured rate is what predict was given: within 80–100% of the tc rate.
        let gbit = try XCTUnwrap(shaped["link_gbit"] as? Double)
        XCTAssertGreaterThan(gbit, 0.8)
        XCTAssertLessThanOrEqual(gbit, 1.0)
    }

    /// Acceptance 1's interrupt: SIGTERM while the second point runs stops the study (status 143) and its emulated
    /// cluster, leaves no namespace and no process, keeps the first point's run in runs.jsonl; a rerun skips that point
    /// and runs only the other.
    func testInterruptKeepsRecordedRunsAndRerunResumes() throws {
        let sweep = try tinySweep()   // its calibration is copied in, so the interrupted sweep reaches its points soon
        XCTAssertEqual(sweep.status, 0, sweep.err)
        let (dir, binary) = try studyDirectory("scaling-interrupt")
        let study = dir + "/study"
        try FileManager.default.createDirectory(atPath: study, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: sweep.dir + "/study/calibration", toPath: study + "/calibration")
        let arguments = ["--out", study, "--binary", binary] + Self.tinyArguments
        let outFile = dir + "/out.txt", errFile = dir + "/err.txt"
        _ = FileManager.default.createFile(atPath: outFile, contents: nil)
        _ = FileManager.default.createFile(atPath: errFile, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.script)
        p.arguments = arguments
        p.standardOutput = FileHandle(forWritingAtPath: outFile)
        p.standardError = FileHandle(forWritingAtPath: errFile)
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        func recorded() -> Int { read(study + "/runs.jsonl").split(separator: "\n").count }

        // Wait until the first point is recorded and the second one's job is running on its emulated nodes.
        func secondRunning() -> Bool {
            let logs = (FileManager.default.subpaths(atPath: study + "/logs") ?? []).filter { $0.contains("bw-1gbit") && $0.hasSuffix(".err") }
            return logs.contains { read(study + "/logs/" + $0).contains("running: mpirun") }
        }
        _ = poll(for: 120) { !p.isRunning || (recorded() == 1 && secondRunning()) }
        XCTAssertTrue(recorded() == 1 && secondRunning(), "the second point never started:\n\(read(errFile))")
        XCTAssertEqual(kill(p.processIdentifier, SIGTERM), 0)
        let ended = poll(for: 30) { !p.isRunning }
        XCTAssertTrue(ended, "still running 30 s after SIGTERM:\n\(read(errFile))")
        guard ended else { return }
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 143, read(errFile))
        XCTAssertTrue(read(errFile).contains("caught SIGTERM"), read(errFile))
        XCTAssertEqual(recorded(), 1, "runs.jsonl lost or gained a run:\n\(read(study + "/runs.jsonl"))")
        let used = prefixes(in: study)
        XCTAssertFalse(used.isEmpty)
        XCTAssertEqual(clusterNamespaces().filter { used.contains(String($0.prefix(while: { $0 != "-" }))) }, [],
                       "namespaces left behind")
        XCTAssertEqual(processes(containing: dir), [], "processes left behind")
        XCTAssertFalse(FileManager.default.fileExists(atPath: study + "/results.csv"), "an interrupted sweep wrote results")

        // The rerun skips the recorded point and runs the other one.
        let r = runProcess(Self.script, arguments, timeout: 300)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("data r2 b16 t1 bw=none w0.125 c10 s3: skipped, its 1 run(s) are recorded"), r.err)
        XCTAssertTrue(r.err.contains("data r2 b16 t1 bw=1gbit w0.125 c10 s3: run 1/1"), r.err)
        XCTAssertFalse(r.err.contains("bw=none w0.125 c10 s3: run 1/1"), "the recorded point ran again:\n\(r.err)")
        XCTAssertEqual(recorded(), 2)
        XCTAssertTrue(FileManager.default.fileExists(atPath: study + "/report.md"))
        XCTAssertEqual(processes(containing: dir), [], "processes left behind")
    }
}
