// Shared test helpers: paths to the repository, its fixture, the binary under test and mpirun; relative errors,
// small random tensors, processes with a timeout.
import AlexNet
import Foundation
import XCTest

/// A test's precondition that does not hold (no binary, a stale one, no mpirun, no fixture): one line saying what to do.
struct MissingPrerequisite: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum Paths {
    /// The repository root (…/Tests/AlexNetTests/Support.swift → three levels up).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    /// The PyTorch fixture, committed with the tests (Tests/Fixtures/README.md says how it was made).
    static let fixture = (repository as NSString).appendingPathComponent("Tests/Fixtures/tiny")
    static let regenerateFixture = "pip install -r Tests/Fixtures/requirements.txt && "
        + "python3 Tests/Fixtures/make_fixture.py Tests/Fixtures/tiny --width 0.125 --classes 10 --batch 4 --seed 1"

    /// Throws one line naming the missing file and the command (from the repository root) that writes the fixture.
    static func requireFixture() throws {
        for file in ["weights.safetensors", "expected.safetensors", "images.npy", "labels.npy"] {
            let path = (fixture as NSString).appendingPathComponent(file)
            if !FileManager.default.fileExists(atPath: path) {
                throw MissingPrerequisite("the PyTorch fixture is missing (\(path)); regenerate it from \(repository) with: \(regenerateFixture)")
            }
        }
    }

    /// The folder of the running test bundle: .build/<triple>/release (or debug), where the same `swift build`
    /// put alexnet-mpi. Never another configuration's binary, which may be stale.
    static let buildFolder: String = {
        #if os(Linux)
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return (exe as NSString).deletingLastPathComponent
        }
        #endif
        if let bundle = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) {
            return (bundle.bundlePath as NSString).deletingLastPathComponent
        }
        return (Bundle.main.bundlePath as NSString).deletingLastPathComponent
    }()

    /// The alexnet-mpi beside the test bundle (check it with `requireBinary()` first).
    static var binary: String { (buildFolder as NSString).appendingPathComponent("alexnet-mpi") }

    /// Throws one line if alexnet-mpi is missing from the test bundle's build folder or older than an object file it
    /// is linked from (a `swift build` that rebuilt the library but not the executable); returns its path.
    @discardableResult
    static func requireBinary() throws -> String {
        let fm = FileManager.default, path = binary
        let rebuild = "run `swift build -c release --build-tests` (./test.sh does) before `swift test --skip-build`"
        guard fm.isExecutableFile(atPath: path) else {
            throw MissingPrerequisite("alexnet-mpi is missing beside the test bundle (\(path)); \(rebuild)")
        }
        func modified(_ p: String) -> Date? { (try? fm.attributesOfItem(atPath: p))?[.modificationDate] as? Date }
        guard let built = modified(path) else { return path }
        // SwiftPM lists the executable's objects here; without the list, compare with the test bundle itself.
        let list = (buildFolder as NSString).appendingPathComponent("alexnet-mpi.product/Objects.LinkFileList")
        let inputs = ((try? String(contentsOfFile: list, encoding: .utf8))?.split(separator: "\n").map(String.init))
            ?? [ProcessInfo.processInfo.arguments[0]]
        for input in inputs {
            if let t = modified(input.trimmingCharacters(in: .whitespaces)), t > built {
                throw MissingPrerequisite("alexnet-mpi (\(path)) is older than \(input), which it is built from; \(rebuild)")
            }
        }
        return path
    }

    /// `name` on PATH, as a shell would find it.
    static func onPath(_ name: String) -> String? {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        return dirs.map { ($0 as NSString).appendingPathComponent(name) }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func temporaryDirectory(_ name: String) -> String {
        let p = NSTemporaryDirectory() + "alexnet-tests-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: p)
        try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
}

/// A small NumPy copy of the embedded shapes, exported once per test process: its first 256 training images, and a
/// heldout/ folder of its first 16 held-out ones. Runs that test something other than accuracy train on it: they start
/// without the embedded set's statistics pass (1,000 generated images, ~1.7 s a process) and end without evaluating
/// its 1,000 held-out images (~3 s), which would otherwise be most of a short run's time (mpirun's ranks each pay both).
enum SmallData {
    static let path: String = {
        let dir = Paths.temporaryDirectory("small-data")
        for (out, extra) in [(dir, ["--count", "256"]), (dir + "/heldout", ["--count", "16", "--held-out"])] {
            let r = runProcess(Paths.binary, ["export-embedded", "--out", out] + extra, timeout: 120)
            if r.status != 0 { print("SmallData: export-embedded into \(out) failed (\(r.status)): \(r.err)") }
        }
        return dir
    }()
}

extension DataSplits {
    /// The first `training` and `heldOut` images of the embedded shapes of `seed`, the statistics (mean image, colour
    /// PCA) from the training ones: for in-process trainers of a few steps, which would otherwise spend ~1.5 s on the
    /// full set's statistics (1,000 generated images) and, when they run to the end, ~3 s evaluating 1,000 images.
    static func smallEmbedded(seed: UInt64, training: Int = 64, heldOut: Int = 16) -> DataSplits {
        DataSplits(train: EmbeddedShapes(seed: seed, heldOut: false, count: training),
                   heldOut: EmbeddedShapes(seed: seed, heldOut: true, count: heldOut), heldOutIsTrainingSet: false,
                   classes: EmbeddedShapes.classNames.count, description: "\(training) + \(heldOut) embedded shapes",
                   statisticsSamples: training)
    }
}

/// A value made by the first test that asks for it and shared by the others (XCTest makes a new instance for each
/// test, so a class's shared runs live in a static `Shared`).
final class Shared<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value? = nil   // under lock

    func get(_ make: () throws -> Value) rethrows -> Value {
        try lock.withLock {
            if let value { return value }
            let made = try make()
            value = made
            return made
        }
    }
}

enum MPI {
    /// mpirun as found on PATH (Open MPI's, from openmpi-bin); "mpirun" when it is not there, which then fails to start.
    static let launcher: String = Paths.onPath("mpirun") ?? "mpirun"

    /// Throws one line when mpirun is not on PATH.
    static func requireLauncher() throws {
        guard Paths.onPath("mpirun") != nil else {
            throw MissingPrerequisite("mpirun is not on PATH: install openmpi-bin (apt-get install openmpi-bin, or ./install.sh)")
        }
    }
}

/// Tests that start alexnet-mpi (and mpirun): a missing or stale binary, or no mpirun on PATH, fails the test with
/// the one line that says what to do, before it runs. (An error thrown from setUpWithError would print twice on Linux:
/// as a failure and as a skip.)
class ProcessTestCase: XCTestCase {
    /// Whether the class's tests run mpirun.
    class var needsMPI: Bool { false }

    override func invokeTest() {
        do {
            try Paths.requireBinary()
            if Self.needsMPI { try MPI.requireLauncher() }
        } catch {
            XCTFail("\(error)")
            return
        }
        super.invokeTest()
    }
}

/// Runs `mpirun` with the flags every test needs (root allowed, more ranks than cores allowed).
func mpirun(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 300) -> (status: Int32, out: String, err: String, seconds: Double) {
    let start = Date()
    let r = runProcess(MPI.launcher, ["--oversubscribe"] + arguments,
                       environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                                     "OMPI_MCA_btl_vader_single_copy_mechanism": "none"].merging(environment) { $1 },
                       timeout: timeout)
    return (r.status, r.out, r.err, Date().timeIntervalSince(start))
}

/// The `step loss` lines of a --loss-log file, as numbers (empty when the file is missing).
func readLosses(_ path: String) -> [Double] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
        $0.split(separator: " ").last.flatMap { Double($0) }
    }
}

/// ‖a − b‖ / ‖b‖ (‖a‖ when b is zero).
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "sizes \(a.count) vs \(b.count)")
    var d = 0.0, n = 0.0
    for i in 0..<a.count { d += Double(a[i] - b[i]) * Double(a[i] - b[i]); n += Double(b[i]) * Double(b[i]) }
    return n == 0 ? d.squareRoot() : (d / n).squareRoot()
}

func randomFloats(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    (0..<count).map { scale * CounterRandom.normal(seed: seed, .embeddedImage, 99, UInt64($0)) }
}

/// Runs an executable and returns (exit code, stdout, stderr), with a timeout that kills it.
/// Checks `done` every `interval` µs until it holds or `seconds` have passed; returns whether it holds.
func poll(for seconds: Double, every interval: useconds_t = 50_000, until done: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !done() && Date() < deadline { usleep(interval) }
    return done()
}

func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:], timeout: Double = 600)
    -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let outFile = NSTemporaryDirectory() + "run-\(getpid())-\(UUID().uuidString).out"
    let errFile = outFile + ".err"
    _ = FileManager.default.createFile(atPath: outFile, contents: nil)
    _ = FileManager.default.createFile(atPath: errFile, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: outFile); try? FileManager.default.removeItem(atPath: errFile) }
    p.standardOutput = FileHandle(forWritingAtPath: outFile)
    p.standardError = FileHandle(forWritingAtPath: errFile)
    do { try p.run() } catch { return (-1, "", "cannot start \(executable): \(error)") }
    if !poll(for: timeout, every: 20_000, until: { !p.isRunning }) { p.terminate(); usleep(500_000); if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
    p.waitUntilExit()
    let out = (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? ""
    let err = (try? String(contentsOfFile: errFile, encoding: .utf8)) ?? ""
    return (p.terminationStatus, out, err)
}

/// The PyTorch fixture through the command line: two SGD steps on its four images, checked as updates.
enum Fixture {
    /// Throws (one line, with the command that writes it) when the fixture is missing.
    static func trainArguments(saveTo out: String) throws -> [String] {
        try Paths.requireFixture()
        return ["train", "--data", Paths.fixture, "--init-from", Paths.fixture + "/weights.safetensors", "--save", out,
         "--no-augment", "--dropout", "0", "--steps", "2", "--batch", "4", "--width", "0.125", "--classes", "10", "--threads", "1",
         "--lr", "0.01"]   // the fixture's ε (make_fixture.py's default), not the default job's
    }

    /// The weights in `path` minus the fixture's starting weights equal PyTorch's two updates (relative error < 1e-3).
    static func assertTwoUpdatesMatchPyTorch(_ path: String, _ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let mine = try SafetensorsFile(path: path)
        let start = try SafetensorsFile(path: Paths.fixture + "/weights.safetensors")
        let expected = try SafetensorsFile(path: Paths.fixture + "/expected.safetensors")
        for (name, _) in ModelConfig(width: 0.125, classes: 10).tensors {
            let w0 = try start.readAll(name).values
            let update = zip(try mine.readAll(name).values, w0).map { $0 - $1 }
            let reference = zip(try expected.readAll("step2." + name).values, w0).map { $0 - $1 }
            XCTAssertLessThan(relativeError(update, reference), 1e-3, "\(label): \(name)", file: file, line: line)
        }
    }
}
