// --metrics FILE.jsonl: one JSON object a line, written by rank 0 and flushed line by line, so `tail -f`, jq and pandas
// read it as it grows and a crashed run's file is whole up to its last step. Kinds: "run" (the settings, layout and
// build; again at each resume), "step" (loss, learning rate, images/s, the step's time split and bytes moved), "evaluation".
import Foundation

public final class MetricsLog {
    let handle: FileHandle
    public let path: String

    /// Opens `path` for appending (a resumed run continues the same file), creating it if needed; refuses in one line
    /// when it cannot be written.
    public init(path: String) throws {
        self.path = path
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw AlexNetError("--metrics \(path): cannot create the file; check the folder exists and is writable")
            }
        }
        guard let h = FileHandle(forWritingAtPath: path) else {
            throw AlexNetError("--metrics \(path): cannot open the file for writing; check its permissions")
        }
        h.seekToEndOfFile()
        handle = h
    }

    deinit { try? handle.close() }

    /// Writes one line (keys sorted; non-finite numbers as null, which JSON cannot hold otherwise).
    public func write(_ object: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: Self.sanitised(object), options: [.sortedKeys]) else { return }
        handle.write(data + Data("\n".utf8))   // one write(2) a line: unbuffered, so a crash loses no finished line
    }

    static func sanitised(_ value: Any) -> Any {
        switch value {
        case let d as Double: return d.isFinite ? d : NSNull()
        case let f as Float: return f.isFinite ? Double(f) : NSNull()
        case let o as [String: Any]: return o.mapValues(sanitised)
        case let a as [Any]: return a.map(sanitised)
        default: return value
        }
    }
}
