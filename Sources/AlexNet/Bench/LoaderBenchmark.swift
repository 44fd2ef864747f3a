// The input pipeline's rate: training batches (random 227 crop, flip, PCA colour noise, mean subtraction) assembled
// from a dataset by the same BatchAssembler training uses, on a given number of threads.
import Foundation

public enum LoaderBenchmark {
    public struct Result: Sendable {
        public var images: Int
        public var seconds: Double
        public var threads: Int
        public var imagesPerSecond: Double { Double(images) / seconds }
        public var imagesPerSecondPerCore: Double { imagesPerSecond / Double(threads) }
    }

    /// Assembles `batches` batches of `batch` images (one warm-up batch first, not timed), each a random draw of the
    /// set as training's shuffle would give, with augmentation on; the best of `repeats` timed passes.
    public static func run(dataset: ImageDataset, batch: Int, batches: Int, threads: Int, seed: UInt64 = 1,
                           repeats: Int = 3) -> Result {
        let assembler = BatchAssembler(training: dataset, seed: seed, sampleLimit: 256)
        assembler.threads = threads
        let x = UnsafeMutablePointer<Float>.allocate(capacity: 3 * batch * ModelConfig.inputSize * ModelConfig.inputSize)   // (3, N, 227, 227)
        defer { x.deallocate() }
        func indices(_ k: Int) -> [Int] {
            (0..<batch).map { Int(CounterRandom.bits(seed: seed, .shuffle, UInt64(k), UInt64($0)) % UInt64(dataset.count)) }
        }
        _ = assembler.assemble(dataset, indices: indices(0), epoch: 0, augment: true, into: x)
        var best = Double.infinity
        for r in 0..<max(1, repeats) {
            let start = PhaseClock.now()
            for k in 0..<batches { _ = assembler.assemble(dataset, indices: indices(1 + r * batches + k), epoch: r, augment: true, into: x) }
            best = min(best, Double(PhaseClock.now() - start) * 1e-9)
        }
        return Result(images: batches * batch, seconds: best, threads: threads)
    }
}
