// `alexnet-mpi export-embedded`: the embedded shapes dataset written as a NumPy dataset.
import AlexNet
import ArgumentParser

struct ExportEmbedded: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-embedded",
        abstract: "Write images of the embedded dataset as a NumPy dataset (images.npy uint8 (N, 256, 256, 3), labels.npy int64).")

    @Option(help: "Folder to write (created if missing).")
    var out: String
    @Option(help: "Number of images.")
    var count: Int = 100
    @Option(help: "Seed of the embedded dataset.")
    var seed: UInt64 = 1
    @Flag(name: .customLong("held-out"), help: "Export the held-out split instead of the training split.")
    var heldOut = false

    func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        try EmbeddedShapes.export(seed: seed, heldOut: heldOut, count: count, to: out)
        print("wrote \(count) images to \(out)/images.npy and labels.npy")
    }
}

