// NumPy .npy reader (format versions 1–3, C order), for the NumPy dataset: uint8/float32 images, int64/int32 labels.
// Every number in the header is checked before use (overflow-checked arithmetic, valid in -Ounchecked builds too).
import Foundation

public struct NpyArray {
    public enum DType: String, Sendable { case uint8 = "|u1", float32 = "<f4", int64 = "<i8", int32 = "<i4" }
    public let path: String
    public let dtype: DType
    public let shape: [Int]
    /// Elements (the product of `shape`, checked not to overflow when the file was opened).
    public let count: Int
    let data: Data
    let start: Int

    public var itemSize: Int { Self.itemSize(dtype) }
    static func itemSize(_ dtype: DType) -> Int {
        switch dtype {
        case .uint8: return 1
        case .float32, .int32: return 4
        case .int64: return 8
        }
    }

    public init(path: String, allowed: [DType]) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { throw AlexNetError("\(path): no such file") }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            throw AlexNetError("\(path): cannot read the file (check its permissions)")
        }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard data.count >= 8, Array(data.prefix(6)) == magic else {
            throw AlexNetError("\(path): not a .npy file (bad magic; expected \\x93NUMPY, as numpy.save writes)")
        }
        let major = data[data.startIndex + 6], minor = data[data.startIndex + 7]
        // Version 1 has a 2-byte header length, versions 2 and 3 a 4-byte one (all little-endian, unsigned).
        let lengthBytes: Int
        switch (major, minor) {
        case (1, 0): lengthBytes = 2
        case (2, 0), (3, 0): lengthBytes = 4
        default: throw AlexNetError("\(path): unsupported .npy format version \(major).\(minor) (1.0, 2.0 and 3.0 are read)")
        }
        let headerStart = 8 + lengthBytes
        guard data.count >= headerStart else {
            throw AlexNetError("\(path): truncated .npy header (the file has \(data.count) bytes)")
        }
        var headerLength = 0
        for i in 0..<lengthBytes { headerLength |= Int(data[data.startIndex + 8 + i]) << (8 * i) }   // ≤ 2³² − 1
        let (headerEnd, endOverflow) = headerStart.addingReportingOverflow(headerLength)
        guard !endOverflow, headerEnd <= data.count else {
            throw AlexNetError("\(path): truncated .npy header (it declares \(headerLength) bytes of header, the file has \(data.count - headerStart) after the length field)")
        }
        let header = [UInt8](data[(data.startIndex + headerStart)..<(data.startIndex + headerEnd)])
        var parser = try NpyHeaderParser(path: path, bytes: header)
        let fields = try parser.parseDictionary()

        let descr = fields.descr
        guard let dtype = DType(rawValue: descr == "<u1" ? "|u1" : descr), allowed.contains(dtype) else {
            throw AlexNetError("\(path): dtype \(printableExcerpt(descr)) is not supported here; use one of \(allowed.map(\.rawValue).joined(separator: ", ")) (numpy: \(allowed.map { "\($0)" }.joined(separator: " or ")))")
        }
        if fields.fortranOrder {
            throw AlexNetError("\(path): Fortran-ordered arrays are not supported; save with np.ascontiguousarray")
        }
        let shape = fields.shape
        let shapeText = Self.describe(shape)
        // Every dimension, even beside a zero one, must fit: code indexes rows as products of the later dimensions.
        var bound = 1, count = 1
        for d in shape {
            let (b, o1) = bound.multipliedReportingOverflow(by: max(d, 1))
            let (c, o2) = count.multipliedReportingOverflow(by: d)
            guard !o1, !o2 else { throw AlexNetError("\(path): shape \(shapeText) is too large (its size overflows; damaged header?)") }
            bound = b; count = c
        }
        let itemSize = Self.itemSize(dtype)
        let (_, bytesOverflow) = bound.multipliedReportingOverflow(by: itemSize)
        guard !bytesOverflow else { throw AlexNetError("\(path): shape \(shapeText) is too large (its size in bytes overflows; damaged header?)") }
        let available = data.count - headerEnd
        let neededBytes = count * itemSize   // ≤ needed, which did not overflow
        guard available >= neededBytes else {
            throw AlexNetError("\(path): truncated: shape \(shapeText) needs \(neededBytes) bytes of data, the file has \(available)")
        }
        guard available == neededBytes else {
            throw AlexNetError("\(path): the file has \(available) bytes of data but shape \(shapeText) of \(dtype.rawValue) needs \(neededBytes); the header does not match the data (damaged file?)")
        }
        self.dtype = dtype; self.shape = shape; self.count = count; self.data = data; self.start = headerEnd
    }

    /// "(2, 3)", "(4,)", "()" as NumPy prints shapes.
    static func describe(_ shape: [Int]) -> String {
        shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    }

    public func withBytes<T>(_ body: (UnsafeRawPointer) throws -> T) rethrows -> T {
        try data.withUnsafeBytes { try body($0.baseAddress! + start) }
    }

    /// Integer values (labels) as Int. Float values that are not finite or do not fit an Int come out as Int.min.
    public func integers() -> [Int] {
        withBytes { p in
            switch dtype {
            case .int64: return (0..<count).map { Int(Int64(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) }
            case .int32: return (0..<count).map { Int(Int32(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self))) }
            case .uint8: return (0..<count).map { Int(p.load(fromByteOffset: $0, as: UInt8.self)) }
            case .float32: return (0..<count).map {
                let v = p.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self)
                return v.isFinite && abs(v) < 0x1p62 ? Int(v) : Int.min
            }
            }
        }
    }

    /// Index of the first NaN or ±inf of a float32 array (nil if all are finite, or for integer arrays).
    public func firstNonFinite() -> Int? {
        guard dtype == .float32 else { return nil }
        return withBytes { p in
            let block = 4096
            var lo = 0
            while lo < count {
                let hi = min(count, lo + block)
                var bad: UInt32 = 0   // exponent all ones: inf or NaN; branch-free so the loop vectorises
                for i in lo..<hi {
                    let bits = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
                    bad |= (bits & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0
                }
                if bad != 0 {
                    for i in lo..<hi where !p.loadUnaligned(fromByteOffset: i * 4, as: Float.self).isFinite { return i }
                }
                lo = hi
            }
            return nil
        }
    }

    /// The value at flat index `index` of a float32 array, for messages.
    func float(at index: Int) -> Float { withBytes { $0.loadUnaligned(fromByteOffset: index * 4, as: Float.self) } }

    /// Writes a C-order array (export-embedded, and tests that make small datasets).
    public static func write(path: String, dtype: DType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        try write(path: path, descr: dtype.rawValue, shape: shape, bytes: bytes)
    }

    /// Writes a C-order array of any NumPy type string (tests use it to make files this reader must refuse).
    public static func write(path: String, descr: String, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        var out = try header(path: path, descr: descr, shape: shape)
        out.append(contentsOf: bytes)
        do { try out.write(to: URL(fileURLWithPath: path)) } catch {
            throw AlexNetError("\(path): cannot write (\(error.localizedDescription))")
        }
    }
}

extension NpyArray {
    /// The bytes of a version 1.0 .npy file before its data (magic, header length, header padded to 64 bytes), for
    /// writers that stream the data after it (prepare's images.npy).
    public static func header(path: String, descr: String, shape: [Int]) throws -> Data {
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(describe(shape)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let n = header.utf8.count
        guard n <= 0xFFFF else { throw AlexNetError("\(path): cannot write a .npy header of \(n) bytes (version 1 holds 65535)") }
        var out = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        out.append(contentsOf: [UInt8(n & 0xFF), UInt8(n >> 8)])
        out.append(Data(header.utf8))
        return out
    }
}

/// The .npy header: a Python dict literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (4, 3), }
/// with exactly those three keys. A strict little parser (ASCII only, no escapes): anything else is refused.
struct NpyHeaderParser {
    struct Fields { var descr: String; var fortranOrder: Bool; var shape: [Int] }
    enum Value { case string(String), bool(Bool), tuple([Int]) }

    let path: String
    let bytes: [UInt8]
    var i = 0

    init(path: String, bytes: [UInt8]) throws {
        self.path = path
        self.bytes = bytes
        if let bad = bytes.firstIndex(where: { $0 >= 0x80 || ($0 < 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09) }) {
            throw AlexNetError("\(path): the .npy header is not plain text (byte 0x\(String(bytes[bad], radix: 16)) at header offset \(bad); damaged file?)")
        }
    }

    func fail(_ what: String) -> AlexNetError {
        let context = String(decoding: bytes[min(i, bytes.count)..<min(bytes.count, i + 20)], as: UTF8.self)
        return AlexNetError("\(path): malformed .npy header: \(what) at header offset \(i) (near \(printableExcerpt(context))); damaged file?")
    }

    mutating func skipSpace() { while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 } }

    mutating func expect(_ c: Character) throws {
        skipSpace()
        guard i < bytes.count, bytes[i] == c.asciiValue! else { throw fail("expected '\(c)'") }
        i += 1
    }

    /// Consumes `c` if it is next (after spaces).
    mutating func accept(_ c: Character) -> Bool {
        skipSpace()
        if i < bytes.count, bytes[i] == c.asciiValue! { i += 1; return true }
        return false
    }

    mutating func parseString() throws -> String {
        skipSpace()
        guard i < bytes.count, bytes[i] == 0x27 || bytes[i] == 0x22 else { throw fail("expected a quoted string") }
        let quote = bytes[i]
        i += 1
        let begin = i
        while i < bytes.count, bytes[i] != quote {
            guard bytes[i] != 0x5C else { throw fail("escapes are not supported in strings") }
            i += 1
        }
        guard i < bytes.count else { throw fail("unterminated string") }
        defer { i += 1 }
        return String(decoding: bytes[begin..<i], as: UTF8.self)
    }

    /// A non-negative decimal integer (Python 2's trailing L accepted), overflow-checked.
    mutating func parseDimension() throws -> Int {
        skipSpace()
        let begin = i
        if i < bytes.count, bytes[i] == 0x2D || bytes[i] == 0x2B { i += 1 }
        var value = 0, overflow = false, digits = 0
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int(bytes[i] - 0x30))
            overflow = overflow || o1 || o2
            value = s; digits += 1; i += 1
        }
        let text = String(decoding: bytes[begin..<i], as: UTF8.self)
        guard digits > 0 else { i = begin; throw fail("expected a shape entry") }
        if i < bytes.count, bytes[i] == 0x4C { i += 1 }
        guard bytes[begin] != 0x2D || text.allSatisfy({ $0 == "-" || $0 == "0" }) else {
            throw AlexNetError("\(path): shape entry \(printableExcerpt(text)) is negative (damaged header?)")
        }
        guard !overflow else { throw AlexNetError("\(path): shape entry \(printableExcerpt(text)) is too large (damaged header?)") }
        return value
    }

    mutating func parseValue() throws -> Value {
        skipSpace()
        guard i < bytes.count else { throw fail("expected a value") }
        switch bytes[i] {
        case 0x27, 0x22: return .string(try parseString())
        case 0x28:
            i += 1
            var dims: [Int] = []
            if accept(")") { return .tuple(dims) }
            while true {
                dims.append(try parseDimension())
                guard dims.count <= 32 else { throw fail("more than 32 dimensions") }
                if accept(")") {
                    // (5) is the number 5 in Python, not a tuple: numpy writes (5,).
                    guard dims.count > 1 else { throw fail("a one-dimensional shape needs a comma, as in (5,)") }
                    break
                }
                try expect(",")
                if accept(")") { break }
            }
            return .tuple(dims)
        default:
            for (word, value) in [("True", true), ("False", false)] where bytes[i...].starts(with: word.utf8) {
                i += word.utf8.count
                return .bool(value)
            }
            throw fail("expected a string, True, False or a shape tuple")
        }
    }

    mutating func parseDictionary() throws -> Fields {
        try expect("{")
        var descr: String?, fortran: Bool?, shape: [Int]?
        if !accept("}") {
            while true {
                let keyStart = i
                let key = try parseString()
                try expect(":")
                let value = try parseValue()
                switch (key, value) {
                case ("descr", .string(let s)) where descr == nil: descr = s
                case ("fortran_order", .bool(let b)) where fortran == nil: fortran = b
                case ("shape", .tuple(let t)) where shape == nil: shape = t
                default: i = keyStart; throw fail("unexpected, repeated or mistyped key \(printableExcerpt(key))")
                }
                if accept("}") { break }
                try expect(",")
                if accept("}") { break }
            }
        }
        skipSpace()
        guard i == bytes.count else { throw fail("unexpected text after the header dictionary") }
        guard let d = descr else { throw AlexNetError("\(path): .npy header has no dtype ('descr')") }
        guard let f = fortran else { throw AlexNetError("\(path): .npy header has no 'fortran_order'") }
        guard let s = shape else { throw AlexNetError("\(path): .npy header has no shape") }
        return Fields(descr: d, fortranOrder: f, shape: s)
    }
}

/// Text from a file made safe for a one-line message: quoted, control and non-ASCII characters escaped, cut at `limit`.
func printableExcerpt(_ text: String, limit: Int = 48) -> String {
    var out = ""
    for scalar in text.unicodeScalars {
        if out.count >= limit { out += "…"; break }
        if scalar.value >= 0x20 && scalar.value < 0x7F && scalar != "'" && scalar != "\\" {
            out.unicodeScalars.append(scalar)
        } else {
            out += scalar.value < 0x100 ? String(format: "\\x%02x", scalar.value) : String(format: "\\u{%x}", scalar.value)
        }
    }
    return "'" + out + "'"
}
