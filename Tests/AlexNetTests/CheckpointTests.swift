// Checkpoints and input files that must be refused with one line naming the file: out-of-range training state,
// overflowing .npy shapes, NaN weights and images, zeroed or damaged files (checksums); and durable saving.
import AlexNet
import Foundation
import XCTest

final class CheckpointTests: XCTestCase {
    let dir = Paths.temporaryDirectory("checkpoint-tests")
    let model = ModelConfig(width: 0.01, classes: 10, dropout: 0.5)

    /// A small store with non-zero weights and momentum.
    func store(towers: Range<Int> = 0..<2) -> ParameterStore {
        let s = ParameterStore(config: model, towers: towers)
        s.initialiseHe(seed: 3)
        for i in 0..<s.count { s.momentum[i] = Float(i % 7) * 1e-3 - 2e-3 }
        return s
    }

    /// The error `body` throws, checked to be one AlexNetError line that names `path`.
    func refusal(_ path: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) -> String {
        do {
            try body()
            XCTFail("\(path) was accepted", file: file, line: line)
            return ""
        } catch let error as AlexNetError {
            let text = error.description
            XCTAssertFalse(text.contains("\n"), "more than one line: \(text)", file: file, line: line)
            XCTAssertTrue(text.contains(path), "'\(text)' does not name \(path)", file: file, line: line)
            return text
        } catch {
            XCTFail("not an AlexNetError: \(error)", file: file, line: line)
            return ""
        }
    }

    func testNegativeStepIsRefused() throws {
        let path = dir + "/negative.safetensors"
        try Checkpoint.save(store(), state: TrainingState(step: -3, seed: 1, model: model), to: path)
        let text = refusal(path) { try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2), momentum: true) }
        XCTAssertTrue(text.contains("step -3"), text)
        // In range, the same file loads and gives the state back.
        try Checkpoint.save(store(), state: TrainingState(step: 3, seed: 1, model: model), to: path)
        XCTAssertEqual(try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2))?.step, 3)
    }

    func testOutOfRangeOrUndecodableStateIsRefused() throws {
        let path = dir + "/state.safetensors"
        var bad: [(TrainingState, String)] = []
        bad.append((TrainingState(step: 1, model: ModelConfig(width: 0.01, classes: 1)), "1 classes"))
        bad.append((TrainingState(step: 1, model: ModelConfig(width: 0.01, classes: 10, dropout: 1)), "dropout 1"))
        bad.append((TrainingState(step: 1, model: ModelConfig(width: 0, classes: 10)), "width 0"))
        bad.append((TrainingState(step: 1, model: ModelConfig(width: -2, classes: 10)), "width -2"))
        for (state, words) in bad {
            try Checkpoint.save(store(), state: state, to: path)
            let text = refusal(path) { try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2)) }
            XCTAssertTrue(text.contains(words), text)
        }
        // A state that does not decode is an error, not a silent nil (which would restart a --resume at step 0).
        let values = store()
        let tensors = values.tensors.map { t in (name: t.name, shape: t.shape, data: UnsafeBufferPointer(start: values.values + t.offset, count: t.count)) }
        for state in ["{\"step\": \"seven\"}", "not json", "{\"step\": 1, \"seed\": -1, \"learningRate\": 0.01, \"model\": {}}"] {
            try SafetensorsFile.write(path: path, tensors: tensors, metadata: ["state": state])
            let text = refusal(path) { try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2)) }
            XCTAssertTrue(text.contains("training state"), text)
        }
        // No state at all (weights from elsewhere) is not an error: nil.
        try SafetensorsFile.write(path: path, tensors: tensors)
        XCTAssertNil(try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2)))
    }

    func testOverflowingNpyShapeIsRefused() throws {
        // (1, 2³², 2³², 3) has 2⁶⁴·3 elements: the product wraps to 0 in 64 bits, and the file has no data at all.
        let data = dir + "/overflow"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let images = data + "/images.npy"
        try NpyArray.write(path: images, descr: "|u1", shape: [1, 1 << 32, 1 << 32, 3], bytes: UnsafeRawBufferPointer(start: nil, count: 0))
        try [Int64(0)].withUnsafeBytes { try NpyArray.write(path: data + "/labels.npy", dtype: .int64, shape: [1], bytes: $0) }
        let text = refusal(images) { _ = try NpyArray(path: images, allowed: [.uint8, .float32]) }
        XCTAssertTrue(text.contains("(1, 4294967296, 4294967296, 3)") && text.contains("too large"), text)
        _ = refusal(images) { _ = try NumpyDataset(directory: data) }
        // Zero images beside huge dimensions: no bytes, but the dimensions still have to fit.
        try NpyArray.write(path: images, descr: "|u1", shape: [0, 1 << 62, 1 << 62, 3], bytes: UnsafeRawBufferPointer(start: nil, count: 0))
        _ = refusal(images) { _ = try NpyArray(path: images, allowed: [.uint8, .float32]) }
        // float32 doubles the wrap: 2⁶² elements × 4 bytes.
        try NpyArray.write(path: images, descr: "<f4", shape: [1 << 31, 1 << 31], bytes: UnsafeRawBufferPointer(start: nil, count: 0))
        _ = refusal(images) { _ = try NpyArray(path: images, allowed: [.uint8, .float32]) }
    }

    func testNaNInInitFromWeightsIsRefusedNamingTheTensor() throws {
        let path = dir + "/nan.safetensors"
        let s = store()
        let fc6 = s.tensor("fc6.weight")
        let index = (fc6.shape[0] - 1) * fc6.rowSize + 5   // a row of tower 1
        s.values[fc6.offset + index] = .nan
        try Checkpoint.save(s, state: TrainingState(step: 1, model: model), to: path)
        var text = refusal(path) { try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2)) }
        XCTAssertTrue(text.contains("'fc6.weight'") && text.contains("nan") && text.contains("index \(index)"), text)
        // The index is the whole tensor's, also when one tower's store reads its rows.
        text = refusal(path) { try Checkpoint.load(path, into: ParameterStore(config: model, towers: 1..<2)) }
        XCTAssertTrue(text.contains("'fc6.weight'") && text.contains("index \(index)"), text)
        // Tower 0's rows are finite: it loads.
        XCTAssertNoThrow(try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<1)))

        // Infinite momentum, read by --resume.
        s.values[fc6.offset + index] = 0.5
        let conv2 = s.tensor("conv2.bias")
        s.momentum[conv2.offset + 1] = -.infinity
        try Checkpoint.save(s, state: TrainingState(step: 1, model: model), to: path)
        XCTAssertNoThrow(try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2)))   // weights only
        text = refusal(path) { try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2), momentum: true) }
        XCTAssertTrue(text.contains("'momentum.conv2.bias'") && text.contains("-inf"), text)
    }

    func testNaNInFloatImagesIsRefused() throws {
        let data = dir + "/nan-images"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let plane = 227 * 227
        var pixels = [Float](repeating: 0.25, count: 2 * 3 * plane)
        try [Int64(0), 1].withUnsafeBytes { try NpyArray.write(path: data + "/labels.npy", dtype: .int64, shape: [2], bytes: $0) }
        let images = data + "/images.npy"
        func write() throws {
            try pixels.withUnsafeBytes { try NpyArray.write(path: images, dtype: .float32, shape: [2, 3, 227, 227], bytes: $0) }
        }
        try write()
        XCTAssertEqual(try NumpyDataset(directory: data).count, 2)
        let index = 3 * plane + 2 * plane + 5 * 227 + 7   // image 1, channel 2, row 5, column 7
        pixels[index] = .nan
        pixels[index + 10] = .infinity
        try write()
        let text = refusal(images) { _ = try NumpyDataset(directory: data) }
        XCTAssertTrue(text.contains("index \(index)") && text.contains("image 1, channel 2, row 5, column 7") && text.contains("nan"), text)
        pixels[index] = 0
        try write()
        XCTAssertTrue(refusal(images) { _ = try NumpyDataset.splits(directory: data, classes: 2) }.contains("index \(index + 10)"))
    }

    func testZeroFilledCheckpointIsRefused() throws {
        let path = dir + "/zero.safetensors"
        try Checkpoint.save(store(), state: TrainingState(step: 1, model: model), to: path)
        let size = try Data(contentsOf: URL(fileURLWithPath: path)).count
        try Data(count: size).write(to: URL(fileURLWithPath: path))
        let text = refusal(path) { try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2)) }
        XCTAssertTrue(text.contains("zero-filled"), text)
    }

    func testZeroedDataIsRefusedByChecksum() throws {
        let path = dir + "/zeroed-data.safetensors"
        try Checkpoint.save(store(), state: TrainingState(step: 1, model: model), to: path)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerEnd = 8 + Int(bytes.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        bytes.replaceSubrange(headerEnd..<bytes.count, with: Data(count: bytes.count - headerEnd))
        try bytes.write(to: URL(fileURLWithPath: path))
        // Zeros are finite numbers of the right shape: only the checksum can tell.
        let text = refusal(path) { try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2)) }
        XCTAssertTrue(text.contains("damaged: checksum mismatch") && text.contains("tensor '"), text)
        // Any reader of the whole model sees it too.
        XCTAssertTrue(refusal(path) { _ = try SafetensorsFile(path: path).readAll("conv1.weight") }.contains("'conv1.weight'"))

        // One flipped bit in the momentum of the last tensor, which --init-from does not read, is still found.
        try Checkpoint.save(store(), state: TrainingState(step: 1, model: model), to: path)
        bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let file = try SafetensorsFile(path: path)
        let momentum = try XCTUnwrap(file.entries["momentum.fc8.bias"])
        bytes[headerEnd + momentum.range.lowerBound] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: path))
        XCTAssertTrue(refusal(path) { try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2)) }
            .contains("'momentum.fc8.bias'"))
    }

    func testChecksumsAreZlibCRC32AndFilesWithoutThemStillLoad() throws {
        XCTAssertEqual(Array("123456789".utf8).withUnsafeBytes { CRC32.checksum($0) }, 0xCBF4_3926)
        let path = dir + "/crc.safetensors"
        let s = store()
        try Checkpoint.save(s, state: TrainingState(step: 1, model: model), to: path)
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(Set(file.checksums.keys), Set(file.entries.keys))
        // The same store and state give the same bytes (the state's JSON keys are sorted).
        try Checkpoint.save(s, state: TrainingState(step: 1, model: model), to: dir + "/crc-again.safetensors")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), try Data(contentsOf: URL(fileURLWithPath: dir + "/crc-again.safetensors")))
        let conv1 = s.tensor("conv1.weight")
        let expected = UnsafeRawBufferPointer(UnsafeBufferPointer(start: s.values + conv1.offset, count: conv1.count))
        XCTAssertEqual(file.checksums["conv1.weight"], CRC32.checksum(expected))

        // A file as PyTorch's safetensors writes it: no metadata, so no checksums and no state.
        var header = "{", offset = 0, body = Data()
        for t in s.tensors {
            let bytes = t.count * 4
            header += "\"\(t.name)\":{\"dtype\":\"F32\",\"shape\":\(t.shape),\"data_offsets\":[\(offset),\(offset + bytes)]},"
            body.append(Data(buffer: UnsafeBufferPointer(start: s.values + t.offset, count: t.count)))
            offset += bytes
        }
        header.removeLast()
        header += "}"
        var out = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(Data(header.utf8))
        out.append(body)
        let plain = dir + "/plain.safetensors"
        try out.write(to: URL(fileURLWithPath: plain))
        let loaded = ParameterStore(config: model, towers: 0..<2)
        XCTAssertNil(try Checkpoint.load(plain, into: loaded))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: loaded.values, count: loaded.count)),
                       Array(UnsafeBufferPointer(start: s.values, count: s.count)))
        // Both towers' stores from one opening of the checksummed file hold the whole model between them.
        let towers = [ParameterStore(config: model, towers: 0..<1), ParameterStore(config: model, towers: 1..<2)]
        XCTAssertEqual(try Checkpoint.load(path, into: towers, momentum: true)?.step, 1)
        for t in s.tensors {
            let parts = towers.map { p in Array(UnsafeBufferPointer(start: p.momentum + p.tensor(t.name).offset, count: p.tensor(t.name).count)) }
            XCTAssertEqual(parts[0] + parts[1], Array(UnsafeBufferPointer(start: s.momentum + t.offset, count: t.count)), t.name)
        }
    }

    func testStaleTemporaryFilesAreRemovedAtTheNextSave() throws {
        let folder = dir + "/stale"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // A pid that no longer runs: a child that has exited.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        let dead = child.processIdentifier
        let stale = [".c.safetensors.partial-\(dead)", ".c.safetensors.partial-\(dead)-1f2e3d"]
        // Not stale: another target's, and one of a running process (pid 1) that may be writing right now.
        let kept = [".other.safetensors.partial-\(dead)-1f2e3d", ".c.safetensors.partial-1-abc", "c.safetensors.partial-\(dead)"]
        for name in stale + kept { try Data([1, 2, 3]).write(to: URL(fileURLWithPath: folder + "/" + name)) }
        try Checkpoint.save(store(), state: TrainingState(step: 1, model: model), to: folder + "/c.safetensors")
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: folder))
        XCTAssertEqual(names, Set(kept + ["c.safetensors"]))
        XCTAssertNoThrow(try Checkpoint.load(folder + "/c.safetensors", into: ParameterStore(config: model, towers: 0..<2)))
        // Saving again over the file leaves no temporary file of its own.
        try Checkpoint.save(store(), state: TrainingState(step: 2, model: model), to: folder + "/c.safetensors")
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: folder)), Set(kept + ["c.safetensors"]))
        XCTAssertEqual(try Checkpoint.load(folder + "/c.safetensors", into: ParameterStore(config: model, towers: 0..<2))?.step, 2)
    }

    func testSaveIntoAMissingFolderFailsWithOneLine() throws {
        let path = dir + "/no/such/folder/c.safetensors"
        let text = refusal(path) { try Checkpoint.save(store(), state: TrainingState(step: 1, model: model), to: path) }
        XCTAssertTrue(text.contains("No such file or directory") && text.contains("folder exists"), text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/no"))
    }
}
