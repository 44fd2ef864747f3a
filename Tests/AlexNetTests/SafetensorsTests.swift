// safetensors: round trip, and errors that name the file and the tensor for missing tensors, wrong shapes or dtypes,
// and truncated bodies.
import AlexNet
import Foundation
import XCTest

final class SafetensorsTests: XCTestCase {
    let dir = Paths.temporaryDirectory("safetensors")

    func write(_ path: String, _ tensors: [(String, [Int], [Float])], metadata: [String: String] = [:]) throws {
        var list: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        var storage: [UnsafeMutablePointer<Float>] = []
        for t in tensors {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: t.2.count)
            p.initialize(from: t.2, count: t.2.count)
            storage.append(p)
            list.append((t.0, t.1, UnsafeBufferPointer(start: p, count: t.2.count)))
        }
        defer { storage.forEach { $0.deallocate() } }
        try SafetensorsFile.write(path: path, tensors: list, metadata: metadata)
    }

    func testRoundTripAndMetadata() throws {
        let path = dir + "/a.safetensors"
        try write(path, [("x", [2, 3], [1, 2, 3, 4, 5, 6]), ("y", [1], [7])], metadata: ["k": "v"])
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(try f.readAll("x").values, [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try f.readAll("x").shape, [2, 3])
        XCTAssertEqual(try f.readAll("y").values, [7])
        XCTAssertEqual(f.metadata["k"], "v")
        var rows = [Float](repeating: 0, count: 3)
        try f.read("x", shape: [2, 3], rows: 1..<2, into: &rows)
        XCTAssertEqual(rows, [4, 5, 6])
    }

    func assertError(_ body: () throws -> Void, mentions words: [String], file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("no error", file: file, line: line)
        } catch {
            let text = "\(error)"
            for w in words { XCTAssertTrue(text.contains(w), "'\(text)' does not mention '\(w)'", file: file, line: line) }
        }
    }

    func testMissingTensorWrongShapeAndTruncation() throws {
        let model = ModelConfig(width: 0.125, classes: 10, dropout: 0)
        let store = ParameterStore(config: model, towers: 0..<2)
        store.initialisePaper(seed: 1)
        let good = dir + "/good.safetensors"
        try Checkpoint.save(store, state: TrainingState(), to: good)
        XCTAssertNoThrow(try Checkpoint.load(good, into: ParameterStore(config: model, towers: 0..<2)))

        // Missing tensor: a file without fc7.bias.
        let partial = dir + "/missing.safetensors"
        let f = try SafetensorsFile(path: good)
        let kept = try store.tensors.filter { $0.name != "fc7.bias" }.map { ($0.name, $0.shape, try f.readAll($0.name).values) }
        try write(partial, kept)
        assertError({ try Checkpoint.load(partial, into: store) }, mentions: ["fc7.bias", "missing", partial])

        // Wrong shape: another class count.
        assertError({ try Checkpoint.load(good, into: ParameterStore(config: ModelConfig(width: 0.125, classes: 11), towers: 0..<2)) },
                    mentions: ["fc8.weight", "shape", good])

        // Truncated body.
        let data = try Data(contentsOf: URL(fileURLWithPath: good))
        let truncated = dir + "/truncated.safetensors"
        try data.prefix(data.count - 1000).write(to: URL(fileURLWithPath: truncated))
        assertError({ try Checkpoint.load(truncated, into: store) }, mentions: [truncated, "truncated"])

        // Not a file at all.
        assertError({ try Checkpoint.load(dir + "/nope.safetensors", into: store) }, mentions: ["nope.safetensors", "no such file"])
        let garbage = dir + "/garbage.safetensors"
        try Data("hello".utf8).write(to: URL(fileURLWithPath: garbage))
        assertError({ try Checkpoint.load(garbage, into: store) }, mentions: [garbage])
    }

    func testWrongDtypeIsNamed() throws {
        let path = dir + "/dtype.safetensors"
        // Hand-made file: one I32 tensor called conv1.bias.
        let header = "{\"conv1.bias\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
        var d = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { d.append(contentsOf: $0) }
        d.append(header.data(using: .utf8)!)
        d.append(Data(count: 8))
        try d.write(to: URL(fileURLWithPath: path))
        let f = try SafetensorsFile(path: path)
        var out = [Float](repeating: 0, count: 2)
        assertError({ try f.read("conv1.bias", shape: [2], into: &out) }, mentions: ["conv1.bias", "I32", "F32", path])
    }
}
