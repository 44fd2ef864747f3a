// Process plumbing of the command line: the MPI world (if mpirun started us), printing on rank 0, ending every rank,
// and the hidden `sgemm-rate` child that measures OpenBLAS with the best kernels.
import AlexNet
import AlexNetMPI
import ArgumentParser
import Foundation

/// The MPI world this process runs in, if it was started by mpirun.
enum Launch {
    static let world: MPICommunicator? = {
        guard MPICommunicator.launchedByMPI else { return nil }
        do { return try MPICommunicator.world() } catch {
            FileHandle.standardError.write("alexnet-mpi: error: cannot start MPI: \(error)\n".data(using: .utf8)!)
            exit(1)
        }
    }()
    static var rank: Int { world?.rank ?? 0 }
    static var size: Int { world?.size ?? 1 }

    /// One error line on stderr, naming this rank under MPI.
    static func complain(_ message: String) {
        let who = size > 1 ? "rank \(rank): " : ""
        FileHandle.standardError.write("alexnet-mpi: \(who)error: \(message)\n".data(using: .utf8)!)
    }

    /// Prints (every rank that fails prints, naming itself) and stops all ranks within seconds.
    static func fail(_ message: String) -> Never {
        complain(message)
        if size > 1 { MPICommunicator.abortAll(code: 1) }
        if world != nil { MPICommunicator.finalize() }
        exit(1)
    }

    static func finish(code: Int32) -> Never {
        fflush(nil)
        if world != nil { MPICommunicator.finalize() }
        exit(code)
    }

    /// Prints on rank 0 only.
    static func say(_ text: String) {
        if rank == 0 { print(text); fflush(nil) }
    }
}

/// `alexnet-mpi sgemm-rate` (hidden): OpenBLAS's sgemm rate with the kernels this process loaded, in GFLOP/s. `bench`
/// runs it in a child process with the best kernels the CPU supports when it runs lower ones itself.
struct SgemmRate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sgemm-rate", shouldDisplay: false)
    @Option var threads: Int = 1

    func run() throws {
        Blas.setThreads(max(1, threads))
        print(String(format: "%.3f", Benchmark.sgemmGflops()))
    }

    /// The rate with the best kernels this CPU supports, measured in a child process (OpenBLAS chooses its kernels
    /// once, when it loads); nil when this process already runs them.
    static func withBestKernels(threads: Int) -> Double? {
        let best = BlasKernels.bestCore(flags: BlasKernels.cpuFlags)
        guard let current = BlasKernels.level(ofCore: Blas.coreName), current < best.level else { return nil }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        child.arguments = ["sgemm-rate", "--threads", "\(threads)"]
        // Not an MPI process: without the launcher's variables it does not start MPI.
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") && !$0.key.hasPrefix("PMI_") }
        env["OPENBLAS_CORETYPE"] = best.core
        child.environment = env
        let pipe = Pipe()
        child.standardOutput = pipe
        do { try child.run() } catch { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        child.waitUntilExit()
        return Double(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
