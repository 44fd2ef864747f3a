// `prepare`: packs an image folder listing into the uint8 NumPy store that training reads (images.npy (N, S, S, 3),
// labels.npy), with the mean image and colour PCA, resumable after an interruption and split over any number of ranks.
//
// A store directory when complete:
//   images.npy   uint8 (N, S, S, 3)   the decoded images that were not bad, in listing order
//   labels.npy   int64 (N,)           their class indices
//   classes.txt  one class name a line (label i is line i)
//   files.txt    the image paths relative to the source folder, one a line, in store order
//   bad.txt      the files skipped: "path<TAB>reason" a line (empty when none)
//   mean.npy     float32 (S, S, 3)    the mean image (pixel units, 0–255)
//   pca.npy      float32 (4, 3)       row 0: eigenvalues of the RGB covariance over every pixel of every image, ascending
//                                     (pixel units²); rows 1–3: the unit eigenvectors as columns (pca[1 + c][j] is
//                                     channel c of eigenvector j)
//   manifest.json  written last, after every other file is synced: counts and the format version. A folder with
//                  files.txt or .parts/ but no manifest.json is an unfinished preparation, which NumpyDataset refuses.
//
// Pass 1 (every rank, `run`): rank r of R decodes the files i ≡ r (mod R) in order into .parts/part-r-of-R.raw (one
// record an image: index, kind, length, pixels or the reason it is bad) and commits every `commitEvery` images:
// the part is synced, then .parts/part-r-of-R.state (how far it got, the committed length, and the exact integer sums
// for the statistics) is replaced atomically. An interrupted rank resumes from its last commit; what the part holds
// beyond the committed length (a half-written record) is cut off. Pass 2 (one rank, `finish`): the parts are read
// in listing order into images.npy (written as images.npy.partial, synced, renamed), the other files are written, then
// the manifest, then .parts is removed. The statistics are sums of integers (exact, so the same for any rank count
// or order), merged from the parts' states: the pixels are read once, in pass 1.
import Foundation

public enum PreparedStore {
    public static let formatVersion = 1
    public static let manifestName = "manifest.json"
    public static let partsName = ".parts"
    /// The files pass 2 writes (removed when a preparation starts over).
    static let outputNames = ["images.npy", "labels.npy", "classes.txt", "files.txt", "bad.txt", "mean.npy", "pca.npy"]

    /// Throws (one line) when `directory` holds a preparation that did not finish: files.txt or .parts/ without
    /// manifest.json. A folder of images.npy and labels.npy made otherwise (no files.txt) passes.
    public static func checkComplete(directory: String) throws {
        func has(_ name: String) -> Bool { FileManager.default.fileExists(atPath: (directory as NSString).appendingPathComponent(name)) }
        if !has(manifestName) && (has("files.txt") || has(partsName)) {
            throw AlexNetError("\(directory): prepare was interrupted (no \(manifestName), which it writes last); rerun alexnet-mpi prepare with the same source and output folder (it resumes)")
        }
    }

    /// The class names of a prepared store (its classes.txt), e.g. to label a validation folder with.
    public static func classes(directory: String) throws -> [String] {
        let path = (directory as NSString).appendingPathComponent("classes.txt")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AlexNetError("\(path): cannot read the class list (prepare the training folder into \(directory) first)")
        }
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines
    }
}

/// One preparation of a listing into a store folder (see the file's comment for the passes and files).
public final class StorePreparation: @unchecked Sendable {   // immutable
    public let listing: ImageFolderListing
    public let out: String
    /// Side of the square images the decoder returns (S: S·S·3 bytes, rows of RGB).
    public let side: Int
    /// Largest fraction of the listing's files that may be bad (undecodable) and skipped; more stops the preparation.
    public let badFraction: Double
    /// Threads that decode at once on this rank.
    public let threads: Int
    /// Images decoded between commits (syncs of the part and its state): the most an interruption loses.
    public let commitEvery: Int
    /// Absolute path → S·S·3 RGB bytes. An AlexNetError means the file is bad (its description is the reason, one
    /// line): it is skipped and reported. Any other error stops the preparation (after committing what came before).
    public let decode: @Sendable (String) throws -> [UInt8]

    public init(listing: ImageFolderListing, out: String, side: Int = 256, badFraction: Double = 0.001, threads: Int = 1,
                commitEvery: Int = 256, decode: @escaping @Sendable (String) throws -> [UInt8]) {
        self.listing = listing; self.out = out; self.side = side; self.badFraction = badFraction
        self.threads = max(1, threads); self.commitEvery = max(1, commitEvery); self.decode = decode
    }

    var plane: Int { side * side * 3 }
    var parts: String { (out as NSString).appendingPathComponent(PreparedStore.partsName) }
    func outPath(_ name: String) -> String { (out as NSString).appendingPathComponent(name) }
    func partPath(_ rank: Int, _ ranks: Int, _ suffix: String) -> String {
        (parts as NSString).appendingPathComponent("part-\(rank)-of-\(ranks).\(suffix)")
    }

    /// Bad files allowed: ⌊badFraction · files⌋.
    public var allowedBadFiles: Int { Int((badFraction * Double(listing.files.count)).rounded(.down)) }

    /// FNV-1a of what the parts depend on: the classes, files and labels, the side and the rank count (not the
    /// source folder's path, nor badFraction, threads or commitEvery, which may change on a resume).
    public func listingHash(ranks: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func add(_ s: String) { for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }; h = (h ^ 0xFF) &* 0x100_0000_01b3 }
        add("side \(side) ranks \(ranks) classes \(listing.classes.count) files \(listing.files.count)")
        for c in listing.classes { add(c) }
        for (f, l) in zip(listing.files, listing.labels) { add(f); add(String(l)) }
        return h
    }

    func settingsText(ranks: Int) -> String {
        "alexnet-mpi prepare parts \(PreparedStore.formatVersion)\nlisting \(String(listingHash(ranks: ranks), radix: 16))\n"
            + "files \(listing.files.count)\nside \(side)\nranks \(ranks)\n"
    }

    /// How `begin` found the output folder.
    public enum Start: Equatable, Sendable {
        /// Nothing there before: a new preparation.
        case fresh
        /// An interrupted preparation of the same listing and options: it continues.
        case resumed
        /// An interrupted preparation of another listing or options was removed (the message says so).
        case startedOver(String)
        /// The folder already holds the complete store of this listing: nothing to do.
        case alreadyComplete
    }

    /// Readies the output folder; one rank calls it before any rank runs. Starts over cleanly (removing .parts and any
    /// pass-2 files) when an interrupted preparation there was of another listing, side or rank count. Refuses a
    /// folder holding a complete store of another listing, or images.npy/labels.npy that prepare did not write.
    public func begin(ranks: Int) throws -> Start {
        guard ranks >= 1 else { throw AlexNetError("prepare: \(ranks) ranks; at least 1 is needed") }
        guard !listing.files.isEmpty else { throw AlexNetError("\(listing.root): no images to prepare (no .jpg, .jpeg or .png files were found)") }
        let fm = FileManager.default
        do { try fm.createDirectory(atPath: out, withIntermediateDirectories: true) } catch {
            throw AlexNetError("\(out): cannot create the output folder (check the path and permissions)")
        }
        let manifest = outPath(PreparedStore.manifestName)
        if fm.fileExists(atPath: manifest) {
            let data = fm.contents(atPath: manifest) ?? Data()
            let fields = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
            if let stored = fields?["listing"] as? String, stored == String(listingHash(ranks: 1), radix: 16) { return .alreadyComplete }
            throw AlexNetError("\(out): already holds a complete store of another folder or listing (\(PreparedStore.manifestName)); choose another output folder, or remove this one to prepare it again")
        }
        let settings = (parts as NSString).appendingPathComponent("settings.txt")
        let wanted = settingsText(ranks: ranks)
        if fm.fileExists(atPath: parts) {
            if let found = fm.contents(atPath: settings), String(decoding: found, as: UTF8.self) == wanted { return .resumed }
            try removeUnfinished()
            try createParts(settings: settings, text: wanted)
            return .startedOver("\(out): the unfinished preparation there was of another listing, side or rank count; starting over")
        }
        if !fm.fileExists(atPath: outPath("files.txt")),
           let clash = ["images.npy", "labels.npy"].first(where: { fm.fileExists(atPath: outPath($0)) }) {
            throw AlexNetError("\(out): holds \(clash) that prepare did not write (no files.txt); choose an empty output folder")
        }
        try removeUnfinished()   // pass-2 files of an interrupted preparation whose .parts was already removed
        try createParts(settings: settings, text: wanted)
        return .fresh
    }

    func removeUnfinished() throws {
        let fm = FileManager.default
        for name in PreparedStore.outputNames.flatMap({ [$0, $0 + ".partial"] }) + [PreparedStore.partsName] {
            let p = outPath(name)
            if fm.fileExists(atPath: p) {
                do { try fm.removeItem(atPath: p) } catch { throw AlexNetError("\(p): cannot remove it to start over (check permissions)") }
            }
        }
    }

    func createParts(settings: String, text: String) throws {
        do { try FileManager.default.createDirectory(atPath: parts, withIntermediateDirectories: true) } catch {
            throw AlexNetError("\(parts): cannot create the folder of partial results (check permissions)")
        }
        try DurableFile.replace(settings, with: Data(text.utf8))
        try DurableFile.syncFolder(out)
    }

    /// What one rank's pass 1 did.
    public struct PartResult: Sendable {
        public let rank: Int, ranks: Int
        /// Files of this rank's share, and how many of them were done when this run started (resumed).
        public let assigned: Int, resumedAt: Int
        /// Images decoded and bad files in the whole part (this run and any before).
        public let good: Int, bad: Int
        /// Why the part was restarted from scratch, if it was (its state did not match its records).
        public let restarted: String?
    }

    /// The listing indices rank `rank` of `ranks` decodes: i ≡ rank (mod ranks), ascending.
    public func share(rank: Int, ranks: Int) -> StrideTo<Int> { stride(from: rank, to: listing.files.count, by: ranks) }

    /// Pass 1 for rank `rank` of `ranks` (after `begin`): decodes its share into its part, resuming from the part's
    /// last commit. `progress(done, assigned)` is called at the start and after every commit. Throws when this rank
    /// alone has more bad files than the whole listing may have (the summary names the first few).
    @discardableResult
    public func run(rank: Int, ranks: Int, progress: (Int, Int) -> Void = { _, _ in }) throws -> PartResult {
        precondition(rank >= 0 && rank < ranks)
        let settings = (parts as NSString).appendingPathComponent("settings.txt")
        guard let found = FileManager.default.contents(atPath: settings), String(decoding: found, as: UTF8.self) == settingsText(ranks: ranks) else {
            throw AlexNetError("\(parts): missing or of another listing or rank count; prepare must call begin(ranks: \(ranks)) on one rank before the ranks run")
        }
        let mine = Array(share(rank: rank, ranks: ranks))
        let hash = listingHash(ranks: ranks)
        let rawPath = partPath(rank, ranks, "raw"), statePath = partPath(rank, ranks, "state")
        var state = PartState(plane: plane)
        var restarted: String? = nil
        if FileManager.default.fileExists(atPath: statePath) {
            do {
                state = try PartState.read(path: statePath, plane: plane, hash: hash, rank: rank, ranks: ranks)
                guard state.processed <= mine.count else { throw AlexNetError("\(statePath): says \(state.processed) files done of \(mine.count)") }
                let size = (try? FileManager.default.attributesOfItem(atPath: rawPath)[.size] as? Int) ?? nil
                guard let size, size >= state.committedBytes else {
                    throw AlexNetError("\(rawPath): shorter than the \(state.committedBytes) bytes its state committed")
                }
            } catch let e as AlexNetError {
                restarted = "\(e.description); restarting rank \(rank)'s part"
                state = PartState(plane: plane)
            }
        }
        let resumedAt = state.processed
        let raw = try DurableFile(path: rawPath, truncatingTo: state.committedBytes)
        defer { raw.close() }
        var badSeen = try PartReader.badRecords(path: rawPath, bytes: state.committedBytes, listing: listing).prefix(3).map { $0 }
        progress(state.processed, mine.count)
        var fatal: Error? = nil
        while state.processed < mine.count && fatal == nil {
            let batch = Array(mine[state.processed..<min(mine.count, state.processed + commitEvery)])
            let outcomes = decodeAll(batch)
            var header = [UInt8](repeating: 0, count: PartReader.headerSize)
            for (k, index) in batch.enumerated() {
                switch outcomes[k] {
                case .failed(let e):
                    fatal = e
                case .pixels(let pixels):
                    PartReader.encodeHeader(&header, index: index, kind: PartReader.imageKind, length: plane)
                    try raw.write(header)
                    try pixels.withUnsafeBytes { try raw.write($0) }
                    state.add(pixels)
                case .bad(let reason):
                    let text = Array(reason.utf8.prefix(4000))
                    PartReader.encodeHeader(&header, index: index, kind: PartReader.badKind, length: text.count)
                    try raw.write(header)
                    try raw.write(text)
                    state.bad += 1
                    if badSeen.count < 3 { badSeen.append((index, reason)) }
                }
                if fatal != nil { break }
                state.processed += 1
            }
            // Commit: the records first, then the state that points past them.
            try raw.sync()
            state.committedBytes = raw.offset
            try DurableFile.replace(statePath, with: state.encoded(hash: hash, rank: rank, ranks: ranks))
            progress(state.processed, mine.count)
            if state.bad > allowedBadFiles {
                throw tooManyBad(count: state.bad, scope: "rank \(rank) of \(ranks): at least ", examples: badSeen)
            }
        }
        if let fatal { throw fatal }
        return PartResult(rank: rank, ranks: ranks, assigned: mine.count, resumedAt: resumedAt, good: state.good, bad: state.bad,
                          restarted: restarted)
    }

    enum Outcome { case pixels([UInt8]), bad(String), failed(Error) }

    /// Decodes the files at listing indices `batch` on up to `threads` threads.
    func decodeAll(_ batch: [Int]) -> [Outcome] {
        var outcomes = [Outcome](repeating: .bad(""), count: batch.count)
        let expected = plane
        outcomes.withUnsafeMutableBufferPointer { slots in
            Parallel.forEachChunk(batch.count, threads: threads) { range in
                for k in range {
                    let path = (listing.root as NSString).appendingPathComponent(listing.files[batch[k]])
                    do {
                        let pixels = try decode(path)
                        slots[k] = pixels.count == expected ? .pixels(pixels)
                            : .failed(AlexNetError("\(path): the decoder returned \(pixels.count) bytes, not \(side)×\(side)×3 = \(expected); the decoder must resize to the store's side"))
                    } catch let e as AlexNetError {
                        slots[k] = .bad(e.description)
                    } catch {
                        slots[k] = .failed(error)
                    }
                }
            }
        }
        return outcomes
    }

    /// "file: reason", without the path twice when the reason already names it.
    func describeBad(_ index: Int, _ reason: String) -> String {
        let file = listing.files[index], path = (listing.root as NSString).appendingPathComponent(file)
        return reason.hasPrefix(path) || reason.hasPrefix(file) ? reason : "\(file): \(reason)"
    }

    func tooManyBad(count: Int, scope: String, examples: [(Int, String)]) -> AlexNetError {
        AlexNetError("\(out): \(scope)\(count) of \(listing.files.count) files could not be decoded, more than the \(allowedBadFiles) that --bad-fraction \(badFraction) allows; first: "
                     + examples.prefix(3).map { describeBad($0.0, $0.1) }.joined(separator: "; ")
                     + "; fix or remove those files, or raise --bad-fraction (prepare resumes where it stopped)")
    }

    /// What the finished store holds.
    public struct Summary: Sendable {
        public let images: Int, classes: Int
        /// The skipped files, once each, as (path relative to the source, reason).
        public let badFiles: [(file: String, reason: String)]
        public let eigenvalues: [Float]
    }

    /// Pass 2, on one rank after every rank's `run` has returned: writes the store (images.npy, labels.npy,
    /// classes.txt, files.txt, bad.txt, mean.npy, pca.npy, then manifest.json) and removes .parts.
    /// `progress(done, files)` follows the copy into images.npy.
    public func finish(ranks: Int, progress: (Int, Int) -> Void = { _, _ in }) throws -> Summary {
        let n = listing.files.count, hash = listingHash(ranks: ranks)
        var readers: [PartReader] = []
        defer { for r in readers { r.close() } }
        var total = PartState(plane: plane)
        for rank in 0..<ranks {
            let statePath = partPath(rank, ranks, "state")
            let assigned = share(rank: rank, ranks: ranks).underestimatedCount
            guard FileManager.default.fileExists(atPath: statePath) else {
                throw AlexNetError("\(statePath): missing, so rank \(rank)'s part was not started; rerun prepare with \(ranks) ranks (it resumes)")
            }
            let state = try PartState.read(path: statePath, plane: plane, hash: hash, rank: rank, ranks: ranks)
            guard state.processed == assigned else {
                throw AlexNetError("\(statePath): rank \(rank)'s part is unfinished (\(state.processed) of \(assigned) files); rerun prepare with \(ranks) ranks (it resumes)")
            }
            total.merge(state)
            readers.append(try PartReader(path: partPath(rank, ranks, "raw"), bytes: state.committedBytes, plane: plane))
        }
        // The records' places, checked against the shares, and the bad files in listing order.
        var places = [(reader: Int, offset: Int, good: Bool)](), bad: [(Int, String)] = []
        places.reserveCapacity(n)
        var cursors = [Int](repeating: 0, count: ranks)
        for i in 0..<n {
            let r = i % ranks
            let record = try readers[r].record(at: cursors[r], expecting: i)
            cursors[r] = record.next
            places.append((r, record.payload, record.kind == PartReader.imageKind))
            if record.kind == PartReader.badKind { bad.append((i, try readers[r].text(at: record.payload, length: record.length))) }
        }
        guard bad.count <= allowedBadFiles else { throw tooManyBad(count: bad.count, scope: "", examples: bad) }
        let images = n - bad.count
        guard images > 0, total.good == images else {
            throw AlexNetError("\(parts): the parts hold \(images) images but their states count \(total.good); remove \(parts) and prepare again")
        }

        let imagesPath = outPath("images.npy")
        let imagesFile = try DurableFile(path: imagesPath + ".partial", truncatingTo: 0)
        defer { imagesFile.close() }
        try imagesFile.write([UInt8](try NpyArray.header(path: imagesPath, descr: NpyArray.DType.uint8.rawValue, shape: [images, side, side, 3])))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: plane, alignment: 64)
        defer { buffer.deallocate() }
        for (i, place) in places.enumerated() where place.good {
            try readers[place.reader].read(at: place.offset, into: buffer)
            try imagesFile.write(UnsafeRawBufferPointer(buffer))
            if i % 1024 == 0 { progress(i, n) }
        }
        try imagesFile.sync()
        progress(n, n)

        let kept = places.indices.filter { places[$0].good }
        var labels = kept.map { Int64(listing.labels[$0]).littleEndian }
        try labels.withUnsafeMutableBytes { try writeNpy("labels.npy", .int64, [images], UnsafeRawBufferPointer($0)) }
        try DurableFile.replace(outPath("classes.txt"), with: Data(listing.classes.map { $0 + "\n" }.joined().utf8))
        try DurableFile.replace(outPath("files.txt"), with: Data(kept.map { listing.files[$0] + "\n" }.joined().utf8))
        try DurableFile.replace(outPath("bad.txt"), with: Data(bad.map { "\(listing.files[$0.0])\t\(oneLine($0.1))\n" }.joined().utf8))
        let (mean, covariance) = total.statistics()
        guard let (values, vectors) = Lapack.symmetricEigen3(covariance) else {
            throw AlexNetError("\(out): the colour covariance \(covariance) has no eigen-decomposition (LAPACK ssyev failed)")
        }
        try mean.withUnsafeBytes { try writeNpy("mean.npy", .float32, [side, side, 3], $0) }
        let pca = values + vectors   // (4, 3): eigenvalues, then the eigenvector matrix (vectors as columns)
        try pca.withUnsafeBytes { try writeNpy("pca.npy", .float32, [4, 3], $0) }
        try DurableFile.rename(imagesPath + ".partial", to: imagesPath)
        try DurableFile.syncFolder(out)

        let manifest: [String: Any] = [
            "format": "alexnet-mpi prepared store", "version": PreparedStore.formatVersion, "images": images,
            "classes": listing.classes.count, "side": side, "files": n, "bad": bad.count,
            "listing": String(listingHash(ranks: 1), radix: 16),
            "pca": "row 0: eigenvalues ascending (pixel units squared); rows 1-3: unit eigenvectors as columns",
        ]
        let json = try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys, .prettyPrinted])
        try DurableFile.replace(outPath(PreparedStore.manifestName), with: json + Data("\n".utf8))
        try DurableFile.syncFolder(out)
        try? FileManager.default.removeItem(atPath: parts)
        return Summary(images: images, classes: listing.classes.count, badFiles: bad.map { (listing.files[$0.0], oneLine($0.1)) },
                       eigenvalues: values)
    }

    func oneLine(_ s: String) -> String { s.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\t", with: " ") }

    func writeNpy(_ name: String, _ dtype: NpyArray.DType, _ shape: [Int], _ bytes: UnsafeRawBufferPointer) throws {
        var data = try NpyArray.header(path: outPath(name), descr: dtype.rawValue, shape: shape)
        data.append(contentsOf: bytes)
        try DurableFile.replace(outPath(name), with: data)
    }
}

/// A part's progress and its statistics: exact integer sums over its decoded images.
struct PartState {
    var processed = 0, committedBytes = 0, good = 0, bad = 0
    /// Σ r, Σ g, Σ b and Σ rr, rg, rb, gg, gb, bb over every pixel.
    var channelSums = [UInt64](repeating: 0, count: 3), products = [UInt64](repeating: 0, count: 6)
    var pixelSums: [UInt64]   // (S, S, 3)

    init(plane: Int) { pixelSums = [UInt64](repeating: 0, count: plane) }

    mutating func add(_ pixels: [UInt8]) {
        good += 1
        var r: UInt64 = 0, g: UInt64 = 0, b: UInt64 = 0, rr: UInt64 = 0, rg: UInt64 = 0, rb: UInt64 = 0, gg: UInt64 = 0, gb: UInt64 = 0, bb: UInt64 = 0
        pixels.withUnsafeBufferPointer { p in
            pixelSums.withUnsafeMutableBufferPointer { s in
                for i in 0..<p.count { s[i] &+= UInt64(p[i]) }
            }
            for q in stride(from: 0, to: p.count, by: 3) {
                let x = UInt64(p[q]), y = UInt64(p[q + 1]), z = UInt64(p[q + 2])
                r &+= x; g &+= y; b &+= z
                rr &+= x * x; rg &+= x * y; rb &+= x * z; gg &+= y * y; gb &+= y * z; bb &+= z * z
            }
        }
        for (k, v) in [r, g, b].enumerated() { channelSums[k] &+= v }
        for (k, v) in [rr, rg, rb, gg, gb, bb].enumerated() { products[k] &+= v }
    }

    mutating func merge(_ o: PartState) {
        good += o.good; bad += o.bad
        for k in 0..<3 { channelSums[k] &+= o.channelSums[k] }
        for k in 0..<6 { products[k] &+= o.products[k] }
        for i in pixelSums.indices { pixelSums[i] &+= o.pixelSums[i] }
    }

    /// The mean image (S, S, 3) and the RGB covariance (3 × 3, row-major) over every pixel, in pixel units.
    func statistics() -> (mean: [Float], covariance: [Double]) {
        let images = Double(max(1, good)), pixels = images * Double(pixelSums.count / 3)
        let mean = pixelSums.map { Float(Double($0) / images) }
        let m = channelSums.map { Double($0) / pixels }
        let pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
        var covariance = [Double](repeating: 0, count: 9)
        for (k, (i, j)) in pairs.enumerated() {
            let v = Double(products[k]) / pixels - m[i] * m[j]
            covariance[i * 3 + j] = v; covariance[j * 3 + i] = v
        }
        return (mean, covariance)
    }

    static let magic = Array("APREPST1".utf8)

    func encoded(hash: UInt64, rank: Int, ranks: Int) -> Data {
        var words: [UInt64] = [hash, UInt64(rank), UInt64(ranks), UInt64(pixelSums.count), UInt64(processed), UInt64(committedBytes),
                               UInt64(good), UInt64(bad)] + channelSums + products + pixelSums
        words.append(Self.checksum(words))
        var data = Data(Self.magic)
        words.withUnsafeBufferPointer { p in for w in p { withUnsafeBytes(of: w.littleEndian) { data.append(contentsOf: $0) } } }
        return data
    }

    static func checksum(_ words: [UInt64]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for w in words { h = (h ^ w) &* 0x100_0000_01b3 }
        return h
    }

    /// Reads a state file, checked against the listing hash, rank and plane; throws (one line) if it does not match.
    static func read(path: String, plane: Int, hash: UInt64, rank: Int, ranks: Int) throws -> PartState {
        guard let data = FileManager.default.contents(atPath: path) else { throw AlexNetError("\(path): cannot read the part's state") }
        let count = 8 + 3 + 6 + plane + 1
        guard data.count == 8 + 8 * count, Array(data.prefix(8)) == magic else {
            throw AlexNetError("\(path): not a part state of this preparation (size \(data.count) bytes)")
        }
        let words: [UInt64] = data.withUnsafeBytes { p in (0..<count).map { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 + 8 * $0, as: UInt64.self)) } }
        guard checksum(Array(words.dropLast())) == words.last!, words[0] == hash, words[1] == UInt64(rank), words[2] == UInt64(ranks),
              words[3] == UInt64(plane), words[4] < 1 << 40, words[5] < 1 << 62, words[6] < 1 << 40, words[7] < 1 << 40 else {
            throw AlexNetError("\(path): damaged, or of another listing or rank")
        }
        var s = PartState(plane: plane)
        (s.processed, s.committedBytes, s.good, s.bad) = (Int(words[4]), Int(words[5]), Int(words[6]), Int(words[7]))
        s.channelSums = Array(words[8..<11]); s.products = Array(words[11..<17]); s.pixelSums = Array(words[17..<(17 + plane)])
        return s
    }
}

/// Reads a part's records: each a 16-byte header (listing index: Int64, kind: UInt32, payload length: UInt32, all
/// little-endian) and the payload (S·S·3 pixels, or the UTF-8 reason a file is bad).
final class PartReader {
    static let headerSize = 16, imageKind: UInt32 = 1, badKind: UInt32 = 2
    let path: String, bytes: Int, plane: Int, fd: Int32

    init(path: String, bytes: Int, plane: Int) throws {
        self.path = path; self.bytes = bytes; self.plane = plane
        fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw AlexNetError("\(path): cannot open the part (\(String(cString: strerror(errno)))); remove the output folder's .parts and prepare again") }
    }

    func close() { _ = Glibc.close(fd) }

    static func encodeHeader(_ h: inout [UInt8], index: Int, kind: UInt32, length: Int) {
        withUnsafeBytes(of: Int64(index).littleEndian) { for k in 0..<8 { h[k] = $0[k] } }
        withUnsafeBytes(of: kind.littleEndian) { for k in 0..<4 { h[8 + k] = $0[k] } }
        withUnsafeBytes(of: UInt32(length).littleEndian) { for k in 0..<4 { h[12 + k] = $0[k] } }
    }

    func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let got = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { throw AlexNetError("\(path): cannot read \(buffer.count) bytes at offset \(offset) (damaged part); remove .parts and prepare again") }
            done += got
        }
    }

    /// The record at `offset`, which must be of listing index `expecting` and end within the committed bytes.
    func record(at offset: Int, expecting: Int) throws -> (kind: UInt32, payload: Int, length: Int, next: Int) {
        let damaged = "remove the output folder's .parts and prepare again"
        guard offset + Self.headerSize <= bytes else {
            throw AlexNetError("\(path): ends at byte \(bytes) before the record of file \(expecting); \(damaged)")
        }
        let header = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.headerSize, alignment: 8)
        defer { header.deallocate() }
        try read(at: offset, into: header)
        let index = Int(Int64(littleEndian: header.loadUnaligned(fromByteOffset: 0, as: Int64.self)))
        let kind = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        let length = Int(UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        guard index == expecting, kind == Self.imageKind ? length == plane : kind == Self.badKind,
              offset + Self.headerSize + length <= bytes else {
            throw AlexNetError("\(path): record at byte \(offset) is not that of file \(expecting) (index \(index), kind \(kind), \(length) bytes); \(damaged)")
        }
        return (kind, offset + Self.headerSize, length, offset + Self.headerSize + length)
    }

    func text(at offset: Int, length: Int) throws -> String {
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, length), alignment: 1)
        defer { b.deallocate() }
        try read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<length]))
        return String(decoding: b[0..<length], as: UTF8.self)
    }

    /// The bad files recorded in the first `bytes` bytes of a part, as (listing index, reason), for a resumed rank's summary.
    static func badRecords(path: String, bytes: Int, listing: ImageFolderListing) throws -> [(Int, String)] {
        guard bytes > 0 else { return [] }
        let reader = try PartReader(path: path, bytes: bytes, plane: 0)
        defer { reader.close() }
        var found: [(Int, String)] = [], offset = 0
        let header = UnsafeMutableRawBufferPointer.allocate(byteCount: headerSize, alignment: 8)
        defer { header.deallocate() }
        while offset + headerSize <= bytes && found.count < 3 {
            try reader.read(at: offset, into: header)
            let index = Int(Int64(littleEndian: header.loadUnaligned(fromByteOffset: 0, as: Int64.self)))
            let kind = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let length = Int(UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
            if kind == badKind, index >= 0, index < listing.files.count, offset + headerSize + length <= bytes {
                found.append((index, try reader.text(at: offset + headerSize, length: length)))
            }
            offset += headerSize + length
        }
        return found
    }
}
