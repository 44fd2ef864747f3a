// Keeps the blocks Open MPI's collectives allocate every step in the heap instead of fresh mappings: glibc maps any
// block above its mmap threshold anew and unmaps it on free, so each step paid a page fault and a zeroed page for
// every 4 kB of the allreduce's scratch (about 29,000 a step a rank at W = 1: 85 ms of the data-parallel step).
import CMPI
import Foundation

public enum MallocTuning {
    /// glibc's largest mmap threshold (half its 64 MB heap size): blocks below it come from the heap. Gradient buckets
    /// stay below it (GradientAllreduce), so their scratch is reused from step to step.
    public static let heapBlockLimit: Int32 = 32 << 20
    /// Free memory at the top of the heap kept rather than given back (and faulted in again the next step).
    public static let keptFreeHeap: Int32 = .max

    /// Sets both, unless the user chose either through glibc's environment variables.
    public static func keepCollectiveScratchInTheHeap() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["MALLOC_MMAP_THRESHOLD_"] == nil, environment["MALLOC_TRIM_THRESHOLD_"] == nil else { return }
        _ = shim_keep_heap_blocks_below(heapBlockLimit, keptFreeHeap)   // a tuning: nothing to do if glibc refuses
    }
}
