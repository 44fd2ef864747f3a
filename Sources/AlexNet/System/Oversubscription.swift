// The warning a rank gives when the ranks on its node and their threads exceed the cores they may use.
import Foundation

/// Warns (on stderr, once a node) when the ranks on this node times their threads exceed the cores they may run on:
/// every thread then shares a core, and compute times stop meaning what one core does.
public enum Oversubscription {
    public static func warning(threads: Int, environment: [String: String] = ProcessInfo.processInfo.environment,
                               allowed: Int = Parallel.availableCores, online: Int = ProcessInfo.processInfo.activeProcessorCount) -> String? {
        let onNode = Int(environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
        if threads > allowed {
            return "\(threads) threads a rank, but this rank may run on \(allowed) core\(allowed == 1 ? "" : "s") (its CPU affinity): threads will share cores; use --threads \(allowed), or bind the ranks to more cores (mpirun --bind-to none, or --map-by ppr:N:node:pe=T)"
        }
        if onNode * threads > online {
            return "\(onNode) ranks on this node × \(threads) thread\(threads == 1 ? "" : "s") = \(onNode * threads) threads on \(online) cores: they will share cores; use fewer ranks a node or --threads \(max(1, online / onNode))"
        }
        return nil
    }

    public static func warn(threads: Int) {
        let localRank = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_RANK"] ?? "") ?? 0
        guard localRank == 0, let text = warning(threads: threads) else { return }
        FileHandle.standardError.write("alexnet-mpi: warning: \(text)\n".data(using: .utf8)!)
    }
}
