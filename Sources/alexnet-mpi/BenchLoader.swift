// `alexnet-mpi bench-loader`: images a second (and a core) the input pipeline assembles from a dataset folder.
import AlexNet
import ArgumentParser
import Foundation

struct BenchLoader: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-loader",
        abstract: "Time the assembly of training batches (random 227 crop, flip, PCA colour noise, mean subtraction) from a dataset folder.")

    @Option(help: "Dataset folder (a prepared store or a NumPy dataset of uint8 pixels).")
    var data: String
    @Option(help: "Images a batch.")
    var batch: Int = 128
    @Option(help: "Timed batches a pass (the best of 3 passes is reported).")
    var batches: Int = 10
    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        guard batch >= 1, batch <= Limits.batch else { throw ValidationError("--batch must be in 1…\(Limits.batch) (got \(batch))") }
        guard batches >= 1, batches <= 100_000 else { throw ValidationError("--batches must be in 1…100000 (got \(batches))") }
    }

    func run() throws {
        let set = try NumpyDataset(directory: data)
        guard case .pixels(let h, let w) = set.storage else {
            throw AlexNetError("\(data): holds float32 tensors, which are copied as they are; bench-loader measures pixel datasets (prepare a folder first)")
        }
        let threads = threadOptions.count
        let r = LoaderBenchmark.run(dataset: set, batch: batch, batches: batches, threads: threads)
        print(String(format: "loader: %d images of %d×%d from %@ (%@) in %.2f s on %d thread%@: %.0f images/s, %.0f a core",
                     r.images, h, w, data, set.pixelStatistics != nil ? "statistics from mean.npy, pca.npy" : "statistics sampled",
                     r.seconds, threads, threads == 1 ? "" : "s", r.imagesPerSecond, r.imagesPerSecondPerCore))
        let json: [String: Any] = ["images_per_second": r.imagesPerSecond, "images_per_second_per_core": r.imagesPerSecondPerCore,
                                   "threads": threads, "batch": batch, "images": r.images, "seconds": r.seconds]
        print(String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self))
    }
}
