// Whole-model checkpoints in the layout of shared/design/model.md: the PyTorch tensors by name, plus
// `momentum.<name>` buffers and the training state in the safetensors metadata, whatever layout wrote them.
import Foundation

public struct TrainingState: Codable, Equatable, Sendable {
    public var step = 0
    public var seed: UInt64 = 0
    public var learningRate: Float = 0.01
    public var model = ModelConfig()
}

public enum Checkpoint {
    /// Writes the parameters (and momentum) of a store that holds both towers.
    public static func save(_ store: ParameterStore, state: TrainingState, to path: String) throws {
        precondition(store.towers == 0..<ModelConfig.towers, "a whole-model file needs both towers")
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        for t in store.tensors {
            tensors.append((t.name, t.shape, UnsafeBufferPointer(start: store.values + t.offset, count: t.count)))
        }
        for t in store.tensors {
            tensors.append(("momentum." + t.name, t.shape, UnsafeBufferPointer(start: store.momentum + t.offset, count: t.count)))
        }
        let json = String(data: try JSONEncoder().encode(state), encoding: .utf8)!
        try SafetensorsFile.write(path: path, tensors: tensors, metadata: ["format": "alexnet-mpi", "state": json])
    }

    /// Reads the local towers' rows of every parameter (and the momentum if the file has it and `momentum` is set).
    /// Returns the training state stored in the file, if any.
    @discardableResult
    public static func load(_ path: String, into store: ParameterStore, momentum: Bool = false) throws -> TrainingState? {
        let file = try SafetensorsFile(path: path)
        for t in store.tensors {
            try file.read(t.name, shape: t.shape, rows: t.rows, into: store.values + t.offset)
        }
        if momentum {
            for t in store.tensors where file.entries["momentum." + t.name] != nil {
                try file.read("momentum." + t.name, shape: t.shape, rows: t.rows, into: store.momentum + t.offset)
            }
        }
        guard let json = file.metadata["state"], let data = json.data(using: .utf8) else { return nil }
        return try? JSONDecoder().decode(TrainingState.self, from: data)
    }
}
