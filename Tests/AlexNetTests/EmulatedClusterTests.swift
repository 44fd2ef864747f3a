// launch/emulated-cluster on this machine: a data-parallel bench across two network namespaces joined by a shaped
// link, Ctrl-C in the middle of a job, stale namespaces, its refusals, and the syntax of the SLURM templates.
import Foundation
import XCTest

final class EmulatedClusterTests: ProcessTestCase {
    override class var needsMPI: Bool { true }

    static let script = Paths.repository + "/launch/emulated-cluster"
    static let layouts = ["single", "model", "data", "hybrid", "owt"]

    func requireRoot() throws {
        guard getuid() == 0 else { throw XCTSkip("launch/emulated-cluster needs root (network namespaces, tc): run the tests as root") }
    }

    /// `ip` as found on PATH (iproute2).
    func ip(_ arguments: [String]) -> String {
        runProcess(Paths.onPath("ip") ?? "/usr/sbin/ip", arguments, timeout: 30).out
    }

    /// The network namespaces whose name starts with `prefix-` (all of this script's when `prefix` is nil).
    func namespaces(prefix: String?) -> [String] {
        ip(["netns", "list"]).split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
            .filter { name in
                if let prefix { return name.hasPrefix(prefix + "-") }
                return name.range(of: #"^anm[0-9]+-"#, options: .regularExpression) != nil
            }
    }

    /// Veth interfaces in this (the machine's) namespace: the script must never create one here.
    func rootVeths() -> [String] {
        ip(["-o", "link", "show", "type", "veth"]).split(separator: "\n").map(String.init).sorted()
    }

    /// The run's namespace prefix (`anm<pid of the script>`), from its first line.
    func runPrefix(_ stderr: String) -> String? {
        stderr.range(of: #"anm[0-9]+(?=-n1)"#, options: .regularExpression).map { String(stderr[$0]) }
    }

    /// Processes whose command line contains `marker` (a path unique to one test run).
    func processes(containing marker: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { Int($0) != nil }.compactMap { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return nil }
            let line = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return line.contains(marker) ? "\(pid): \(line)" : nil
        }
    }

    /// Acceptance: `bench --mode data` on 2 emulated nodes joined by a 1 Gbit/s link runs, prints and writes the
    /// links' measured latency, the gradient allreduce crosses the link, and no namespace of the run is left.
    func testDataParallelBenchAcrossTwoShapedNodes() throws {
        try requireRoot()
        let dir = Paths.temporaryDirectory("emulated-bench")
        let veths = rootVeths()
        let r = runProcess(Self.script, ["--nodes", "2", "--bandwidth", "1gbit", "--latency-file", dir + "/latency.txt", "--",
                                         Paths.binary, "bench", "--mode", "data", "--threads", "1", "--width", "0.125",
                                         "--batch", "16", "--steps", "2"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.err + r.out)
        XCTAssertTrue(r.out.contains("2 ranks × 1 thread"), "the bench did not run on 2 ranks:\n\(r.out)")
        let prefix = try XCTUnwrap(runPrefix(r.err), "no namespace prefix in:\n\(r.err)")

        // The latency, printed (µs, one way) and written (seconds): positive, and far below a millisecond since the
        // links add no propagation delay (a scheduler hiccup in the median of 200 would still stay below 10 ms).
        let printed = try XCTUnwrap(r.err.range(of: #"link latency n1–n2: [0-9.]+ µs one way"#, options: .regularExpression),
                                    "no measured latency in:\n\(r.err)")
        let microseconds = Double(r.err[printed].split(separator: " ")[3]) ?? -1
        XCTAssertGreaterThan(microseconds, 0)
        XCTAssertLessThan(microseconds, 10_000)
        let file = (try? String(contentsOfFile: dir + "/latency.txt", encoding: .utf8)) ?? ""
        var values: [String: String] = [:]
        for line in file.split(separator: "\n") where !line.hasPrefix("#") {
            let pair = line.split(separator: "=", maxSplits: 1).map(String.init)
            if pair.count == 2 { values[pair[0]] = pair[1] }
        }
        XCTAssertEqual(values["bandwidth_bits_per_second"], "1000000000", file)
        let seconds = try XCTUnwrap(values["latency_seconds"].flatMap(Double.init), "no latency_seconds in:\n\(file)")
        XCTAssertEqual(seconds * 1e6, microseconds, accuracy: 0.1, "the file and the printed latency differ")

        // Three allreduces of the 5,625,696-byte gradient (warm-up and 2 timed steps): a 2-rank ring sends each rank's
        // half twice, the whole buffer a step, so each link carries at least 3 × 5.6 MB each way. Over shared memory or
        // loopback the link would carry only the few kB of the latency measurement.
        let gradient = 5_625_696
        XCTAssertTrue(r.out.contains("gradient allreduce: 5,625,696 B a step"), r.out)
        let traffic = try XCTUnwrap(r.err.range(of: #"bytes over the links: .*"#, options: .regularExpression), r.err)
        let numbers = r.err[traffic].split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        XCTAssertEqual(numbers.count, 6, "n1 sent/received, n2 sent/received: \(r.err[traffic])")   // 1, sent, received, 2, …
        if numbers.count == 6 {
            for bytes in [numbers[1], numbers[2], numbers[4], numbers[5]] {
                XCTAssertGreaterThanOrEqual(bytes, 3 * gradient, "too little crossed the link: \(r.err[traffic])")
            }
        }

        XCTAssertEqual(namespaces(prefix: prefix), [], "namespaces left behind")
        XCTAssertEqual(rootVeths(), veths, "the machine's own interfaces changed")
    }

    /// Acceptance: Ctrl-C (SIGINT to the script's process group) while a data-parallel job trains stops the job and
    /// leaves no namespace, no link and no alexnet-mpi process behind, within 20 s.
    func testInterruptRemovesEverything() throws {
        try requireRoot()
        let dir = Paths.temporaryDirectory("emulated-interrupt")
        let marker = dir + "/losses.txt"   // in every rank's command line, and nobody else's
        let veths = rootVeths()
        let outFile = dir + "/out.txt", errFile = dir + "/err.txt"
        _ = FileManager.default.createFile(atPath: outFile, contents: nil)
        _ = FileManager.default.createFile(atPath: errFile, contents: nil)
        // setsid: the script leads its own process group (its pid is in its namespace prefix), as in a terminal.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Paths.onPath("setsid") ?? "/usr/bin/setsid")
        p.arguments = ["-w", Self.script, "--nodes", "2", "--bandwidth", "1gbit", "--", Paths.binary, "train", "--mode", "data",
                       "--data", SmallData.path, "--threads", "1", "--width", "0.125", "--batch", "16", "--steps", "100000",
                       "--loss-log", marker]
        p.standardOutput = FileHandle(forWritingAtPath: outFile)
        p.standardError = FileHandle(forWritingAtPath: errFile)
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

        // Wait for the job to train (a progress line), then interrupt it.
        func training() -> Bool { read(outFile).range(of: #"step +[0-9]+/100000"#, options: .regularExpression) != nil }
        _ = poll(for: 90, every: 100_000) { !p.isRunning || training() }
        XCTAssertTrue(training(), "the job never trained:\n\(read(errFile))\n\(read(outFile))")
        let prefix = try XCTUnwrap(runPrefix(read(errFile)), "no namespace prefix in:\n\(read(errFile))")
        XCTAssertEqual(namespaces(prefix: prefix).count, 3, "hub, n1, n2 while the job runs")
        let ranks = processes(containing: marker).filter { $0.contains(": " + Paths.binary + " train") }
        XCTAssertEqual(ranks.count, 2, "the 2 ranks while the job runs: \(processes(containing: marker))")
        let group = try XCTUnwrap(pid_t(prefix.dropFirst(3)))
        XCTAssertEqual(kill(-group, SIGINT), 0, "cannot signal the script's process group \(group)")
        let ended = poll(for: 20) { !p.isRunning }
        XCTAssertTrue(ended, "still running 20 s after SIGINT:\n\(read(errFile))")
        guard ended else { return }
        p.waitUntilExit()

        XCTAssertEqual(p.terminationStatus, 130, read(errFile))
        XCTAssertTrue(read(errFile).contains("caught SIGINT"), read(errFile))
        XCTAssertEqual(namespaces(prefix: prefix), [], "namespaces left behind")
        XCTAssertEqual(rootVeths(), veths, "links left behind in the machine's namespace")
        XCTAssertEqual(processes(containing: marker), [], "processes left behind")
    }

    /// --cleanup-stale removes the namespaces of a run that is no longer alive (killed with SIGKILL, say).
    func testCleanupStaleRemovesDeadRunsNamespaces() throws {
        try requireRoot()
        // A pid no process has: one that just exited.
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let stale = "anm\(gone.processIdentifier)-n1"
        _ = ip(["netns", "add", stale])
        XCTAssertEqual(namespaces(prefix: "anm\(gone.processIdentifier)"), [stale], "could not create \(stale)")
        let r = runProcess(Self.script, ["--cleanup-stale"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains(stale), r.err)
        XCTAssertEqual(namespaces(prefix: "anm\(gone.processIdentifier)"), [], "the stale namespace is still there")
    }

    /// Refusals are one line with exit status 2, before anything is created: a tool missing from PATH, not root,
    /// a subnet this machine already uses, a malformed bandwidth.
    func testRefusals() throws {
        try requireRoot()
        // A PATH holding every tool the script needs but tc.
        let bin = Paths.temporaryDirectory("emulated-no-tc")
        for tool in ["bash", "ip", "mpirun", "unshare", "setsid", "taskset", "hostname", "perl", "awk", "sort", "mktemp"] {
            if let path = Paths.onPath(tool) {
                try? FileManager.default.createSymbolicLink(atPath: bin + "/" + tool, withDestinationPath: path)
            }
        }
        let before = namespaces(prefix: nil)
        let bash = Paths.onPath("bash") ?? "/bin/bash"
        var cases: [(String, [String], String, [String: String])] = [
            ("no tc", [bash, Self.script, "--", "/bin/true"], "missing tc", ["PATH": bin]),
            ("subnet in use", [bash, Self.script, "--subnet", "127.0.0", "--", "/bin/true"], "subnet 127.0.0.0/24 is in use", [:]),
            ("bad bandwidth", [bash, Self.script, "--bandwidth", "fast", "--", "/bin/true"], "--bandwidth must be", [:]),
            ("no command", [bash, Self.script, "--nodes", "2"], "no command", [:]),
        ]
        if let setpriv = Paths.onPath("setpriv") {   // drop root for one run
            cases.append(("not root", [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bash, Self.script, "--", "/bin/true"],
                          "must run as root", [:]))
        }
        for (name, command, message, environment) in cases {
            let r = runProcess(command[0], Array(command.dropFirst()), environment: environment, timeout: 30)
            XCTAssertEqual(r.status, 2, "\(name): \(r.err)")
            XCTAssertTrue(r.err.contains(message), "\(name): \(r.err)")
            XCTAssertEqual(r.err.split(separator: "\n").count, 1, "\(name): not one line: \(r.err)")
            XCTAssertEqual(r.out, "", name)
        }
        XCTAssertEqual(namespaces(prefix: nil), before, "a refusal created a namespace")
    }

    /// Acceptance: every SLURM template passes `bash -n`, and each layout has one that launches with both
    /// `srun --mpi=pmix` and `mpirun`; the launch script itself parses too.
    func testSlurmTemplatesParse() throws {
        let configs = Paths.repository + "/cluster-configs"
        let templates = try FileManager.default.contentsOfDirectory(atPath: configs).filter { $0.hasSuffix(".sbatch") }.sorted()
        for layout in Self.layouts {
            let name = "slurm-\(layout).sbatch"
            XCTAssertTrue(templates.contains(name), "no \(name) in cluster-configs")
            let text = (try? String(contentsOfFile: configs + "/" + name, encoding: .utf8)) ?? ""
            XCTAssertTrue(text.contains("srun --mpi=pmix"), "\(name): no srun --mpi=pmix")
            XCTAssertTrue(text.contains("mpirun "), "\(name): no mpirun")
            if layout != "single" { XCTAssertTrue(text.contains("--mode \(layout)"), "\(name): does not run --mode \(layout)") }
        }
        let bash = Paths.onPath("bash") ?? "/bin/bash"
        for file in templates.map({ configs + "/" + $0 }) + [Self.script] {
            let r = runProcess(bash, ["-n", file], timeout: 30)
            XCTAssertEqual(r.status, 0, "bash -n \(file): \(r.err)")
        }
    }
}
