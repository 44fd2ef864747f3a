// `alexnet-mpi prepare SRC OUT`: an ImageNet-style folder of JPEG/PNG files decoded (libjpeg-turbo, libpng), resized
// as the paper (shorter side 256, centre crop) and packed once into the uint8 store that training memory-maps.
import AlexNet
import AlexNetMPI
import ArgumentParser
import Foundation

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode an image folder (train/<class>/*.JPEG) once into the packed store train and evaluate read.",
        discussion: """
            SRC holds one folder a class (class index = sorted folder names, as PyTorch's ImageFolder); images may sit at \
            any depth below it. OUT receives images.npy (N, 256, 256, 3) uint8, labels.npy, classes.txt, files.txt, \
            mean.npy, pca.npy and manifest.json (written last: a store without it never loads). --validation adds \
            OUT/heldout from a folder of the same classes, or from a flat folder with --validation-labels. Unreadable \
            files are reported and skipped. An interrupted prepare resumes when rerun. Under mpirun every rank decodes \
            its share of the files.
            """)

    @Argument(help: "The image folder: one subfolder a class.")
    var source: String
    @Argument(help: "The store folder to write.")
    var out: String
    @Option(help: "Validation images, prepared into OUT/heldout: class folders named as SRC's, or a flat folder with --validation-labels.")
    var validation: String?
    @Option(name: .customLong("validation-labels"), help: "For a flat validation folder: one label a line, in sorted file-name order (a class index, or a class folder name).")
    var validationLabels: String?
    @Option(name: .customLong("label-base"), help: "The first class index in --validation-labels (0, or 1 for 1-based files).")
    var labelBase: Int = 0
    @Option(name: .customLong("bad-fraction"), help: "Stop with a summary when more than this fraction of the files cannot be decoded.")
    var badFraction: Double = 0.001
    @Option(help: "Side of the stored square images (the paper: 256).")
    var side: Int = 256
    @OptionGroup var threadOptions: ThreadOptions

    func validate() throws {
        guard badFraction >= 0, badFraction <= 1 else { throw ValidationError("--bad-fraction must be in [0, 1] (got \(badFraction))") }
        guard side >= ModelConfig.inputSize, side <= 4096 else {
            throw ValidationError("--side must be in \(ModelConfig.inputSize)…4096 (the network crops \(ModelConfig.inputSize) × \(ModelConfig.inputSize); got \(side))")
        }
        guard labelBase == 0 || labelBase == 1 else { throw ValidationError("--label-base must be 0 or 1 (got \(labelBase))") }
        if validationLabels != nil && validation == nil { throw ValidationError("--validation-labels goes with --validation DIR") }
    }

    func run() throws {
        let side = self.side
        let decode: @Sendable (String) throws -> [UInt8] = { path in
            ImageResize.shorterSideAndCentreCrop(try ImageDecoder.decode(path: path), side: side)
        }
        var job = PrepareJob(source: source, out: out, decode: decode)
        (job.side, job.badFraction, job.threads) = (side, badFraction, threadOptions.count)
        try job.run(world: Launch.world)
        guard let validation else { return }
        var held = PrepareJob(source: validation, out: (out as NSString).appendingPathComponent("heldout"), decode: decode)
        (held.side, held.badFraction, held.threads) = (side, badFraction, threadOptions.count)
        (held.labelFile, held.classesFrom, held.labelBase) = (validationLabels, out, labelBase)
        try held.run(world: Launch.world)
    }
}
