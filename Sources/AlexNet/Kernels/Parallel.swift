// Splits the tight non-BLAS loops (im2col, pooling, LRN, ...) over the threads a rank owns.
import Dispatch

public enum Parallel {
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
