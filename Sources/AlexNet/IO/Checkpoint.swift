// Whole-model checkpoints in the layout of shared/design/model.md: the PyTorch tensors by name, plus
// `momentum.<name>` buffers and the training state in the safetensors metadata, whatever layout wrote them.
import Foundation

public struct TrainingState: Codable, Equatable, Sendable {
    public var step = 0
    public var seed: UInt64 = 0
    public var learningRate: Float = 0.01
    public var model = ModelConfig()
    /// The dataset's fingerprint (DatasetFingerprint) when the run was saved; nil in files from before it was kept.
    public var dataset: String? = nil
    public init(step: Int = 0, seed: UInt64 = 0, learningRate: Float = 0.01, model: ModelConfig = ModelConfig()) {
        self.step = step; self.seed = seed; self.learningRate = learningRate; self.model = model
    }
}

public enum Checkpoint {
    /// Writes the whole model from stores that together hold both towers (one store with both, or one a tower),
    /// with the momentum buffers and the training state.
    public static func save(_ stores: [ParameterStore], state: TrainingState, to path: String) throws {
        let sorted = stores.sorted { $0.towers.lowerBound < $1.towers.lowerBound }
        precondition(sorted.map(\.towers).reduce(into: [Int]()) { $0 += Array($1) } == Array(0..<ModelConfig.towers),
                     "a whole-model file needs every tower exactly once")
        var owned: [UnsafeMutablePointer<Float>] = []
        defer { owned.forEach { $0.deallocate() } }
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        for (prefix, buffer) in [("", \ParameterStore.values), ("momentum.", \ParameterStore.momentum)] {
            for (index, t) in sorted[0].tensors.enumerated() {
                let count = t.shape.reduce(1, *)
                if sorted.count == 1 {
                    tensors.append((prefix + t.name, t.shape, UnsafeBufferPointer(start: sorted[0][keyPath: buffer] + t.offset, count: count)))
                    continue
                }
                let whole = UnsafeMutablePointer<Float>.allocate(capacity: count)
                owned.append(whole)
                for s in sorted {
                    let part = s.tensors[index]
                    (whole + part.rows.lowerBound * part.rowSize).update(from: s[keyPath: buffer] + part.offset, count: part.count)
                }
                tensors.append((prefix + t.name, t.shape, UnsafeBufferPointer(start: whole, count: count)))
            }
        }
        let json = String(data: try JSONEncoder().encode(state), encoding: .utf8)!
        try SafetensorsFile.write(path: path, tensors: tensors, metadata: ["format": "alexnet-mpi", "state": json])
    }

    public static func save(_ store: ParameterStore, state: TrainingState, to path: String) throws {
        try save([store], state: state, to: path)
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
