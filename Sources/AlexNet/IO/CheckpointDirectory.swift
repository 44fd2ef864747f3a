// A folder of step-numbered checkpoints for long runs: `step-000001234.safetensors` files, a `latest` pointer moved
// only after the file it names is durable, the last `keep` kept; resuming takes the newest that loads and verifies.
import Foundation

public struct CheckpointDirectory: Sendable {
    public let path: String
    /// Checkpoints kept (the newest); older ones are removed after each new one is committed.
    public let keep: Int
    public static let latestName = "latest"

    public init(path: String, keep: Int = 3) {
        self.path = path
        self.keep = max(1, keep)
    }

    public static func fileName(step: Int) -> String {
        let digits = String(step)
        return "step-" + String(repeating: "0", count: max(0, 9 - digits.count)) + digits + ".safetensors"
    }

    public func file(step: Int) -> String { (path as NSString).appendingPathComponent(Self.fileName(step: step)) }

    /// Creates the folder if needed and checks that files can be made in it (before any training).
    public func prepare() throws {
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw AlexNetError("--checkpoint-dir \(path): cannot create the folder (\(error.localizedDescription)); choose a writable folder")
        }
        let probe = (path as NSString).appendingPathComponent(".write-test-\(getpid())")
        guard FileManager.default.createFile(atPath: probe, contents: Data()) else {
            throw AlexNetError("--checkpoint-dir \(path): cannot write in the folder; check its permissions and free space")
        }
        try? FileManager.default.removeItem(atPath: probe)
    }

    /// The step of a checkpoint file name, nil for other names.
    public static func step(ofFile name: String) -> Int? {
        guard name.hasPrefix("step-"), name.hasSuffix(".safetensors") else { return nil }
        return Int(name.dropFirst(5).dropLast(12))
    }

    /// The steps of the checkpoint files present, ascending.
    public func steps() -> [Int] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).compactMap(Self.step(ofFile:)).sorted()
    }

    /// What `latest` names (a file name in the folder), if it is there.
    public func latest() -> String? {
        let pointer = (path as NSString).appendingPathComponent(Self.latestName)
        guard let data = FileManager.default.contents(atPath: pointer) else { return nil }
        let name = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return Self.step(ofFile: name) != nil && !name.contains("/") ? name : nil
    }

    /// Called after the checkpoint of `step` is durably in place: points `latest` at it (written beside, synced,
    /// renamed, folder synced), then removes all but the newest `keep` checkpoints (never the one just made).
    public func commit(step: Int) throws {
        try DurableFile.syncFolder(path)   // the checkpoint's own rename is on disk before the pointer names it
        try DurableFile.replace((path as NSString).appendingPathComponent(Self.latestName),
                                with: Data((Self.fileName(step: step) + "\n").utf8))
        try DurableFile.syncFolder(path)
        let all = steps()
        for old in all.dropLast(keep) where old != step {
            try? FileManager.default.removeItem(atPath: file(step: old))
        }
    }

    /// Checkpoint files to try when resuming, best first: the one `latest` names, then the others newest first.
    public func candidates() -> [String] {
        var names = steps().reversed().map(Self.fileName(step:))
        if let pointed = latest(), let i = names.firstIndex(of: pointed) { names.remove(at: i); names.insert(pointed, at: 0) }
        return names.map { (path as NSString).appendingPathComponent($0) }
    }

    /// The newest checkpoint that `load` accepts (it throws for a damaged or unreadable file), and why the ones
    /// before it were passed over. Nil when the folder holds none that loads.
    public func newest(load: (String) throws -> Void) -> (path: String, skipped: [String])? {
        var skipped: [String] = []
        for candidate in candidates() {
            do {
                try load(candidate)
                return (candidate, skipped)
            } catch {
                skipped.append("\((candidate as NSString).lastPathComponent): \(error)")
            }
        }
        return nil
    }

    /// Whether `path` names a checkpoint folder (an existing directory) rather than a file.
    public static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }
}
