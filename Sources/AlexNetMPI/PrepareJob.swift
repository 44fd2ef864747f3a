// The `prepare` job: packs an image folder into the uint8 NumPy store training reads, in one process or over the
// ranks of an MPI job (each rank decodes its share; rank 0 assembles the store). The decoder is given by the caller.
import AlexNet
import Foundation

public struct PrepareJob {
    /// The image folder: root/<class>/**.{jpg,jpeg,png}, or a flat folder of images when `labelFile` is set.
    public var source: String
    /// The store folder to write (created; resumed if an earlier run was interrupted).
    public var out: String
    /// For a flat folder (the ILSVRC validation set): one label a line in sorted file-name order (see
    /// ImageFolderListing.scanFlat), with the classes of the store `classesFrom` (the prepared training store).
    public var labelFile: String? = nil
    public var classesFrom: String? = nil
    public var labelBase = 0
    public var side = 256
    public var badFraction = 0.001
    /// Decoding threads a rank.
    public var threads = 1
    public var commitEvery = 256
    /// Seconds between progress lines when standard output is not a terminal.
    public var progressInterval = 10.0
    /// Absolute path → side·side·3 RGB bytes; an AlexNetError marks the file bad (skipped and reported).
    public var decode: @Sendable (String) throws -> [UInt8]

    public init(source: String, out: String, decode: @escaping @Sendable (String) throws -> [UInt8]) {
        self.source = source; self.out = out; self.decode = decode
    }

    /// Every rank calls it. Errors that every rank sees alike (the folder, the output's state) end every rank without
    /// an abort (RefusedBeforeWork); an error while decoding or assembling is an AlexNetError, which ends the job (the
    /// committed work stays: rerunning resumes).
    public func run(world: MPICommunicator?) throws {
        let rank = world?.rank ?? 0, ranks = world?.size ?? 1
        let say: (String) -> Void = { if rank == 0 { print($0); fflush(nil) } }
        let listing: ImageFolderListing = try refusedBeforeWork {
            if let labelFile {
                guard let classesFrom else {
                    throw AlexNetError("prepare \(source) with a label file needs the training store whose classes.txt names the classes (prepare the training folder first)")
                }
                return try ImageFolderListing.scanFlat(root: source, labelFile: labelFile, classes: try PreparedStore.classes(directory: classesFrom),
                                                       labelBase: labelBase)
            }
            let found = try ImageFolderListing.scan(root: source)
            // A validation folder in class folders must name the training store's classes, in its order.
            if let classesFrom, case let expected = try PreparedStore.classes(directory: classesFrom), found.classes != expected {
                let missing = expected.filter { !found.classes.contains($0) }, extra = found.classes.filter { !expected.contains($0) }
                throw AlexNetError("\(source): its class folders differ from the classes of \(classesFrom) (\(found.classes.count) vs \(expected.count)"
                                   + (missing.isEmpty ? "" : "; missing \(missing.prefix(3).joined(separator: ", "))")
                                   + (extra.isEmpty ? "" : "; not in training \(extra.prefix(3).joined(separator: ", "))")
                                   + "); give every training class a folder (an empty one is allowed)")
            }
            return found
        }
        let preparation = StorePreparation(listing: listing, out: out, side: side, badFraction: badFraction, threads: threads,
                                           commitEvery: commitEvery, decode: decode)
        // Every rank must list the same files (the same file system view), or the parts would not fit together.
        if let world, ranks > 1 {
            let mine = String(preparation.listingHash(ranks: ranks), radix: 16)
            let all = try world.allGather(bytes: Array(mine.utf8)).map { String(decoding: $0, as: UTF8.self) }
            if let other = all.firstIndex(where: { $0 != all[0] }) {
                throw RefusedBeforeWork(message: "prepare: rank \(world.worldRanks[other]) lists other files in \(source) than rank \(world.worldRanks[0]) (\(listing.files.count) here); every rank must see the same folder")
            }
        }
        for line in listing.problems { say("prepare: " + line) }
        say("prepare: \(source): \(ProgressReporter.grouped(listing.files.count)) images of \(listing.classes.count) classes → \(out) (\(side)×\(side), \(ranks) rank\(ranks == 1 ? "" : "s"))")

        // Rank 0 readies the output folder; the others learn how it went (0 go, 1 nothing to do, 2 refused).
        var start: StorePreparation.Start? = nil, refusal: String? = nil
        if rank == 0 {
            do { start = try preparation.begin(ranks: ranks) } catch let e as AlexNetError { refusal = e.description }
        }
        let code = rank == 0 ? (refusal != nil ? 2.0 : start == .alreadyComplete ? 1 : 0) : 0
        let agreed = try world?.sum(code) ?? code
        if agreed == 2 { throw RefusedBeforeWork(message: refusal ?? "") }
        if agreed == 1 { return say("prepare: \(out) already holds the complete store of this folder; nothing to do") }
        switch start {
        case .resumed?: say("prepare: \(out): resuming the interrupted preparation")
        case .startedOver(let message)?: say("prepare: " + message)
        default: break
        }

        // Pass 1: rank 0 shows its share's progress scaled by the rank count (the shares differ by at most one file).
        let reporter = rank == 0 ? ProgressReporter(label: "prepare", total: listing.files.count, interval: progressInterval) : nil
        let started = PhaseClock.now()
        let part = try preparation.run(rank: rank, ranks: ranks) { done, assigned in
            reporter?.update(done == assigned ? listing.files.count : min(listing.files.count, done * ranks))
        }
        reporter?.finish(listing.files.count)
        if let why = part.restarted { print("prepare: rank \(rank): \(why)"); fflush(nil) }
        try world?.barrier()
        let seconds = Double(PhaseClock.now() - started) * 1e-9
        let decoded = try world?.sum(Double(part.good + part.bad - part.resumedAt)) ?? Double(part.good + part.bad - part.resumedAt)
        if decoded > 0 {
            say(String(format: "prepare: decoded and resized %.0f images in %.1f s: %.0f images/s, %.0f a core (%d rank%@ × %d thread%@)",
                       decoded, seconds, decoded / seconds, decoded / seconds / Double(ranks * threads), ranks, ranks == 1 ? "" : "s",
                       threads, threads == 1 ? "" : "s"))
        }
        guard rank == 0 else { return }

        // Pass 2.
        let writer = ProgressReporter(label: "write images.npy", total: listing.files.count, interval: progressInterval)
        let summary = try preparation.finish(ranks: ranks) { done, _ in writer.update(done) }
        writer.finish(listing.files.count)
        // Once each: the decoder's reason names the file already.
        for bad in summary.badFiles { say("prepare: skipped " + (bad.reason.contains(bad.file) ? bad.reason : "\(bad.file): \(bad.reason)")) }
        say("prepare: \(out): \(ProgressReporter.grouped(summary.images)) images of \(summary.classes) classes"
            + (summary.badFiles.isEmpty ? "" : ", \(summary.badFiles.count) bad files skipped (listed in bad.txt)")
            + String(format: "; colour PCA eigenvalues %.1f, %.1f, %.1f", summary.eigenvalues[0], summary.eigenvalues[1], summary.eigenvalues[2]))
    }
}
