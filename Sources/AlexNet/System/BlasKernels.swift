// Which OpenBLAS kernels run, and the best this CPU supports. An OpenBLAS older than the CPU (Debian's 0.3.21 on
// Sapphire Rapids) falls back to its SSE3 "Prescott" kernels, 6× slower; OpenBLAS reads OPENBLAS_CORETYPE only when it
// loads, so the process re-executes itself once with the best supported core set (same PID: mpirun and srun see the
// same rank), unless the user set OPENBLAS_CORETYPE.
import Foundation

public enum BlasKernels {
    /// Vector instruction levels, in the order OpenBLAS's x86 kernels use them.
    public enum Level: Int, Comparable, Sendable, CustomStringConvertible {
        case sse = 1, avx, avx2, avx512
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var description: String { ["SSE", "AVX", "AVX2", "AVX-512"][rawValue - 1] }
    }

    /// The level of an OpenBLAS core name (openblas_get_corename, any case); nil for a name not listed here.
    public static func level(ofCore name: String) -> Level? {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return .avx512
        case "haswell", "zen", "excavator", "steamroller": return .avx2
        case "sandybridge", "bulldozer", "piledriver": return .avx
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine", "northwood", "banias",
             "athlon", "opteron", "opteron_sse3", "barcelona", "bobcat", "nano": return .sse
        default: return nil
        }
    }

    /// The best OpenBLAS 0.3.21 core for a CPU with these /proc/cpuinfo flags, and its level.
    public static func bestCore(flags: Set<String>) -> (core: String, level: Level) {
        let avx512 = CPUFeatures.hasAVX512(flags: flags)
        if avx512 { return (flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX", .avx512) }
        if flags.contains("avx2") && flags.contains("fma") { return ("Haswell", .avx2) }
        if flags.contains("avx") { return ("Sandybridge", .avx) }
        return ("Prescott", .sse)
    }

    /// This CPU's flags (x86 Linux); empty elsewhere.
    public static var cpuFlags: Set<String> { CPUFeatures.flags }

    /// The core OpenBLAS runs on (e.g. "SkylakeX").
    public static var currentCore: String { Blas.coreName }

    static let pickedVariable = "ALEXNET_OPENBLAS_PICKED"

    /// Re-executes this process with OPENBLAS_CORETYPE set to the best core the CPU supports when OpenBLAS chose a
    /// lower one and the user did not choose. Call first thing in main, before MPI starts. Returns only when no
    /// re-execution is needed (or it failed: then the run goes on with OpenBLAS's choice, and `report` says so).
    public static func ensureBest() {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env[pickedVariable] == nil else { return }
        let best = bestCore(flags: cpuFlags)
        guard let current = level(ofCore: currentCore), current < best.level else { return }
        setenv("OPENBLAS_CORETYPE", best.core, 1)
        setenv(pickedVariable, currentCore, 1)
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", arguments)
        // Only reached if exec failed: go on as we are.
        unsetenv("OPENBLAS_CORETYPE")
    }

    /// One line for start-up tables: library, version, kernels in use, and whether they are the best for this CPU.
    public static var report: String {
        let env = ProcessInfo.processInfo.environment
        let best = bestCore(flags: cpuFlags)
        let current = currentCore
        var text = "OpenBLAS \(Blas.version), \(current) kernels"
        if let picked = env[pickedVariable] {
            text += " (set by alexnet-mpi: OpenBLAS chose \(picked) for this CPU, which supports \(best.level))"
        } else if let forced = env["OPENBLAS_CORETYPE"] {
            text += " (OPENBLAS_CORETYPE=\(forced))"
        }
        if let level = level(ofCore: current), level < best.level {
            text += "; WARNING: this CPU supports \(best.level) (\(best.core) kernels): sgemm runs several times slower than it could"
                + (env["OPENBLAS_CORETYPE"] != nil ? "; unset OPENBLAS_CORETYPE to let alexnet-mpi choose" : "")
        }
        return text
    }
}
