// Whether output goes to a person at a terminal (progress lines rewrite themselves there, and print plain lines
// every few seconds into logs).
import Foundation

public enum Terminal {
    /// Standard output is a terminal and this process is not an MPI rank: mpirun hands each rank a pseudo-terminal
    /// even when its own output goes to a file or a pipe, so ranks print plain lines.
    public static var isInteractive: Bool {
        isatty(1) != 0 && !isMPIRank
    }

    /// Whether an MPI launcher (mpirun, srun) started this process.
    public static var isMPIRank: Bool {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_RANK"] != nil
    }
}
