// `alexnet-mpi export-embedded`: the embedded shapes dataset written as a NumPy dataset, or as folders of JPEG files
// (to try and measure `prepare` on).
import AlexNet
import ArgumentParser

struct ExportEmbedded: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-embedded",
        abstract: "Write images of the embedded dataset as a NumPy dataset (images.npy uint8 (N, 256, 256, 3), labels.npy int64), or as JPEG files in class folders or a flat folder with labels.txt.")

    @Option(help: "Folder to write (created if missing).")
    var out: String
    @Option(help: "Number of images.")
    var count: Int = 100
    @Option(help: "Seed of the embedded dataset.")
    var seed: UInt64 = 1
    @Flag(name: .customLong("held-out"), help: "Export the held-out split instead of the training split.")
    var heldOut = false

    @Option(help: "numpy (images.npy, labels.npy), folders (OUT/<class>/*.JPEG) or flat (OUT/*.JPEG and labels.txt: a class name a line, in file-name order).")
    var format: Format = .numpy
    @Option(name: .customLong("image-size"), help: "JPEG files' width×height (the 256 × 256 images stretched; ILSVRC's typical photo is 500×375).")
    var imageSize: String = "500x375"
    @Option(help: "JPEG quality (1–100).")
    var quality: Int = 90

    enum Format: String, ExpressibleByArgument, CaseIterable { case numpy, folders, flat }

    var size: (width: Int, height: Int)? {
        let parts = imageSize.lowercased().split(whereSeparator: { $0 == "x" || $0 == "×" }).compactMap { Int($0) }
        return parts.count == 2 && (1...8192).contains(parts[0]) && (1...8192).contains(parts[1]) ? (parts[0], parts[1]) : nil
    }

    func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        guard size != nil else { throw ValidationError("--image-size must be WIDTHxHEIGHT, each 1…8192 (got \(imageSize))") }
        guard (1...100).contains(quality) else { throw ValidationError("--quality must be in 1…100 (got \(quality))") }
    }

    func run() throws {
        switch format {
        case .numpy:
            try EmbeddedShapes.export(seed: seed, heldOut: heldOut, count: count, to: out)
            print("wrote \(count) images to \(out)/images.npy and labels.npy")
        case .folders, .flat:
            let (w, h) = size!
            try EmbeddedShapes.exportImages(seed: seed, heldOut: heldOut, count: count, to: out,
                                            layout: format == .flat ? .flat : .classFolders, width: w, height: h, quality: quality)
            print("wrote \(count) JPEG files of \(w)×\(h) to \(out)" + (format == .flat ? " and their labels to \(out)/labels.txt" : " (a folder a class)"))
        }
    }
}

