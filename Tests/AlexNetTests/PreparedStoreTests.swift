// `prepare`'s store writer with a fake decoder (pixels made from the file name; files named bad… refused): the store
// loads with NumpyDataset and holds exactly the expected pixels and labels; two ranks write the same bytes as one; an
// interrupted preparation resumes to the same bytes and is refused until then; mean and PCA match a plain reference.
import AlexNet
import Foundation
import XCTest

/// Counts decode calls and, from call `killAt` on, throws `Killed` (an interruption, not a bad file).
final class DecodeCounter: @unchecked Sendable {
    let lock = NSLock()
    var calls = 0
    let killAt: Int?
    init(killAt: Int? = nil) { self.killAt = killAt }
    struct Killed: Error {}
    func next() throws {
        lock.lock(); defer { lock.unlock() }
        calls += 1
        if let k = killAt, calls >= k { throw Killed() }
    }
}

final class PreparedStoreTests: XCTestCase {
    /// Images are side × side (≥ 227, so that NumpyDataset accepts the store).
    let side = 228

    /// Pixels made from the file's name: channels correlated (g follows r, b half of each) so the covariance is full.
    static func pixels(name: String, side: Int) -> [UInt8] {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        var out = [UInt8](repeating: 0, count: side * side * 3)
        for q in stride(from: 0, to: out.count, by: 3) {
            h = h &* 6364136223846793005 &+ 1442695040888963407
            let r = Int(h >> 56), n1 = Int((h >> 40) & 0xFF), n2 = Int((h >> 24) & 0xFF)
            out[q] = UInt8(r); out[q + 1] = UInt8((3 * r + n1) / 4); out[q + 2] = UInt8((r + n2) / 2)
        }
        return out
    }

    /// A decoder for folder `root`: files whose name starts with "bad" are refused as bad (an AlexNetError).
    func decoder(root: String, counter: DecodeCounter = DecodeCounter()) -> @Sendable (String) throws -> [UInt8] {
        let side = side
        return { path in
            try counter.next()
            let relative = String(path.dropFirst(root.count + 1))
            if (relative as NSString).lastPathComponent.hasPrefix("bad") { throw AlexNetError("\(path): not a JPEG file (test)") }
            return Self.pixels(name: relative, side: side)
        }
    }

    /// Three classes, nine files, two of them bad.
    func makeFolder(_ name: String, extra: [String] = []) throws -> ImageFolderListing {
        let root = Paths.temporaryDirectory(name)
        for f in ["cat/1.jpg", "cat/bad-2.jpg", "cat/3.png", "dog/a.jpg", "dog/b/c.jpg", "emu/x.JPEG", "emu/y.jpg", "emu/bad.jpg", "emu/z.jpg"] + extra {
            touch(root, f)
        }
        return try ImageFolderListing.scan(root: root)
    }

    func prepare(_ listing: ImageFolderListing, out: String, ranks: Int = 1, badFraction: Double = 0.3, commitEvery: Int = 2,
                 threads: Int = 1, counter: DecodeCounter = DecodeCounter()) throws -> StorePreparation.Summary {
        let p = StorePreparation(listing: listing, out: out, side: side, badFraction: badFraction, threads: threads, commitEvery: commitEvery,
                                 decode: decoder(root: listing.root, counter: counter))
        XCTAssertNotEqual(try p.begin(ranks: ranks), .alreadyComplete)
        for r in 0..<ranks { try p.run(rank: r, ranks: ranks) }
        return try p.finish(ranks: ranks)
    }

    static let storeFiles = ["images.npy", "labels.npy", "classes.txt", "files.txt", "bad.txt", "mean.npy", "pca.npy", "manifest.json"]

    func assertSameStore(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) {
        for name in Self.storeFiles {
            let x = FileManager.default.contents(atPath: a + "/" + name), y = FileManager.default.contents(atPath: b + "/" + name)
            XCTAssertNotNil(x, "\(a)/\(name)", file: file, line: line)
            XCTAssertEqual(x, y, name, file: file, line: line)
        }
    }

    func testStoreLoadsWithTheExpectedPixelsAndLabelsAndSkipsBadFilesOnce() throws {
        let listing = try makeFolder("store-in")
        let out = Paths.temporaryDirectory("store-out")
        let summary = try prepare(listing, out: out)
        let kept = ["cat/1.jpg", "cat/3.png", "dog/a.jpg", "dog/b/c.jpg", "emu/x.JPEG", "emu/y.jpg", "emu/z.jpg"]
        XCTAssertEqual(summary.images, 7)
        XCTAssertEqual(summary.badFiles.map(\.file), ["cat/bad-2.jpg", "emu/bad.jpg"])
        XCTAssertEqual(summary.badFiles[0].reason, "\(listing.root)/cat/bad-2.jpg: not a JPEG file (test)")
        let data = try NumpyDataset(directory: out)
        XCTAssertEqual(data.count, 7)
        XCTAssertEqual(data.storage, .pixels(height: side, width: side))
        XCTAssertEqual((0..<7).map { data.label($0) }, [0, 0, 1, 1, 2, 2, 2])
        var buffer = [UInt8](repeating: 0, count: side * side * 3)
        for (i, name) in kept.enumerated() {
            buffer.withUnsafeMutableBufferPointer { data.pixels(i, into: $0.baseAddress!) }
            XCTAssertEqual(buffer, Self.pixels(name: name, side: side), "image \(i) (\(name))")
        }
        XCTAssertEqual(try String(contentsOfFile: out + "/files.txt", encoding: .utf8), kept.map { $0 + "\n" }.joined())
        XCTAssertEqual(try String(contentsOfFile: out + "/classes.txt", encoding: .utf8), "cat\ndog\nemu\n")
        XCTAssertEqual(try PreparedStore.classes(directory: out), ["cat", "dog", "emu"])
        XCTAssertEqual(try String(contentsOfFile: out + "/bad.txt", encoding: .utf8),
                       "cat/bad-2.jpg\t\(listing.root)/cat/bad-2.jpg: not a JPEG file (test)\nemu/bad.jpg\t\(listing.root)/emu/bad.jpg: not a JPEG file (test)\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/.parts"), "the parts are removed when the store is complete")
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/manifest.json"))) as! [String: Any]
        XCTAssertEqual(manifest["images"] as? Int, 7)
        XCTAssertEqual(manifest["bad"] as? Int, 2)
        XCTAssertEqual(manifest["version"] as? Int, PreparedStore.formatVersion)
        // Preparing again: nothing to do (and nothing decoded).
        let counter = DecodeCounter()
        let again = StorePreparation(listing: listing, out: out, side: side, badFraction: 0.3, decode: decoder(root: listing.root, counter: counter))
        XCTAssertEqual(try again.begin(ranks: 1), .alreadyComplete)
        XCTAssertEqual(counter.calls, 0)
        // Another listing into the same complete store is refused.
        let other = ImageFolderListing(root: listing.root, classes: listing.classes, files: Array(listing.files.dropLast()),
                                       labels: Array(listing.labels.dropLast()), problems: [])
        XCTAssertThrowsError(try StorePreparation(listing: other, out: out, side: side, decode: decoder(root: listing.root)).begin(ranks: 1)) { e in
            XCTAssertTrue("\(e)".hasPrefix("\(out): already holds a complete store of another folder or listing"), "\(e)")
        }
    }

    func testMeanImageAndColourPCAMatchAPlainReference() throws {
        let listing = try makeFolder("stats-in")
        let out = Paths.temporaryDirectory("stats-out")
        _ = try prepare(listing, out: out)
        let kept = listing.files.filter { !($0 as NSString).lastPathComponent.hasPrefix("bad") }
        let plane = side * side * 3
        var sum = [Double](repeating: 0, count: plane), s = [Double](repeating: 0, count: 3), ss = [Double](repeating: 0, count: 9)
        for name in kept {
            let p = Self.pixels(name: name, side: side)
            for i in 0..<plane { sum[i] += Double(p[i]) }
            for q in stride(from: 0, to: plane, by: 3) {
                for i in 0..<3 { s[i] += Double(p[q + i]); for j in 0..<3 { ss[i * 3 + j] += Double(p[q + i]) * Double(p[q + j]) } }
            }
        }
        let n = Double(kept.count * side * side)
        let covariance = (0..<9).map { ss[$0] / n - s[$0 / 3] / n * s[$0 % 3] / n }
        let mean = try NpyArray(path: out + "/mean.npy", allowed: [.float32])
        XCTAssertEqual(mean.shape, [side, side, 3])
        let meanValues: [Float] = mean.withBytes { p in (0..<plane).map { p.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
        for i in stride(from: 0, to: plane, by: 997) { XCTAssertEqual(Double(meanValues[i]), sum[i] / Double(kept.count), accuracy: 1e-4, "mean[\(i)]") }
        let pca = try NpyArray(path: out + "/pca.npy", allowed: [.float32])
        XCTAssertEqual(pca.shape, [4, 3])
        let v: [Double] = pca.withBytes { p in (0..<12).map { Double(p.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self)) } }
        let values = Array(v[0..<3]), vectors = Array(v[3..<12])
        XCTAssertLessThan(values[0], values[1]); XCTAssertLessThan(values[1], values[2], "ascending")
        XCTAssertGreaterThan(values[0], 1, "the channels are not all dependent: the covariance is full rank")
        XCTAssertEqual(values.reduce(0, +), covariance[0] + covariance[4] + covariance[8], accuracy: 1e-4 * values[2], "Σλ = trace")
        for j in 0..<3 {   // C·v_j = λ_j·v_j with ‖v_j‖ = 1, against the reference covariance
            let column = (0..<3).map { vectors[$0 * 3 + j] }
            XCTAssertEqual(column.map { $0 * $0 }.reduce(0, +), 1, accuracy: 1e-5)
            for i in 0..<3 {
                let cv = (0..<3).reduce(0.0) { $0 + covariance[i * 3 + $1] * column[$1] }
                XCTAssertEqual(cv, values[j] * column[i], accuracy: 1e-4 * values[2], "(C v)[\(i)] for eigenvector \(j)")
            }
        }
    }

    func testTooManyBadFilesStopWithASummaryAndAHigherLimitResumes() throws {
        let listing = try makeFolder("bad-in")
        let out = Paths.temporaryDirectory("bad-out")
        let strict = StorePreparation(listing: listing, out: out, side: side, badFraction: 0.15, commitEvery: 100, decode: decoder(root: listing.root))
        XCTAssertEqual(strict.allowedBadFiles, 1)
        XCTAssertEqual(try strict.begin(ranks: 1), .fresh)
        XCTAssertThrowsError(try strict.run(rank: 0, ranks: 1)) { e in
            let m = "\(e)"
            XCTAssertTrue(m.hasPrefix("\(out): rank 0 of 1: at least 2 of 9 files could not be decoded, more than the 1 that --bad-fraction 0.15 allows; first: \(listing.root)/cat/bad-2.jpg: not a JPEG file (test); \(listing.root)/emu/bad.jpg: not a JPEG file (test); "), m)
            XCTAssertTrue(m.hasSuffix("raise --bad-fraction (prepare resumes where it stopped)"), m)
            XCTAssertFalse(m.contains("\n"))
        }
        XCTAssertThrowsError(try NumpyDataset(directory: out)) { e in XCTAssertTrue("\(e)".contains("prepare was interrupted"), "\(e)") }
        // finish refuses it too (the summary again), and a higher limit resumes without decoding anything again.
        XCTAssertThrowsError(try strict.finish(ranks: 1)) { e in XCTAssertTrue("\(e)".contains(": 2 of 9 files could not be decoded"), "\(e)") }
        let counter = DecodeCounter()
        let lenient = StorePreparation(listing: listing, out: out, side: side, badFraction: 0.3, decode: decoder(root: listing.root, counter: counter))
        XCTAssertEqual(try lenient.begin(ranks: 1), .resumed)
        let part = try lenient.run(rank: 0, ranks: 1)
        XCTAssertEqual(part.resumedAt, 9)
        XCTAssertEqual(part.bad, 2)
        XCTAssertEqual(counter.calls, 0)
        XCTAssertEqual(try lenient.finish(ranks: 1).images, 7)
        let reference = Paths.temporaryDirectory("bad-reference")
        _ = try prepare(listing, out: reference)
        assertSameStore(out, reference)
    }

    func testTwoOrThreeRanksWriteTheSameBytesAsOne() throws {
        let listing = try makeFolder("ranks-in")
        let one = Paths.temporaryDirectory("ranks-one"), two = Paths.temporaryDirectory("ranks-two"), three = Paths.temporaryDirectory("ranks-three")
        _ = try prepare(listing, out: one, ranks: 1)
        _ = try prepare(listing, out: two, ranks: 2, commitEvery: 3, threads: 3)   // decoding on three threads too
        _ = try prepare(listing, out: three, ranks: 3, commitEvery: 1)
        assertSameStore(two, one)
        assertSameStore(three, one)
    }

    func testAnInterruptedPreparationIsRefusedThenResumesToTheSameBytes() throws {
        let listing = try makeFolder("resume-in")
        let reference = Paths.temporaryDirectory("resume-reference")
        _ = try prepare(listing, out: reference)
        let out = Paths.temporaryDirectory("resume-out")
        // Pass 1 killed at the 6th decode: commits after files 2, 4, then 5 (what the batch held before the kill).
        let killer = DecodeCounter(killAt: 6)
        let first = StorePreparation(listing: listing, out: out, side: side, badFraction: 0.3, commitEvery: 2, decode: decoder(root: listing.root, counter: killer))
        XCTAssertEqual(try first.begin(ranks: 1), .fresh)
        XCTAssertThrowsError(try first.run(rank: 0, ranks: 1)) { e in XCTAssertTrue(e is DecodeCounter.Killed, "\(e)") }
        XCTAssertThrowsError(try NumpyDataset(directory: out)) { e in
            XCTAssertEqual("\(e)", "\(out): prepare was interrupted (no manifest.json, which it writes last); rerun alexnet-mpi prepare with the same source and output folder (it resumes)")
        }
        // A half-written record after the last commit (as a kill mid-write leaves): cut off on resume.
        let raw = out + "/.parts/part-0-of-1.raw"
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: raw))
        handle.seekToEndOfFile(); handle.write(Data(repeating: 0xAB, count: 1000)); handle.closeFile()
        let counter = DecodeCounter()
        let second = StorePreparation(listing: listing, out: out, side: side, badFraction: 0.3, commitEvery: 2, decode: decoder(root: listing.root, counter: counter))
        XCTAssertEqual(try second.begin(ranks: 1), .resumed)
        let part = try second.run(rank: 0, ranks: 1)
        XCTAssertEqual(part.resumedAt, 5)
        XCTAssertNil(part.restarted)
        XCTAssertEqual(counter.calls, 4, "only the files after the last commit are decoded again")
        // Pass 2 interrupted: files.txt and a partial images.npy written, no manifest: still refused; finish redoes it.
        try "cat/1.jpg\n".write(toFile: out + "/files.txt", atomically: false, encoding: .utf8)
        try Data(repeating: 1, count: 5000).write(to: URL(fileURLWithPath: out + "/images.npy.partial"))
        XCTAssertThrowsError(try NumpyDataset(directory: out)) { e in XCTAssertTrue("\(e)".contains("prepare was interrupted"), "\(e)") }
        let third = StorePreparation(listing: listing, out: out, side: side, badFraction: 0.3, decode: decoder(root: listing.root, counter: counter))
        XCTAssertEqual(try third.begin(ranks: 1), .resumed)
        XCTAssertEqual(try third.run(rank: 0, ranks: 1).resumedAt, 9)
        _ = try third.finish(ranks: 1)
        XCTAssertEqual(counter.calls, 4)
        assertSameStore(out, reference)
        XCTAssertEqual(try NumpyDataset(directory: out).count, 7)
    }

    func testAChangedListingStartsOverCleanly() throws {
        let listing = try makeFolder("change-in")
        let out = Paths.temporaryDirectory("change-out")
        let first = StorePreparation(listing: listing, out: out, side: side, badFraction: 0.3, commitEvery: 2,
                                     decode: decoder(root: listing.root, counter: DecodeCounter(killAt: 4)))
        XCTAssertEqual(try first.begin(ranks: 1), .fresh)
        XCTAssertThrowsError(try first.run(rank: 0, ranks: 1))
        touch(listing.root, "dog/new.jpg")
        let grown = try ImageFolderListing.scan(root: listing.root)
        XCTAssertEqual(grown.files.count, 10)
        let second = StorePreparation(listing: grown, out: out, side: side, badFraction: 0.3, decode: decoder(root: listing.root))
        guard case .startedOver(let message) = try second.begin(ranks: 1) else { return XCTFail("the changed listing should start over") }
        XCTAssertEqual(message, "\(out): the unfinished preparation there was of another listing, side or rank count; starting over")
        XCTAssertEqual(try second.run(rank: 0, ranks: 1).resumedAt, 0)
        _ = try second.finish(ranks: 1)
        let reference = Paths.temporaryDirectory("change-reference")
        _ = try prepare(grown, out: reference)
        assertSameStore(out, reference)
        // And another rank count also starts over (the parts are per rank count).
        let listing2 = try makeFolder("change-ranks-in")
        let out2 = Paths.temporaryDirectory("change-ranks-out")
        let p = StorePreparation(listing: listing2, out: out2, side: side, badFraction: 0.3, decode: decoder(root: listing2.root))
        XCTAssertEqual(try p.begin(ranks: 2), .fresh)
        try p.run(rank: 0, ranks: 2)
        XCTAssertThrowsError(try p.finish(ranks: 2)) { e in
            XCTAssertTrue("\(e)".contains("part-1-of-2.state: missing, so rank 1's part was not started; rerun prepare with 2 ranks (it resumes)"), "\(e)")
        }
        guard case .startedOver = try p.begin(ranks: 1) else { return XCTFail("another rank count should start over") }
    }

    func testProgressLinesAndTheirRateAndETA() {
        XCTAssertEqual(ProgressReporter.line(label: "prepare", done: 12_345, total: 50_000, rate: 312),
                       "prepare  12,345/50,000  24.7%  312 images/s  ETA 2m01s")
        XCTAssertEqual(ProgressReporter.line(label: "prepare", done: 0, total: 1_281_167, rate: nil), "prepare  0/1,281,167  0.0%  – images/s  ETA –")
        XCTAssertEqual(ProgressReporter.duration(3 * 3600 + 7 * 60 + 5), "3h07m")
        XCTAssertEqual(ProgressReporter.duration(45.4), "45s")
        final class Sink: @unchecked Sendable { let lock = NSLock(); var text: [String] = []; var now = 0.0 }
        let sink = Sink()
        let plain = ProgressReporter(label: "prepare", total: 1000, interval: 10, terminal: false,
                                     clock: { sink.lock.withLock { sink.now } }, output: { s in sink.lock.withLock { sink.text.append(s) } })
        for (t, done) in [(0.0, 0), (1.0, 10), (5.0, 50), (12.0, 120)] { sink.lock.withLock { sink.now = t }; plain.update(done) }
        sink.lock.withLock { sink.now = 20 }
        plain.finish(200)
        XCTAssertEqual(sink.text, ["prepare  10/1,000  1.0%  10 images/s  ETA 1m39s\n",   // t = 5 is within 10 s of it: not shown
                                   "prepare  120/1,000  12.0%  10 images/s  ETA 1m28s\n",
                                   "prepare  200/1,000  20.0%  10 images/s  ETA 1m20s\n"])
        sink.text = []
        let bar = ProgressReporter(label: "prepare", total: 10, terminal: true, clock: { sink.lock.withLock { sink.now } },
                                   output: { s in sink.lock.withLock { sink.text.append(s) } })
        bar.update(0); sink.now = 21; bar.update(1); sink.now = 21.1; bar.update(2); bar.finish(10)
        XCTAssertEqual(sink.text, ["\rprepare  1/10  10.0%  1.0 images/s  ETA 9s\u{1B}[K", "\rprepare  10/10  100.0%  9.1 images/s  ETA 0s\u{1B}[K\n"])   // 10 images in 1.1 s from t = 20; t = 21.1 redraws within 0.2 s: not shown
    }
}
