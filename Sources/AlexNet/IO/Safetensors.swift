// safetensors reader and writer (8-byte little-endian header length, JSON header, raw little-endian data).
// Errors name the file and the tensor, and say what was expected. Every number of the header is checked (overflow-checked
// arithmetic, valid in -Ounchecked builds too); files are written durably (temporary file, fsync, rename, fsync of the
// folder) with a CRC-32 of every tensor in the metadata, verified when tensors are read.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
    /// CRC-32 (zlib's, as Python's zlib.crc32) of each tensor's bytes, from the metadata key `checksumKey`; empty when the
    /// file has none (files written elsewhere, e.g. by PyTorch).
    public let checksums: [String: UInt32]
    let data: Data          // the whole file
    let dataStart: Int

    /// Metadata key of the checksums: a JSON object of tensor name → 8 hex digits.
    public static let checksumKey = "checksums"

    static let dtypeSizes: [String: Int] = ["F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                                             "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8]

    /// The JSON header as decoded: tensors by name and the optional string metadata.
    struct Header: Decodable {
        struct Tensor: Decodable {
            let dtype: String
            let shape: [Int]
            let data_offsets: [Int]
        }
        struct Key: CodingKey {
            let stringValue: String
            init(stringValue: String) { self.stringValue = stringValue }
            var intValue: Int? { nil }
            init?(intValue: Int) { nil }
        }
        var tensors: [(name: String, info: Tensor)] = []
        var metadata: [String: String] = [:]
        init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            for key in container.allKeys {
                if key.stringValue == "__metadata__" {
                    metadata = try container.decode([String: String].self, forKey: key)
                } else {
                    tensors.append((key.stringValue, try container.decode(Tensor.self, forKey: key)))
                }
            }
        }
    }

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw AlexNetError("\(path): no such file")
        }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            throw AlexNetError("\(path): cannot read the file (check its permissions)")
        }
        guard data.count >= 8 else { throw AlexNetError("\(path): not a safetensors file (shorter than its 8-byte header length)") }
        let declared = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        // Compared as unsigned before any conversion: a length ≥ 2⁶³ must not become a negative Int.
        guard declared >= 2 else {
            throw AlexNetError("\(path): header length \(declared) is impossible (a zero-filled or damaged file, or not safetensors)")
        }
        guard declared <= UInt64(data.count - 8) else {
            throw AlexNetError("\(path): header length \(declared) does not fit in a file of \(data.count) bytes (truncated, damaged or not safetensors)")
        }
        let headerLength = Int(declared)
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: data.subdata(in: 8..<(8 + headerLength)))
        } catch let error as DecodingError {
            throw AlexNetError("\(path): the header is not a safetensors JSON header (\(Self.explain(error))); damaged file or not safetensors")
        } catch {
            throw AlexNetError("\(path): the header is not JSON (damaged file or not safetensors)")
        }
        var entries: [String: Entry] = [:]
        let bodyLength = data.count - 8 - headerLength
        for (name, info) in header.tensors {
            let quoted = printableExcerpt(name)
            guard let size = Self.dtypeSizes[info.dtype] else {
                throw AlexNetError("\(path): tensor \(quoted) has unknown dtype \(printableExcerpt(info.dtype))")
            }
            var elements = 1
            for d in info.shape {
                guard d >= 0 else { throw AlexNetError("\(path): tensor \(quoted) has a negative dimension in shape \(info.shape)") }
                let (p, overflow) = elements.multipliedReportingOverflow(by: max(d, 1))
                guard !overflow else { throw AlexNetError("\(path): tensor \(quoted) has shape \(info.shape), whose size overflows (damaged header?)") }
                elements = p
            }
            if info.shape.contains(0) { elements = 0 }
            let (bytes, overflow) = elements.multipliedReportingOverflow(by: size)
            guard !overflow else { throw AlexNetError("\(path): tensor \(quoted) has shape \(info.shape), whose size in bytes overflows (damaged header?)") }
            let offsets = info.data_offsets
            guard offsets.count == 2, offsets[0] >= 0, offsets[1] >= offsets[0] else {
                throw AlexNetError("\(path): tensor \(quoted) has data offsets \(offsets); expected [begin, end] with 0 ≤ begin ≤ end (damaged header?)")
            }
            guard offsets[1] <= bodyLength else {
                throw AlexNetError("\(path): tensor \(quoted) ends at byte \(offsets[1]) of the data but the file holds only \(bodyLength) (truncated file)")
            }
            guard offsets[1] - offsets[0] == bytes else {
                throw AlexNetError("\(path): tensor \(quoted) has data offsets \(offsets) that do not match shape \(info.shape) of \(info.dtype) (\(bytes) bytes)")
            }
            entries[name] = Entry(dtype: info.dtype, shape: info.shape, range: offsets[0]..<offsets[1])
        }
        // The format: tensors tile the data section, no overlap, no hole, nothing after the last.
        var end = 0
        for (name, e) in entries.sorted(by: { ($0.value.range.lowerBound, $0.value.range.upperBound) < ($1.value.range.lowerBound, $1.value.range.upperBound) }) {
            guard e.range.lowerBound == end else {
                throw AlexNetError("\(path): tensor \(printableExcerpt(name)) starts at byte \(e.range.lowerBound) of the data, expected \(end) (tensors overlap or leave a gap; damaged header?)")
            }
            end = e.range.upperBound
        }
        guard end == bodyLength else {
            throw AlexNetError("\(path): the data section holds \(bodyLength) bytes but the tensors cover \(end) (damaged header or extra bytes at the end)")
        }
        var checksums: [String: UInt32] = [:]
        if let text = header.metadata[Self.checksumKey] {
            guard let object = try? JSONDecoder().decode([String: String].self, from: Data(text.utf8)) else {
                throw AlexNetError("\(path): the metadata's \(Self.checksumKey) is not a JSON object of tensor name → hex (damaged file?)")
            }
            for (name, hex) in object {
                guard entries[name] != nil else {
                    throw AlexNetError("\(path): the metadata has a checksum for tensor \(printableExcerpt(name)), which the file does not hold (damaged file?)")
                }
                guard hex.utf8.count == 8, hex.allSatisfy(\.isHexDigit), let value = UInt32(hex, radix: 16) else {
                    throw AlexNetError("\(path): the checksum of tensor \(printableExcerpt(name)) is \(printableExcerpt(hex)), not 8 hex digits (damaged file?)")
                }
                checksums[name] = value
            }
        }
        self.entries = entries
        self.metadata = header.metadata
        self.checksums = checksums
        self.data = data
        self.dataStart = 8 + headerLength
    }

    /// A decoding error in a few words, with where in the header it happened.
    static func explain(_ error: DecodingError) -> String {
        func at(_ path: [CodingKey]) -> String {
            path.isEmpty ? "" : " at " + printableExcerpt(path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: "."))
        }
        switch error {
        case .typeMismatch(let type, let c): return "expected \(type)\(at(c.codingPath))"
        case .valueNotFound(let type, let c): return "missing \(type)\(at(c.codingPath))"
        case .keyNotFound(let key, let c): return "missing key \(printableExcerpt(key.stringValue))\(at(c.codingPath))"
        case .dataCorrupted(let c): return "invalid JSON\(at(c.codingPath))"
        @unknown default: return "invalid"
        }
    }

    /// The bytes of tensor `name` (an entry of `entries`).
    func withTensorBytes<T>(_ e: Entry, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try data.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[(dataStart + e.range.lowerBound)..<(dataStart + e.range.upperBound)]))
        }
    }

    /// Checks tensor `name` against its stored checksum (nothing to check if the file has none for it).
    public func verify(_ name: String) throws {
        guard let expected = checksums[name], let e = entries[name] else { return }
        let actual = withTensorBytes(e) { CRC32.checksum($0) }
        guard actual == expected else {
            throw AlexNetError("\(path): damaged: checksum mismatch in tensor \(printableExcerpt(name)) (stored \(CRC32.hex(expected)), computed \(CRC32.hex(actual))); restore the file from a copy or save it again")
        }
    }

    /// Checks every tensor that has a stored checksum.
    public func verifyAll() throws {
        for name in checksums.keys.sorted() { try verify(name) }
    }

    /// Copies float32 tensor `name` into `destination`, checking it exists with the expected shape and its checksum.
    /// `rows` selects a contiguous block of the first dimension (a tower's share); nil reads all.
    public func read(_ name: String, shape: [Int], rows: Range<Int>? = nil, into destination: UnsafeMutablePointer<Float>) throws {
        try read(name, shape: shape, rows: rows, into: destination, verifying: true)
    }

    func read(_ name: String, shape: [Int], rows: Range<Int>?, into destination: UnsafeMutablePointer<Float>, verifying: Bool) throws {
        guard let e = entries[name] else { throw AlexNetError("\(path): tensor \(printableExcerpt(name)) is missing (expected shape \(shape), F32)") }
        guard e.dtype == "F32" else { throw AlexNetError("\(path): tensor \(printableExcerpt(name)) is \(printableExcerpt(e.dtype)), expected F32") }
        guard e.shape == shape else { throw AlexNetError("\(path): tensor \(printableExcerpt(name)) has shape \(e.shape), expected \(shape)") }
        // The entry's size was checked at open, so these products cannot overflow.
        let rowSize = shape.dropFirst().reduce(1, *)
        let r = rows ?? 0..<(shape.first ?? 1)
        guard r.lowerBound >= 0, r.upperBound <= (shape.first ?? 1) else {
            throw AlexNetError("\(path): rows \(r) of tensor \(printableExcerpt(name)) are out of range for shape \(shape)")
        }
        if verifying { try verify(name) }
        withTensorBytes(e) { raw in
            guard r.count * rowSize > 0 else { return }
            memcpy(destination, raw.baseAddress! + r.lowerBound * rowSize * 4, r.count * rowSize * 4)
        }
    }

    public func readAll(_ name: String) throws -> (shape: [Int], values: [Float]) {
        guard let e = entries[name] else { throw AlexNetError("\(path): tensor \(printableExcerpt(name)) is missing") }
        guard e.dtype == "F32" else { throw AlexNetError("\(path): tensor \(printableExcerpt(name)) is \(printableExcerpt(e.dtype)), expected F32") }
        var out = [Float](repeating: 0, count: e.range.count / 4)
        try out.withUnsafeMutableBufferPointer { try read(name, shape: e.shape, into: $0.baseAddress!) }
        return (e.shape, out)
    }

    /// Writes float32 tensors (in the order given) and string metadata, plus a CRC-32 of every tensor under `checksumKey`.
    /// Durable: the bytes go to a temporary file in the same folder, which is flushed to disk and renamed over `path`
    /// (readers see the old file or the new one, never half), then the folder is flushed. Temporary files that killed
    /// runs left for the same `path` are removed first.
    public static func write(path: String, tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)],
                             metadata: [String: String] = [:]) throws {
        var header: [String: Any] = [:]
        var checksums: [String: String] = [:]
        var offset = 0
        for t in tensors {
            var elements = 1
            for d in t.shape {
                let (p, overflow) = elements.multipliedReportingOverflow(by: d)
                guard d >= 0, !overflow else { throw AlexNetError("\(path): cannot write tensor '\(t.name)' of shape \(t.shape)") }
                elements = p
            }
            guard t.data.count == elements, header[t.name] == nil, t.name != "__metadata__" else {
                throw AlexNetError("\(path): cannot write tensor '\(t.name)': \(t.data.count) values for shape \(t.shape), or a repeated or reserved name")
            }
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + elements * 4]]
            checksums[t.name] = CRC32.hex(CRC32.checksum(UnsafeRawBufferPointer(t.data)))
            offset += elements * 4
        }
        var meta = metadata
        meta[checksumKey] = String(decoding: try JSONSerialization.data(withJSONObject: checksums, options: [.sortedKeys]), as: UTF8.self)
        header["__metadata__"] = meta
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var prefix = Data(capacity: 8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { prefix.append(contentsOf: $0) }
        prefix.append(json)

        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        let stem = ".\(url.lastPathComponent).partial-"
        removeStaleTemporaries(folder: folder, stem: stem)
        let temporary = (folder as NSString).appendingPathComponent("\(stem)\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))")
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw AlexNetError("\(path): cannot write (\(String(cString: strerror(errno)))); check the folder exists and is writable")
        }
        func fail(_ what: String) -> AlexNetError {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(temporary)
            return AlexNetError("\(path): cannot \(what) (\(reason)); check the folder is writable and the disk has space")
        }
        guard prefix.withUnsafeBytes({ writeFully(fd, $0) }) else { throw fail("write") }
        for t in tensors where !t.data.isEmpty {
            guard writeFully(fd, UnsafeRawBufferPointer(t.data)) else { throw fail("write") }
        }
        guard fsync(fd) == 0 else { throw fail("flush the file to disk") }
        guard close(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw AlexNetError("\(path): cannot write (\(reason)); check the disk has space")
        }
        // Failure-injection tests kill the process here: a pause (ms) between the complete temporary file and its rename.
        if let pause = ProcessInfo.processInfo.environment["ALEXNET_DEBUG_SAVE_DELAY_MS"].flatMap(UInt32.init), pause > 0 {
            usleep(min(pause, 10_000) * 1000)
        }
        // rename(2) replaces an existing file atomically: readers see the old file or the new one, never half.
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw AlexNetError("\(path): cannot replace the file (\(reason))")
        }
        // The rename is durable once the folder's entry is on disk.
        let folderFD = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard folderFD >= 0 else { throw AlexNetError("\(path): written, but cannot open its folder to flush it (\(String(cString: strerror(errno))))") }
        defer { close(folderFD) }
        // Some file systems cannot fsync a folder (EINVAL); the file itself is on disk then.
        guard fsync(folderFD) == 0 || errno == EINVAL else {
            throw AlexNetError("\(path): written, but its folder could not be flushed to disk (\(String(cString: strerror(errno))))")
        }
    }

    /// write(2) until every byte is out (retrying short writes and EINTR); false on error, with errno set.
    static func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard var p = bytes.baseAddress else { return true }
        var left = bytes.count
        while left > 0 {
            #if canImport(Glibc)
            let n = Glibc.write(fd, p, min(left, 1 << 30))
            #else
            let n = Darwin.write(fd, p, min(left, 1 << 30))
            #endif
            if n < 0 { if errno == EINTR { continue }; return false }
            if n == 0 { errno = EIO; return false }
            p += n; left -= n
        }
        return true
    }

    /// Removes `stem<pid>[-suffix]` files in `folder` left by processes that no longer run (or by this one).
    static func removeStaleTemporaries(folder: String, stem: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.isEmpty ? "." : folder) else { return }
        for name in names where name.hasPrefix(stem) {
            let pidText = name.dropFirst(stem.count).prefix { $0.isNumber }
            guard let pid = Int32(pidText) else { continue }
            let running = pid != getpid() && (kill(pid, 0) == 0 || errno == EPERM)
            if !running { unlink((folder as NSString).appendingPathComponent(name)) }
        }
    }
}

/// CRC-32 as zlib and Python's zlib.crc32 compute it (reflected polynomial 0xEDB88320), eight bytes a step.
public enum CRC32 {
    /// 8 tables of 256: table k maps a byte k positions ahead.
    static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            t[i] = c
        }
        for k in 1..<8 { for i in 0..<256 { t[k * 256 + i] = (t[(k - 1) * 256 + i] >> 8) ^ t[Int(t[(k - 1) * 256 + i] & 0xFF)] } }
        return t
    }()

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return 0 }
        var crc: UInt32 = 0xFFFF_FFFF
        let n = bytes.count
        tables.withUnsafeBufferPointer { t in
            var i = 0
            while i + 8 <= n {
                let lo = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt32.self)) ^ crc
                let hi = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self))
                crc = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                crc = t[Int((crc ^ UInt32(base.load(fromByteOffset: i, as: UInt8.self))) & 0xFF)] ^ (crc >> 8)
                i += 1
            }
        }
        return ~crc
    }

    /// 8 lower-case hex digits.
    public static func hex(_ value: UInt32) -> String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}
