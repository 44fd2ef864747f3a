// What keeps a run from losing work: the per-step agreement (non-finite values, stop requests), graceful stop on
// SIGTERM/SIGINT, output files opened before the first step, dataset fingerprints, and the memory a run will take.
import Foundation
import Synchronization

/// What one rank saw in a step.
public struct StepReport: Sendable {
    /// Why this rank's numbers are unusable (e.g. "the loss is nan", "conv1.weight is not finite"), or nil.
    public var nonFinite: String?
    /// Whether this rank was asked to stop (SIGTERM, SIGINT).
    public var stopRequested: Bool
    public init(nonFinite: String? = nil, stopRequested: Bool = false) {
        self.nonFinite = nonFinite; self.stopRequested = stopRequested
    }
}

/// What every rank agreed after a step (one small collective under MPI).
public struct StepAgreement: Sendable, Equatable {
    /// The lowest rank that saw a non-finite value, if any did.
    public var nonFiniteRank: Int?
    /// The lowest rank that was asked to stop, if any was.
    public var stopRank: Int?
    public init(nonFiniteRank: Int? = nil, stopRank: Int? = nil) { self.nonFiniteRank = nonFiniteRank; self.stopRank = stopRank }

    /// One process: what it saw is what is agreed.
    public static func local(_ r: StepReport) -> StepAgreement {
        StepAgreement(nonFiniteRank: r.nonFinite == nil ? nil : 0, stopRank: r.stopRequested ? 0 : nil)
    }
}

/// A stop every rank agreed on, so each can exit by itself (no abort): `message` is printed where `printHere` is set.
public struct AgreedStop: Error, CustomStringConvertible, Sendable {
    public let message: String
    public let printHere: Bool
    public var description: String { message }
    public init(_ message: String, printHere: Bool) { self.message = message; self.printHere = printHere }
}

/// SIGTERM and SIGINT ask the run to stop after the current step (saving first); a second signal ends it at once.
public enum GracefulStop {
    static let requests = Atomic<Int>(0)

    /// Installs the handlers (once, at start-up, before any work).
    public static func install() {
        for sig in [SIGTERM, SIGINT] {
            signal(sig) { received in
                // Only async-signal-safe work here: an atomic add, and _exit on the second signal.
                if GracefulStop.requests.add(1, ordering: .relaxed).newValue >= 2 { _exit(128 + received) }
            }
        }
    }

    public static var requested: Bool { requests.load(ordering: .relaxed) > 0 }
}

/// Files a run will write, opened or probed before the first step so that a bad path costs seconds, not the run.
public enum OutputFiles {
    /// Refuses a path whose file could not be written later: a missing or unwritable folder, or a folder in its place.
    /// Creates nothing that stays (a probe file in the folder is removed at once); an existing file is left as it is.
    public static func checkWritable(_ path: String, option: String) throws {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw AlexNetError("\(option) \(path): the folder \(folder) does not exist; create it first or choose another path")
        }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw AlexNetError("\(option) \(path): is a folder; give a file name")
        }
        let probe = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).probe-\(getpid())").path
        let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw AlexNetError("\(option) \(path): cannot write in \(folder) (\(String(cString: strerror(errno)))); choose a writable folder")
        }
        close(fd)
        unlink(probe)
    }

    /// Opens the loss log for this run: a new run starts it empty; a resumed run keeps the lines of the steps before
    /// `firstStep` and drops later ones (what the interrupted run wrote past its checkpoint), then appends.
    public static func openLossLog(_ path: String, firstStep: Int) throws -> FileHandle {
        var kept = Data()
        if firstStep > 0, let old = FileManager.default.contents(atPath: path) {
            for line in String(decoding: old, as: UTF8.self).split(separator: "\n") {
                guard let step = line.split(separator: " ").first.flatMap({ Int($0) }), step < firstStep else { continue }
                kept.append(contentsOf: Array((line + "\n").utf8))
            }
        }
        do {
            try kept.write(to: URL(fileURLWithPath: path))
        } catch {
            throw AlexNetError("--loss-log \(path): cannot write the file (\(error.localizedDescription)); check the folder exists and is writable")
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw AlexNetError("--loss-log \(path): cannot open the file for writing")
        }
        handle.seekToEndOfFile()
        return handle
    }
}

/// A short identity of a dataset, compared across ranks at start-up and stored in checkpoints: for a NumPy folder its
/// files' sizes and a hash of their headers and labels; for the embedded set its generator, seed and counts.
public enum DatasetFingerprint {
    public static func of(_ splits: DataSplits, directory: String?) -> String {
        // The embedded images are a function of --seed, which the checkpoint keeps (and compares) on its own.
        guard let directory else { return "embedded-shapes-v1/\(splits.train.count)+\(splits.heldOut.count)" }
        var parts: [String] = []
        for name in ["images.npy", "labels.npy", "heldout/images.npy", "heldout/labels.npy"] {
            let path = (directory as NSString).appendingPathComponent(name)
            guard let handle = FileHandle(forReadingAtPath: path) else { continue }
            defer { try? handle.close() }
            let size = (try? handle.seekToEnd()) ?? 0
            try? handle.seek(toOffset: 0)
            // The header, and for labels (small) the whole file.
            let head = (try? handle.read(upToCount: name.hasSuffix("labels.npy") ? Int(min(size, 1 << 26)) : 4096)) ?? Data()
            parts.append("\(name):\(size):" + CRC32.hex(head.withUnsafeBytes { CRC32.checksum($0) }))
        }
        return parts.joined(separator: ",")
    }
}

/// The memory a process will take for a model and batch, computed from the layer table before anything is allocated,
/// with overflow-checked arithmetic so absurd settings are refused rather than wrapped.
public enum MemoryBudget {
    /// Bytes of one process: the models it holds (activations, gradients, scratch), its parameter buffers and its
    /// `inputs` input buffers (2 when the next batch is assembled ahead: BatchPrefetcher).
    public static func bytes(config: ModelConfig, maxBatch: Int, layout: ReplicaLayout?, localTowers: Range<Int>,
                             fullyConnectedSlice: NeuronSlice? = nil, inputs: Int = 1) -> Int? {
        let models: [Range<Int>] = layout == .threadedTowers ? [0..<1, 1..<2] : [localTowers]
        var total = 0
        for towers in models {
            guard let floats = TwoTowerAlexNet.floatsNeeded(config: config, maxBatch: maxBatch, towers: towers,
                                                            fullyConnectedSlice: fullyConnectedSlice) else { return nil }
            let (b, o) = floats.multipliedReportingOverflow(by: 4)
            if o { return nil }
            let (t, o2) = total.addingReportingOverflow(b)
            if o2 { return nil }
            total = t
        }
        let (input, o3) = maxBatch.multipliedReportingOverflow(by: 3 * 227 * 227 * 4 * max(1, inputs))
        if o3 { return nil }
        let (t, o4) = total.addingReportingOverflow(input)
        return o4 ? nil : t
    }

    /// Physical memory of this machine (MemTotal), if it can be read.
    public static var machineBytes: Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }),
              let kib = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return kib * 1024
    }

    public static func gigabytes(_ bytes: Int) -> String { String(format: "%.2f GB", Double(bytes) / 1e9) }
}
