// Shared test helpers: paths to the repository and shared/, relative errors, small random tensors.
import AlexNet
import Foundation
import XCTest

enum Paths {
    /// The repository root (…/Tests/AlexNetTests/Support.swift → three levels up).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    /// shared/ lies beside the repository (in CI too).
    static let shared = (repository as NSString).appendingPathComponent("../shared")
    static let fixture = (shared as NSString).appendingPathComponent("reference/tiny")
    /// The release binary that .ci/run builds before the tests.
    static var binary: String {
        for config in ["release", "debug"] {
            let p = (repository as NSString).appendingPathComponent(".build/\(config)/alexnet-mpi")
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return (repository as NSString).appendingPathComponent(".build/release/alexnet-mpi")
    }

    static func temporaryDirectory(_ name: String) -> String {
        let p = NSTemporaryDirectory() + "alexnet-tests-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: p)
        try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
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
    FileManager.default.createFile(atPath: outFile, contents: nil)
    FileManager.default.createFile(atPath: errFile, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: outFile); try? FileManager.default.removeItem(atPath: errFile) }
    p.standardOutput = FileHandle(forWritingAtPath: outFile)
    p.standardError = FileHandle(forWritingAtPath: errFile)
    do { try p.run() } catch { return (-1, "", "cannot start \(executable): \(error)") }
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { p.terminate(); usleep(500_000); if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
    p.waitUntilExit()
    let out = (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? ""
    let err = (try? String(contentsOfFile: errFile, encoding: .utf8)) ?? ""
    return (p.terminationStatus, out, err)
}

/// The PyTorch fixture through the command line: two SGD steps on its four images, checked as updates.
enum Fixture {
    static func trainArguments(saveTo out: String) -> [String] {
        ["train", "--data", Paths.fixture, "--init-from", Paths.fixture + "/weights.safetensors", "--save", out,
         "--no-augment", "--dropout", "0", "--steps", "2", "--batch", "4", "--width", "0.125", "--classes", "10", "--threads", "1"]
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
