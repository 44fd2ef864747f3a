// NumPy .npy reader (format versions 1–3, C order), for the NumPy dataset: uint8/float32 images, int64/int32 labels.
import Foundation

public struct NpyArray {
    public enum DType: String, Sendable { case uint8 = "|u1", float32 = "<f4", int64 = "<i8", int32 = "<i4" }
    public let path: String
    public let dtype: DType
    public let shape: [Int]
    let data: Data
    let start: Int

    public init(path: String, allowed: [DType]) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { throw AlexNetError("\(path): no such file") }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else {
            throw AlexNetError("\(path): cannot read the file (check its permissions)")
        }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard data.count >= 10, Array(data.prefix(6)) == magic else { throw AlexNetError("\(path): not a .npy file (bad magic)") }
        let major = data[6]
        let headerLength: Int, headerStart: Int
        if major == 1 {
            headerLength = Int(data[8]) | Int(data[9]) << 8; headerStart = 10
        } else if major == 2 || major == 3 {
            guard data.count >= 12 else { throw AlexNetError("\(path): truncated .npy header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(data[8 + $1]) << (8 * $1) }; headerStart = 12
        } else {
            throw AlexNetError("\(path): unsupported .npy format version \(major)")
        }
        guard headerStart + headerLength <= data.count,
              let header = String(data: data.subdata(in: headerStart..<(headerStart + headerLength)), encoding: .utf8) else {
            throw AlexNetError("\(path): truncated .npy header")
        }
        func field(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descrField = field("descr"), let q1 = descrField.firstIndex(of: "'") else {
            throw AlexNetError("\(path): .npy header has no dtype")
        }
        let rest = descrField[descrField.index(after: q1)...]
        let descr = String(rest.prefix { $0 != "'" })
        guard let dtype = DType(rawValue: descr == "<u1" ? "|u1" : descr), allowed.contains(dtype) else {
            throw AlexNetError("\(path): dtype \(descr) is not supported here; use one of \(allowed.map(\.rawValue).joined(separator: ", ")) (numpy: \(allowed.map { "\($0)" }.joined(separator: " or ")))")
        }
        if let fortran = field("fortran_order"), fortran.hasPrefix("True") {
            throw AlexNetError("\(path): Fortran-ordered arrays are not supported; save with np.ascontiguousarray")
        }
        guard let shapeField = field("shape"), let open = shapeField.firstIndex(of: "("), let close = shapeField.firstIndex(of: ")") else {
            throw AlexNetError("\(path): .npy header has no shape")
        }
        let dims = shapeField[shapeField.index(after: open)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let shape = try dims.map { d -> Int in
            guard let v = Int(d), v >= 0 else { throw AlexNetError("\(path): bad shape entry '\(d)'") }
            return v
        }
        let itemSize = dtype == .uint8 ? 1 : (dtype == .int64 ? 8 : 4)
        let needed = shape.reduce(1, *) * itemSize
        let start = headerStart + headerLength
        guard data.count - start >= needed else {
            throw AlexNetError("\(path): truncated: shape \(shape) needs \(needed) bytes of data, the file has \(data.count - start)")
        }
        self.dtype = dtype; self.shape = shape; self.data = data; self.start = start
    }

    public var count: Int { shape.reduce(1, *) }

    public func withBytes<T>(_ body: (UnsafeRawPointer) throws -> T) rethrows -> T {
        try data.withUnsafeBytes { try body($0.baseAddress! + start) }
    }

    /// Integer values (labels) as Int.
    public func integers() -> [Int] {
        withBytes { p in
            switch dtype {
            case .int64: return (0..<count).map { Int(Int64(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) }
            case .int32: return (0..<count).map { Int(Int32(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self))) }
            case .uint8: return (0..<count).map { Int(p.load(fromByteOffset: $0, as: UInt8.self)) }
            case .float32: return (0..<count).map { Int(p.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self)) }
            }
        }
    }

    /// Writes a C-order array (export-embedded, and tests that make small datasets).
    public static func write(path: String, dtype: DType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        try write(path: path, descr: dtype.rawValue, shape: shape, bytes: bytes)
    }

    /// Writes a C-order array of any NumPy type string (tests use it to make files this reader must refuse).
    public static func write(path: String, descr: String, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let n = header.utf8.count
        out.append(contentsOf: [UInt8(n & 0xFF), UInt8(n >> 8)])
        out.append(header.data(using: .utf8)!)
        out.append(contentsOf: bytes)
        do { try out.write(to: URL(fileURLWithPath: path)) } catch {
            throw AlexNetError("\(path): cannot write (\(error.localizedDescription))")
        }
    }
}
