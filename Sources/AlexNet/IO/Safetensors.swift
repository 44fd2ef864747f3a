// safetensors reader and writer (8-byte little-endian header length, JSON header, raw little-endian data).
// Errors name the file and the tensor, and say what was expected.
import Foundation

public struct AlexNetError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
}

public struct SafetensorsFile {
    public struct Entry: Sendable {
        public let dtype: String
        public let shape: [Int]
        public let range: Range<Int>   // byte range within the data section
    }
    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    let data: Data          // the whole file
    let dataStart: Int

    static let dtypeSizes: [String: Int] = ["F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                                             "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8]

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw AlexNetError("\(path): no such file")
        }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            throw AlexNetError("\(path): cannot read the file (check its permissions)")
        }
        guard data.count >= 8 else { throw AlexNetError("\(path): not a safetensors file (shorter than its 8-byte header length)") }
        let headerLength = data.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard headerLength > 1, headerLength <= data.count - 8 else {
            throw AlexNetError("\(path): header length \(headerLength) does not fit in a file of \(data.count) bytes (truncated or not safetensors)")
        }
        let header = data.subdata(in: 8..<(8 + headerLength))
        guard let json = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else {
            throw AlexNetError("\(path): the header is not a JSON object (not a safetensors file?)")
        }
        var entries: [String: Entry] = [:], metadata: [String: String] = [:]
        let bodyLength = data.count - 8 - headerLength
        for (name, value) in json {
            if name == "__metadata__" {
                for (k, v) in (value as? [String: Any]) ?? [:] { metadata[k] = v as? String ?? "\(v)" }
                continue
            }
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
                throw AlexNetError("\(path): tensor '\(name)' has a malformed header entry")
            }
            guard let size = Self.dtypeSizes[dtype] else { throw AlexNetError("\(path): tensor '\(name)' has unknown dtype \(dtype)") }
            guard offsets[0] >= 0, offsets[1] >= offsets[0], offsets[1] - offsets[0] == shape.reduce(1, *) * size else {
                throw AlexNetError("\(path): tensor '\(name)' has data offsets \(offsets) that do not match shape \(shape) of \(dtype)")
            }
            guard offsets[1] <= bodyLength else {
                throw AlexNetError("\(path): tensor '\(name)' ends at byte \(offsets[1]) of the data but the file holds only \(bodyLength) (truncated file)")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, range: offsets[0]..<offsets[1])
        }
        self.entries = entries
        self.metadata = metadata
        self.data = data
        self.dataStart = 8 + headerLength
    }

    /// Copies float32 tensor `name` into `destination`, checking it exists with the expected shape.
    /// `rows` selects a contiguous block of the first dimension (a tower's share); nil reads all.
    public func read(_ name: String, shape: [Int], rows: Range<Int>? = nil, into destination: UnsafeMutablePointer<Float>) throws {
        guard let e = entries[name] else { throw AlexNetError("\(path): tensor '\(name)' is missing (expected shape \(shape), F32)") }
        guard e.dtype == "F32" else { throw AlexNetError("\(path): tensor '\(name)' is \(e.dtype), expected F32") }
        guard e.shape == shape else { throw AlexNetError("\(path): tensor '\(name)' has shape \(e.shape), expected \(shape)") }
        let rowSize = shape.dropFirst().reduce(1, *)
        let r = rows ?? 0..<(shape.first ?? 1)
        data.withUnsafeBytes { raw in
            let src = raw.baseAddress! + dataStart + e.range.lowerBound + r.lowerBound * rowSize * 4
            memcpy(destination, src, r.count * rowSize * 4)
        }
    }

    public func readAll(_ name: String) throws -> (shape: [Int], values: [Float]) {
        guard let e = entries[name] else { throw AlexNetError("\(path): tensor '\(name)' is missing") }
        guard e.dtype == "F32" else { throw AlexNetError("\(path): tensor '\(name)' is \(e.dtype), expected F32") }
        var out = [Float](repeating: 0, count: e.shape.reduce(1, *))
        try out.withUnsafeMutableBufferPointer { try read(name, shape: e.shape, into: $0.baseAddress!) }
        return (e.shape, out)
    }

    /// Writes float32 tensors (in the order given) and string metadata. Writes to a temporary file and renames it,
    /// so an existing file is never left half-written.
    public static func write(path: String, tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)],
                             metadata: [String: String] = [:]) throws {
        var header: [String: Any] = [:]
        var offset = 0
        for t in tensors {
            precondition(t.data.count == t.shape.reduce(1, *), "tensor \(t.name) size mismatch")
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + t.data.count * 4]]
            offset += t.data.count * 4
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for t in tensors { out.append(Data(buffer: t.data)) }
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())")
        do {
            try out.write(to: temporary)
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw AlexNetError("\(path): cannot write (\(error.localizedDescription)); check the folder exists and is writable")
        }
        // rename(2) replaces an existing file atomically: readers see the old file or the new one, never half.
        guard rename(temporary.path, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw AlexNetError("\(path): cannot replace the file (\(reason))")
        }
    }
}
