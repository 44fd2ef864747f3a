// Fuzzing of every file the trainer reads: valid .npy, safetensors and checkpoint files, mutated thousands of ways
// (truncations at every header byte, random and chosen header bytes, huge and negative numbers, bad offsets and dtypes,
// non-UTF-8 text, header-length fields), each read in-process through the trainer's entry points. Every case must load
// or throw one AlexNetError line naming the file; a trap would kill the test process.
import AlexNet
import Foundation
import XCTest

/// SplitMix64: a small deterministic generator, so every run tries the same cases.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class FileFuzzTests: XCTestCase {
    /// Outcomes of one family of cases.
    struct Tally {
        var cases = 0, loaded = 0, problems: [String] = []
    }

    var dir = ""
    let model = ModelConfig(width: 0.01, classes: 10, dropout: 0.5)

    // XCTest makes every test's instance up front, so each test makes (and removes) its own folder.
    override func setUp() { dir = Paths.temporaryDirectory("fuzz-\(name.filter { $0.isLetter })") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// Replaces the file's bytes. A new file each time: FileManager.createFile flushes to disk, and ext4 flushes a file
    /// truncated and written again when it is closed, both far too slow for thousands of cases.
    func put(_ path: String, _ bytes: [UInt8]) {
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else { return XCTFail("cannot write \(path)") }
        bytes.withUnsafeBytes { XCTAssertEqual(write(fd, $0.baseAddress, $0.count), $0.count, "short write to \(path)") }
        close(fd)
    }

    /// Runs one case: `body` either succeeds or throws an AlexNetError of one line containing one of `names`.
    func attempt(_ tally: inout Tally, _ label: String, names: [String], _ body: () throws -> Void) {
        tally.cases += 1
        do {
            try body()
            tally.loaded += 1
        } catch let error as AlexNetError {
            let text = error.description
            if text.contains("\n") || text.contains("\r") || !names.contains(where: { text.contains($0) }) {
                tally.problems.append("\(label): \(text.debugDescription)")
            }
        } catch {
            tally.problems.append("\(label): not an AlexNetError: \(error)")
        }
    }

    func check(_ tally: Tally, _ family: String, atLeast minimum: Int, file: StaticString = #filePath, line: UInt = #line) {
        print("fuzz \(family): \(tally.cases) cases, \(tally.loaded) still valid, \(tally.problems.count) bad errors")
        XCTAssertGreaterThanOrEqual(tally.cases, minimum, family, file: file, line: line)
        XCTAssertTrue(tally.problems.isEmpty, "\(family): \(tally.problems.count) bad errors, e.g.\n" + tally.problems.prefix(10).joined(separator: "\n"),
                      file: file, line: line)
        // Mutations that keep a file valid exist (padding, data bytes), but they must be a minority.
        XCTAssertLessThan(tally.loaded * 3, tally.cases, "\(family): \(tally.loaded) of \(tally.cases) mutated files loaded", file: file, line: line)
    }

    // MARK: Mutations

    /// How a format frames its header: where the length field is, and how to rewrite it.
    struct Framing {
        let lengthField: Range<Int>      // bytes of the little-endian header length
        let headerStart: Int             // first byte the length counts
        func setLength(_ bytes: inout [UInt8], _ value: UInt64) {
            for (k, i) in lengthField.enumerated() { bytes[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))) }
        }
    }

    static let interestingBytes: [UInt8] = Array("0123456789-+,:()[]{}'\" eE.Ltruefalsnul\\".utf8) + [0x00, 0x0A, 0x7F, 0x80, 0xC0, 0xC3, 0xED, 0xFF]
    static let interestingNumbers = ["0", "-1", "-0", "1", "2", "7", "255", "65536", "4294967296", "4294967295", "2147483648",
                                     "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551615",
                                     "18446744073709551616", "99999999999999999999999999", "1e30", "1.5", "-7", "1e2", "0x10", "",
                                     "3037000500", "4611686018427387904"]

    /// Calls `body` on every truncation of `original` inside its header, then on `count` random mutations.
    func mutations(of original: [UInt8], headerEnd: Int, framing: Framing, count: Int, seed: UInt64,
                   dataFlips: Bool = true, _ body: (String, [UInt8]) -> Void) {
        for length in 0..<min(headerEnd, original.count) { body("truncated at \(length)", Array(original.prefix(length))) }
        var rng = SplitMix64(seed: seed)
        let headerCount = headerEnd - framing.headerStart
        for n in 0..<count {
            var b = original
            let kind = Int.random(in: 0..<(dataFlips ? 10 : 9), using: &rng)
            var label = "mutation \(n) kind \(kind)"
            switch kind {
            case 0:   // 1–4 random bytes anywhere in the header (magic, version and length included)
                for _ in 0...Int.random(in: 0..<4, using: &rng) { b[Int.random(in: 0..<headerEnd, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            case 1:   // one chosen character in the header text
                b[Int.random(in: framing.headerStart..<headerEnd, using: &rng)] = Self.interestingBytes.randomElement(using: &rng)!
            case 2, 3:   // a number in the header replaced, header length kept (kind 2) or fixed up (kind 3)
                let digits = (framing.headerStart..<headerEnd).filter { (0x30...0x39).contains(b[$0]) }
                guard let at = digits.randomElement(using: &rng) else { continue }
                var lo = at, hi = at + 1
                while lo > framing.headerStart, (0x30...0x39).contains(b[lo - 1]) { lo -= 1 }
                while hi < headerEnd, (0x30...0x39).contains(b[hi]) { hi += 1 }
                let number = Self.interestingNumbers.randomElement(using: &rng)!
                label += " \(number)"
                b.replaceSubrange(lo..<hi, with: Array(number.utf8))
                if kind == 3 { framing.setLength(&b, UInt64(headerCount + number.utf8.count - (hi - lo))) }
            case 4:   // the header length field
                let values: [UInt64] = [0, 1, 2, 3, UInt64(headerCount) - 1, UInt64(headerCount) + 1, UInt64(headerCount) + 7,
                                        UInt64(headerCount) | 1, UInt64(original.count), UInt64(original.count - framing.headerStart),
                                        UInt64(original.count - framing.headerStart) + 1, 0xFFFF, 0xFFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF,
                                        0x8000_0000_0000_0000, UInt64.max, UInt64.max - 7, UInt64(bitPattern: -Int64(headerCount)),
                                        UInt64.random(in: 0...UInt64.max, using: &rng)]
                let v = values.randomElement(using: &rng)!
                label += " length \(v)"
                framing.setLength(&b, v)
            case 5:   // bytes inserted into or deleted from the header, length kept or fixed up
                let at = Int.random(in: framing.headerStart..<headerEnd, using: &rng)
                let delta: Int
                if Bool.random(using: &rng) {
                    let extra = (0..<Int.random(in: 1...3, using: &rng)).map { _ in Self.interestingBytes.randomElement(using: &rng)! }
                    b.insert(contentsOf: extra, at: at); delta = extra.count
                } else {
                    let n = min(Int.random(in: 1...3, using: &rng), headerEnd - at)
                    b.removeSubrange(at..<(at + n)); delta = -n
                }
                if Bool.random(using: &rng) { framing.setLength(&b, UInt64(headerCount + delta)) }
            case 6:   // two header bytes swapped
                b.swapAt(Int.random(in: framing.headerStart..<headerEnd, using: &rng), Int.random(in: framing.headerStart..<headerEnd, using: &rng))
            case 7:   // truncated inside the data, or bytes appended
                if Bool.random(using: &rng), original.count > headerEnd {
                    b = Array(b.prefix(Int.random(in: headerEnd..<original.count, using: &rng)))
                } else {
                    b += (0..<Int.random(in: 1...9, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                }
            case 8:   // all zero (a file of the right length that never got its bytes), or its data zeroed
                if Bool.random(using: &rng) { b = [UInt8](repeating: 0, count: b.count) } else {
                    for i in headerEnd..<b.count { b[i] = 0 }
                }
            default:   // a data byte changed (checkpoints: the checksum; float32: maybe NaN)
                if original.count > headerEnd {
                    for _ in 0...Int.random(in: 0..<2, using: &rng) {
                        let i = Int.random(in: headerEnd..<original.count, using: &rng)
                        b[i] = Bool.random(using: &rng) ? 0xFF : b[i] ^ UInt8(1 << Int.random(in: 0..<8, using: &rng))
                    }
                }
            }
            body(label, b)
        }
    }

    // MARK: .npy

    static let npyFraming = Framing(lengthField: 8..<10, headerStart: 10)

    static func npyHeaderEnd(_ bytes: [UInt8]) -> Int { 10 + (Int(bytes[8]) | Int(bytes[9]) << 8) }

    /// A version-1 .npy file with header text `dictionary` (padded as numpy pads) and `data`.
    static func npy(_ dictionary: String, _ data: [UInt8], version: UInt8 = 1) -> [UInt8] {
        let prefix = version == 1 ? 10 : 12
        var header = dictionary
        while (prefix + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let n = header.utf8.count
        var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0]
        out += version == 1 ? [UInt8(n & 0xFF), UInt8(n >> 8)] : [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 24)]
        return out + Array(header.utf8) + data
    }

    /// Header dictionaries chosen to be wrong in one way each (shapes, dtypes, keys, syntax).
    static func badNpyHeaders(descr: String, shape: String) -> [String] {
        let shapes = ["(-1,)", "(1, 4294967296, 4294967296, 3)", "(9223372036854775807,)", "(9223372036854775808,)",
                      "(18446744073709551616,)", "(0, 9223372036854775807, 4)", "(2, -3)", "(3037000500, 3037000500)",
                      "(4611686018427387904, 2)", "(2305843009213693952,)", "(1e3,)", "(2.0,)", "[2, 3]", "2", "(,)", "((2,),)",
                      "(2,, 3)", "(99999999999999999999999999999999999999,)", "(1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1)",
                      "(1, 2, 3, 4)", "(1000,)", "()"]
        let dtypes = ["'<f8'", "'>f4'", "'|b1'", "'<U10'", "'O'", "''", "'<i2'", "'<f4 '", "'\\x00'", "'<c8'", "42", "None",
                      "'<f4'", "'|u1'", "'<i8'", "'<i4'", "'<u1'"]
        var out: [String] = []
        for s in shapes { out.append("{'descr': \(descr), 'fortran_order': False, 'shape': \(s), }") }
        for d in dtypes { out.append("{'descr': \(d), 'fortran_order': False, 'shape': \(shape), }") }
        out += ["{'descr': \(descr), 'fortran_order': True, 'shape': \(shape), }",
                "{'descr': \(descr), 'fortran_order': 0, 'shape': \(shape), }",
                "{'descr': \(descr), 'shape': \(shape), }",
                "{'fortran_order': False, 'shape': \(shape), }",
                "{'descr': \(descr), 'fortran_order': False, }",
                "{'descr': \(descr), 'fortran_order': False, 'shape': \(shape), 'extra': 1, }",
                "{'descr': \(descr), 'descr': \(descr), 'fortran_order': False, 'shape': \(shape), }",
                "{'descr': \(descr) 'fortran_order': False, 'shape': \(shape) }",
                "{'descr': \(descr), 'fortran_order': False, 'shape': \(shape), ",
                "'descr': \(descr), 'fortran_order': False, 'shape': \(shape)",
                "{\"descr\": \(descr), \"fortran_order\": False, \"shape\": \(shape)}",
                "{'descr': \(descr), 'fortran_order': False, 'shape': \(shape), } trailing",
                "{'descr': \(descr), 'fortran_order': False, 'shape': \(shape), }\u{00e9}",
                "{'descr': \(descr), 'fortran_order': Falsey, 'shape': \(shape), }",
                "{}", "", "[]", "{'descr'}", "{'descr': }", "{'descr': '\\'', 'fortran_order': False, 'shape': \(shape), }"]
        return out
    }

    /// One .npy family: `count` random mutations of a valid file plus the chosen bad headers, read as the trainer does.
    func fuzzNpy(name: String, descr: String, shape: [Int], data: [UInt8], allowed: [NpyArray.DType], count: Int, seed: UInt64) throws -> Tally {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        let original = Self.npy("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }", data)
        let path = dir + "/\(name).npy"
        var tally = Tally()
        func read(_ label: String, _ bytes: [UInt8]) {
            put(path, bytes)
            attempt(&tally, label, names: [path]) {
                let a = try NpyArray(path: path, allowed: allowed)
                // What NumpyDataset does with an array it opened.
                if a.dtype == .int64 || a.dtype == .int32 { _ = a.integers() }
                if let bad = a.firstNonFinite() { throw AlexNetError("\(path): not finite at \(bad)") }
                _ = a.withBytes { p in a.count > 0 ? Int(p.load(fromByteOffset: a.count * a.itemSize - 1, as: UInt8.self)) : 0 }
            }
        }
        // The original itself loads (else every case would trivially throw).
        read("original", original)
        XCTAssertEqual(tally.loaded, 1, "\(name): the valid file does not load: \(tally.problems)")
        tally = Tally()
        mutations(of: original, headerEnd: Self.npyHeaderEnd(original), framing: Self.npyFraming, count: count, seed: seed,
                  dataFlips: descr == "<f4", read)
        for (i, header) in Self.badNpyHeaders(descr: "'\(descr)'", shape: shapeText).enumerated() {
            read("header \(i)", Self.npy(header, data))
            read("header \(i) v2", Self.npy(header, data, version: 2))
        }
        for v: UInt8 in [0, 2, 3, 4, 0xFF] {   // other versions over a version-1 layout, and minor versions
            var b = original; b[6] = v; read("version \(v)", b)
            b = original; b[7] = v; read("minor \(v)", b)
        }
        return tally
    }

    func testNpyMutationsLoadOrFailWithOneLine() throws {
        let pixels = (0..<(2 * 5 * 4 * 3)).map { UInt8(truncatingIfNeeded: $0 &* 37) }
        let floats = (0..<24).flatMap { i in withUnsafeBytes(of: (Float(i) * 0.25 - 2).bitPattern.littleEndian) { Array($0) } }
        let labels = (0..<7).flatMap { i in withUnsafeBytes(of: Int64(i % 3).littleEndian) { Array($0) } }
        var total = 0
        for (name, descr, shape, data, allowed, seed) in [
            ("uint8-images", "|u1", [2, 5, 4, 3], pixels, [NpyArray.DType.uint8, .float32], UInt64(1)),
            ("float32-tensors", "<f4", [2, 3, 4], floats, [.uint8, .float32], 2),
            ("int64-labels", "<i8", [7], labels, [.int64, .int32], 3),
        ] {
            let tally = try fuzzNpy(name: name, descr: descr, shape: shape, data: data, allowed: allowed, count: 1500, seed: seed)
            check(tally, name, atLeast: 1600)
            total += tally.cases
        }
        XCTAssertGreaterThanOrEqual(total, 4800)
    }

    /// Whole dataset folders through NumpyDataset(directory:), as --data opens them: 227×227 uint8 and float32 images.
    func testNumpyDatasetMutationsLoadOrFailWithOneLine() throws {
        var total = 0
        for (kind, count) in [("uint8", 400), ("float32", 300)] {
            let folder = dir + "/dataset-\(kind)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let images = folder + "/images.npy", labels = folder + "/labels.npy"
            let imageBytes: [UInt8], imageHeader: String
            if kind == "uint8" {
                imageBytes = (0..<(227 * 227 * 3)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
                imageHeader = "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 227, 227, 3), }"
            } else {
                imageBytes = (0..<(3 * 227 * 227)).flatMap { i in withUnsafeBytes(of: Float(i % 255).bitPattern.littleEndian) { Array($0) } }
                imageHeader = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 227, 227), }"
            }
            let imageFile = Self.npy(imageHeader, imageBytes)
            let labelFile = Self.npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", [1, 0, 0, 0, 0, 0, 0, 0])
            put(labels, labelFile)
            put(images, imageFile)
            XCTAssertEqual(try NumpyDataset(directory: folder).label(0), 1)
            var tally = Tally()
            func open(_ label: String) {
                attempt(&tally, label, names: [images, labels]) {
                    let d = try NumpyDataset(directory: folder)
                    switch d.storage {   // what the batch assembler reads
                    case .pixels(let h, let w):
                        var out = [UInt8](repeating: 0, count: h * w * 3)
                        d.pixels(d.count - 1, into: &out)
                    case .tensors:
                        var out = [Float](repeating: 0, count: 3 * 227 * 227)
                        d.tensor(d.count - 1, into: &out, channelStride: 227 * 227)
                    }
                    try d.checkLabels(classes: 10)
                }
            }
            // Images: header mutations (few data flips for uint8: every byte value is a pixel); float data flips make NaNs.
            mutations(of: imageFile, headerEnd: Self.npyHeaderEnd(imageFile), framing: Self.npyFraming, count: count, seed: 11, dataFlips: kind == "float32") { label, bytes in
                put(images, bytes)
                open("images " + label)
            }
            put(images, imageFile)
            mutations(of: labelFile, headerEnd: Self.npyHeaderEnd(labelFile), framing: Self.npyFraming, count: 60, seed: 12) { label, bytes in
                put(labels, bytes)
                open("labels " + label)
            }
            put(labels, labelFile)
            // A NaN or ±inf anywhere among the floats.
            if kind == "float32" {
                for (n, bits) in [0x7FC0_0000, 0x7F80_0000, 0xFF80_0000, 0x7F80_0001, 0xFFFF_FFFF].enumerated() {
                    var b = imageFile
                    let at = Self.npyHeaderEnd(imageFile) + 4 * ((n * 7919 * 13) % (3 * 227 * 227))
                    withUnsafeBytes(of: UInt32(bits).littleEndian) { b.replaceSubrange(at..<(at + 4), with: $0) }
                    put(images, b)
                    let loaded = tally.loaded
                    open("non-finite \(n)")
                    XCTAssertEqual(tally.loaded, loaded, "image with bits \(String(bits, radix: 16)) at byte \(at) loaded")
                }
            }
            check(tally, "dataset \(kind)", atLeast: count + 60)
            total += tally.cases
        }
        XCTAssertGreaterThanOrEqual(total, 1000)
    }

    // MARK: safetensors and checkpoints

    static let safetensorsFraming = Framing(lengthField: 0..<8, headerStart: 8)

    static func headerEnd(_ bytes: [UInt8]) -> Int {
        8 + Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
    }

    /// A safetensors file from raw header text and data (header padded with spaces to 8 bytes).
    static func safetensors(header: String, data: ArraySlice<UInt8>) -> [UInt8] {
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var out = withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) }
        out += h
        out += data
        return out
    }

    static func jsonString(_ s: String) -> String { String(decoding: try! JSONEncoder().encode(s), as: UTF8.self) }

    /// Header rewrites chosen to be wrong in one way each: a tensor's dtype, shape or offsets, the metadata, the state
    /// and the checksums. Field values are raw JSON text, so numbers beyond 64 bits and wrong types can be written.
    func structuredSafetensorsCases(_ original: [UInt8], count: Int, seed: UInt64, _ body: (String, [UInt8]) -> Void) throws {
        let end = Self.headerEnd(original)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(original[8..<end])) as? [String: Any])
        let names = json.keys.filter { $0 != "__metadata__" }.sorted()
        let metadata = (json["__metadata__"] as? [String: String]) ?? [:]
        let data = original[end...]
        func fields(_ name: String) -> [(String, String)] {
            let e = json[name] as! [String: Any]
            return [("dtype", Self.jsonString(e["dtype"] as! String)), ("shape", "\(e["shape"] as! [Int])"),
                    ("data_offsets", "\(e["data_offsets"] as! [Int])")]
        }
        func render(_ tensors: [(String, [(String, String)])], _ meta: [String: String]?) -> String {
            var parts = tensors.map { name, f in Self.jsonString(name) + ":{" + f.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}" }
            if let m = meta { parts.append("\"__metadata__\":{" + m.sorted { $0.key < $1.key }.map { Self.jsonString($0.key) + ":" + Self.jsonString($0.value) }.joined(separator: ",") + "}") }
            return "{" + parts.joined(separator: ",") + "}"
        }
        let dataCount = data.count
        let shapes = ["[-1]", "[4294967296,4294967296]", "[9223372036854775807,2]", "[0]", "[]", "[1,1,1]", "[4611686018427387904,4]",
                      "[18446744073709551616]", "[1e30]", "[2.5]", "[\"2\"]", "null", "{}", "[3037000500,3037000500,4]", "[0,9223372036854775807,9223372036854775807]"]
        let offsets = ["[0,\(dataCount + 4)]", "[-8,0]", "[\(dataCount + 4),\(dataCount + 8)]", "[8,0]", "[0,9223372036854775807]",
                       "[9223372036854775800,9223372036854775807]", "[0]", "[0,4,8]", "[0.5,4]", "[0,18446744073709551616]", "\"0,4\"",
                       "[0,0]", "[4,8]", "[-9223372036854775808,0]", "[\(dataCount),\(dataCount)]"]
        let dtypes = ["\"F64\"", "\"I32\"", "\"F16\"", "\"BF16\"", "\"U8\"", "\"X\"", "\"\"", "5", "null", "\"f32\"", "\"F8_E4M3\"", "\"F32\\u0000\""]
        var rng = SplitMix64(seed: seed)
        for n in 0..<count {
            var tensors = names.map { ($0, fields($0)) }
            var meta: [String: String]? = metadata.isEmpty ? nil : metadata
            let pick = Int.random(in: 0..<tensors.count, using: &rng)
            let kind = Int.random(in: 0..<(metadata["state"] != nil ? 9 : 6), using: &rng)
            switch kind {
            case 0: tensors[pick].1[1].1 = shapes.randomElement(using: &rng)!
            case 1: tensors[pick].1[2].1 = offsets.randomElement(using: &rng)!
            case 2: tensors[pick].1[0].1 = dtypes.randomElement(using: &rng)!
            case 3:   // a field missing, or a tensor named oddly, or a name not UTF-8 / with escapes
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: tensors[pick].1.remove(at: Int.random(in: 0..<3, using: &rng))
                case 1: tensors[pick].0 += "\n\u{0}"
                case 2: tensors[pick].0 = "__metadata__"
                default: tensors.remove(at: pick)
                }
            case 4:   // two tensors swap offsets or share them
                let other = (pick + 1 + Int.random(in: 0..<(tensors.count - 1), using: &rng)) % tensors.count
                if Bool.random(using: &rng) { tensors[pick].1[2].1 = tensors[other].1[2].1 } else {
                    let t = tensors[pick].1[2].1; tensors[pick].1[2].1 = tensors[other].1[2].1; tensors[other].1[2].1 = t
                }
            case 5:   // the metadata's type or a checksum
                switch Int.random(in: 0..<5, using: &rng) {
                case 0: meta = nil   // no metadata: loads if nothing else is wrong
                case 1: meta?["checksums"] = "{\"\(names[pick])\":\"zzzzzzzz\"}"
                case 2: meta?["checksums"] = "not json"
                case 3: meta?["checksums"] = "{\"nope\":\"00000000\"}"
                default:
                    var sums = (try? JSONSerialization.jsonObject(with: Data((metadata["checksums"] ?? "{}").utf8))) as? [String: String] ?? [:]
                    sums[names[pick]] = String(format: "%08x", UInt32.random(in: 0...UInt32.max, using: &rng))
                    meta?["checksums"] = String(decoding: try JSONSerialization.data(withJSONObject: sums, options: [.sortedKeys]), as: UTF8.self)
                }
            default:   // the training state: out of range, wrong types, undecodable
                let state = metadata["state"]!
                let swaps: [(String, String)] = [("\"step\":", "\"step\":-1,\"x\":"), ("\"step\":", "\"step\":1e30,\"x\":"),
                                                 ("\"step\":", "\"step\":\"3\",\"x\":"), ("\"seed\":", "\"seed\":-1,\"x\":"),
                                                 ("\"width\":", "\"width\":0,\"x\":"), ("\"width\":", "\"width\":-0.5,\"x\":"),
                                                 ("\"width\":", "\"width\":1e300,\"x\":"), ("\"classes\":", "\"classes\":1,\"x\":"),
                                                 ("\"classes\":", "\"classes\":-5,\"x\":"), ("\"dropout\":", "\"dropout\":1,\"x\":"),
                                                 ("\"dropout\":", "\"dropout\":-0.1,\"x\":"), ("\"learningRate\":", "\"learningRate\":1e39,\"x\":"),
                                                 ("\"lrnSize\":", "\"lrnSize\":0,\"x\":"), ("\"model\":", "\"model\":7,\"x\":"),
                                                 ("{", "["), ("\"step\"", "\"stop\""), ("}", "")]
                let (from, to) = swaps.randomElement(using: &rng)!
                if let r = state.range(of: from) { meta?["state"] = state.replacingCharacters(in: r, with: to) }
                if Int.random(in: 0..<6, using: &rng) == 0 { meta?["state"] = nil }   // no state: loads, returning nil
            }
            body("structured \(n) kind \(kind)", Self.safetensors(header: render(tensors, meta), data: data))
        }
        // Non-UTF-8 and odd JSON around a valid header.
        let valid = render(names.map { ($0, fields($0)) }, metadata.isEmpty ? nil : metadata)
        for (i, text) in [valid.replacingOccurrences(of: "\"F32\"", with: "\"F\u{00e9}32\""), valid + "x", "[" + valid + "]", valid + valid,
                          String(valid.dropLast()), "{\"a\":" + String(repeating: "[", count: 100_000), "null", "\"str\"", "1"].enumerated() {
            body("text \(i)", Self.safetensors(header: text, data: data))
        }
        for (i, raw) in ([[0xFF, 0xFE], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80]] as [[UInt8]]).enumerated() {
            var h = Array(valid.utf8)
            let at = h.firstIndex(of: 0x46)!   // the F of a dtype
            h.replaceSubrange(at..<(at + 1), with: raw)
            while h.count % 8 != 0 { h.append(0x20) }
            var out = withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) }
            out += h
            out += data
            body("non-UTF-8 \(i)", out)
        }
    }

    func testSafetensorsMutationsLoadOrFailWithOneLine() throws {
        let path = dir + "/small.safetensors"
        let values: [[Float]] = [[1, 2, 3, 4, 5, 6], [7], (0..<20).map { Float($0) * 0.5 }]
        try values[0].withUnsafeBufferPointer { a in try values[1].withUnsafeBufferPointer { b in try values[2].withUnsafeBufferPointer { c in
            try SafetensorsFile.write(path: path, tensors: [("x", [2, 3], a), ("y", [1], b), ("z.weight", [4, 5], c)], metadata: ["k": "v"])
        } } }
        let checked = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // The same tensors as another writer would store them: no metadata, no checksums.
        let plain = Self.safetensors(header: "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[24,28]},\"z.weight\":{\"dtype\":\"F32\",\"shape\":[4,5],\"data_offsets\":[28,108]}}",
                                     data: checked[Self.headerEnd(checked)...])
        var total = 0
        for (name, original, count, structured) in [("with checksums", checked, 2000, 1000), ("without metadata", plain, 1000, 600)] {
            var tally = Tally()
            func read(_ label: String, _ bytes: [UInt8]) {
                put(path, bytes)
                attempt(&tally, label, names: [path]) {
                    let f = try SafetensorsFile(path: path)
                    for name in f.entries.keys.sorted() where f.entries[name]!.dtype == "F32" { _ = try f.readAll(name) }
                }
            }
            read("original", original)
            XCTAssertEqual(tally.loaded, 1, "\(name): the valid file does not load: \(tally.problems)")
            tally = Tally()
            mutations(of: original, headerEnd: Self.headerEnd(original), framing: Self.safetensorsFraming, count: count, seed: 21, read)
            try structuredSafetensorsCases(original, count: structured, seed: 22, read)
            check(tally, "safetensors \(name)", atLeast: count + structured)
            total += tally.cases
        }
        XCTAssertGreaterThanOrEqual(total, 4600)
    }

    func testCheckpointMutationsLoadOrFailWithOneLine() throws {
        let path = dir + "/checkpoint.safetensors"
        let store = ParameterStore(config: model, towers: 0..<2)
        store.initialiseHe(seed: 9)
        for i in 0..<store.count { store.momentum[i] = Float(i % 5) * 1e-3 }
        try Checkpoint.save(store, state: TrainingState(step: 4, seed: 9, learningRate: 0.01, model: model), to: path)
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let whole = ParameterStore(config: model, towers: 0..<2), tower1 = ParameterStore(config: model, towers: 1..<2)
        var tally = Tally()
        func resume(_ label: String, _ bytes: [UInt8]) {
            put(path, bytes)
            let asResume = tally.cases % 2 == 0
            attempt(&tally, label, names: [path]) {
                // --resume (whole model, momentum) or one tower's rows of --init-from, alternately.
                if asResume {
                    if let state = try Checkpoint.load(path, into: whole, momentum: true) {
                        XCTAssertTrue(state.step >= 0 && state.model.classes >= 2 && state.model.width > 0, "\(label): \(state)")
                    }
                } else {
                    try Checkpoint.load(path, into: tower1)
                }
            }
        }
        resume("original", original)
        XCTAssertEqual(tally.loaded, 1, "the valid checkpoint does not load: \(tally.problems)")
        tally = Tally()
        let started = Date()
        mutations(of: original, headerEnd: Self.headerEnd(original), framing: Self.safetensorsFraming, count: 2000, seed: 31, resume)
        try structuredSafetensorsCases(original, count: 1000, seed: 32, resume)
        check(tally, "checkpoint", atLeast: Self.headerEnd(original) + 3000)
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "fuzzing checkpoints took too long")
    }
}
