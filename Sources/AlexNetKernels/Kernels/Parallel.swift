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

    /// Runs body(range) over contiguous pieces of 0..<count, on up to `threads` threads (the caller's share of the
    /// cores, passed down from the command line). Small loops (fewer than `minimumPerThread` items a thread) run inline.
    @inline(__always)
    public static func forEachChunk(_ count: Int, minimumPerThread: Int = 1, threads: Int,
                                    _ body: (Range<Int>) -> Void) {
        let pieces = min(threads, max(1, count / max(1, minimumPerThread)))
        if pieces <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            // The pieces touch disjoint ranges of the caller's buffers, and concurrentPerform returns only when every
            // piece has finished: the body is shared for the duration of this call only.
            let shared = SharedForCall(body)
            DispatchQueue.concurrentPerform(iterations: pieces) { p in
                let lo = count * p / pieces, hi = count * (p + 1) / pieces
                if lo < hi { shared.value(lo..<hi) }
            }
        }
    }
}

extension Parallel {
    /// Runs body(range) like `forEachChunk` and returns the sum of what the pieces return, added in piece order
    /// (the same order whatever the timing, for a given thread count).
    public static func sumOverChunks(_ count: Int, minimumPerThread: Int = 1, threads: Int,
                                     _ body: (Range<Int>) -> Double) -> Double {
        let pieces = min(threads, max(1, count / max(1, minimumPerThread)))
        if pieces <= 1 { return count > 0 ? body(0..<count) : 0 }
        let sums = UnsafeMutablePointer<Double>.allocate(capacity: pieces)
        defer { sums.deallocate() }
        sums.initialize(repeating: 0, count: pieces)
        let slots = SharedForCall(sums)
        withoutActuallyEscaping(body) { body in
            let shared = SharedForCall(body)   // as in forEachChunk: every piece finishes before this returns
            DispatchQueue.concurrentPerform(iterations: pieces) { p in
                let lo = count * p / pieces, hi = count * (p + 1) / pieces
                slots.value[p] = lo < hi ? shared.value(lo..<hi) : 0
            }
        }
        var total = 0.0
        for p in 0..<pieces { total += sums[p] }
        return total
    }
}

/// A value handed to threads that all finish before the call that made it returns (a fork-join region), so that no
/// thread can see it after its owner moves on. Used only where that join is explicit next to it.
public struct SharedForCall<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
