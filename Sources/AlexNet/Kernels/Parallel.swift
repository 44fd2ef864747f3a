// Splits the tight non-BLAS loops (im2col, pooling, LRN, ...) over the threads a rank owns.
import Dispatch
import Foundation

public enum Parallel {
    /// Cores this process may run on: its CPU affinity (mpirun binds each rank to its cores), else all online ones.
    public static var availableCores: Int {
        // Linux: the affinity mask in /proc/self/status, e.g. "Cpus_allowed:\t00000000,00000003" (hex words).
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) {
            let hex = line.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
            let n = hex.reduce(0) { $0 + (Int(String($1), radix: 16) ?? 0).nonzeroBitCount }
            if n > 0 { return min(n, max(1, ProcessInfo.processInfo.activeProcessorCount)) }
        }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Threads the Swift loops may use; set together with the BLAS thread count.
    nonisolated(unsafe) public static var threads = 1

    /// Runs body(range) over contiguous pieces of 0..<count, on up to `threads` threads.
    /// Small loops (fewer than `minimumPerThread` items a thread) run inline.
    @inline(__always)
    public static func forEachChunk(_ count: Int, minimumPerThread: Int = 1, threads: Int = Parallel.threads,
                                    _ body: (Range<Int>) -> Void) {
        let pieces = min(threads, max(1, count / max(1, minimumPerThread)))
        if pieces <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            DispatchQueue.concurrentPerform(iterations: pieces) { p in
                let lo = count * p / pieces, hi = count * (p + 1) / pieces
                if lo < hi { body(lo..<hi) }
            }
        }
    }
}
