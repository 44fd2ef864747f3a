// Whole-model checkpoints in the layout of docs/model.md: the PyTorch tensors by name, plus
// `momentum.<name>` buffers and the training state in the safetensors metadata, whatever layout wrote them.
import Foundation

public struct TrainingState: Codable, Equatable, Sendable {
    public var step = 0
    public var seed: UInt64 = 0
    public var learningRate: Float = 0.01
    public var model = ModelConfig()
    /// The dataset's fingerprint (DatasetFingerprint) when the run was saved; nil in files from before it was kept.
    public var dataset: String? = nil
    /// What the run multiplied its mean-subtracted pixels by (1 with the paper's initialisation, 1/σ with He's), so
    /// `evaluate` feeds the network what it trained on; nil in files from before it was kept.
    public var inputScale: Float? = nil
    /// The class names of the training data (a prepared folder's classes.txt), index = label; nil when it had none.
    public var classNames: [String]? = nil
    /// The held-out evaluation due at this step (--eval-every, or the paper schedule's epoch end) was not done yet
    /// when the file was written: a resumed run does it first, so its schedule sees what an unbroken run saw.
    public var pendingEvaluation: Bool? = nil
    /// The learning-rate schedule with its state (drops, best validation error, history), so a resumed run changes the
    /// rate where an unbroken one would; nil in files from before it was kept, or from runs without one.
    public var schedule: LearningRateSchedule? = nil
    public init(step: Int = 0, seed: UInt64 = 0, learningRate: Float = 0.01, model: ModelConfig = ModelConfig()) {
        self.step = step; self.seed = seed; self.learningRate = learningRate; self.model = model
    }
}

public enum Checkpoint {
    /// Writes the whole model from stores that together hold every row (one store with both towers, one a tower, or
    /// replicated convolutions with slices of the fully connected neurons; a row held twice is taken from the first),
    /// with the momentum buffers and the training state.
    public static func save(_ stores: [ParameterStore], state: TrainingState, to path: String) throws {
        guard !stores.isEmpty, ParameterStore.coverWholeModel(stores) else {
            throw AlexNetError("\(path): cannot save: a whole-model file needs every row of every tensor, of one model (got stores of towers \(stores.map(\.towers)))")
        }
        var owned: [UnsafeMutableBufferPointer<Float>] = []
        defer { owned.forEach { $0.deallocate() } }
        var tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)] = []
        for (prefix, buffer) in [("", \ParameterStore.values), ("momentum.", \ParameterStore.momentum)] {
            for (index, t) in stores[0].tensors.enumerated() {
                if stores.count == 1 {
                    tensors.append((prefix + t.name, t.shape, UnsafeBufferPointer(start: stores[0][keyPath: buffer] + t.offset, count: t.count)))
                    continue
                }
                let whole = UnsafeMutableBufferPointer<Float>.allocate(capacity: t.shape.reduce(1, *))
                _ = whole.initialize(from: ParameterStore.assemble(stores, tensor: index, buffer)!)
                owned.append(whole)
                tensors.append((prefix + t.name, t.shape, UnsafeBufferPointer(whole)))
            }
        }
        try write(tensors, state: state, to: path)
    }

    static func write(_ tensors: [(name: String, shape: [Int], data: UnsafeBufferPointer<Float>)], state: TrainingState, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]   // the same state gives the same bytes (JSONEncoder's order varies by run)
        let json = String(decoding: try encoder.encode(state), as: UTF8.self)
        try SafetensorsFile.write(path: path, tensors: tensors, metadata: ["format": "alexnet-mpi", "state": json])
    }

    public static func save(_ store: ParameterStore, state: TrainingState, to path: String) throws {
        try save([store], state: state, to: path)
    }

    /// Reads the local towers' rows of every parameter (and the momentum if the file has it and `momentum` is set).
    /// Every tensor with a stored checksum is verified first (momentum too: a damaged file is refused whole), the training
    /// state is decoded and range-checked, and the values read must be finite. Returns the training state stored in the
    /// file, nil if it has none (e.g. PyTorch weights); a state that does not decode or is out of range throws.
    @discardableResult
    public static func load(_ path: String, into store: ParameterStore, momentum: Bool = false) throws -> TrainingState? {
        try load(path, into: [store], momentum: momentum)
    }

    /// The same for several stores (e.g. one a tower) from one opening of the file: checksums are computed once.
    @discardableResult
    public static func load(_ path: String, into stores: [ParameterStore], momentum: Bool = false) throws -> TrainingState? {
        let file = try SafetensorsFile(path: path)
        try file.verifyAll()
        let state = try storedState(file)   // before any store is touched
        for store in stores {
            for t in store.tensors {
                try file.read(t.name, shape: t.shape, rows: t.rows, into: store.values + t.offset, verifying: false)
                try requireFinite(store.values + t.offset, t, name: t.name, path: path)
            }
            if momentum {
                for t in store.tensors where file.entries["momentum." + t.name] != nil {
                    try file.read("momentum." + t.name, shape: t.shape, rows: t.rows, into: store.momentum + t.offset, verifying: false)
                    try requireFinite(store.momentum + t.offset, t, name: "momentum." + t.name, path: path)
                }
            }
        }
        return state
    }

    /// The training state stored in a checkpoint (nil for a file without one, e.g. PyTorch weights), read before any
    /// model is built: `evaluate` takes the network's shape from it.
    public static func state(of path: String) throws -> TrainingState? {
        try storedState(try SafetensorsFile(path: path))
    }

    /// The training state in the metadata: nil if absent, else decoded and validated.
    static func storedState(_ file: SafetensorsFile) throws -> TrainingState? {
        guard let json = file.metadata["state"] else { return nil }
        let state: TrainingState
        do {
            state = try JSONDecoder().decode(TrainingState.self, from: Data(json.utf8))
        } catch let error as DecodingError {
            throw AlexNetError("\(file.path): the training state in the metadata does not decode (\(SafetensorsFile.explain(error))); the file is damaged or from another version")
        } catch {
            throw AlexNetError("\(file.path): the training state in the metadata does not decode; the file is damaged or from another version")
        }
        try state.validate(file: file.path)
        return state
    }

    /// Throws naming the tensor and the first index (within the whole tensor) of a NaN or ±inf among t's local rows.
    static func requireFinite(_ p: UnsafeMutablePointer<Float>, _ t: ParameterStore.Tensor, name: String, path: String) throws {
        let n = t.count
        let bad = UnsafeRawPointer(p).withMemoryRebound(to: UInt32.self, capacity: n) { bits -> Int? in
            var i = 0
            while i < n {
                let hi = min(n, i + 4096)
                var any: UInt32 = 0   // exponent all ones: inf or NaN; branch-free over a block, so it vectorises
                for j in i..<hi { any |= (bits[j] & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0 }
                if any != 0 { return (i..<hi).first { (bits[$0] & 0x7F80_0000) == 0x7F80_0000 } }
                i = hi
            }
            return nil
        }
        if let j = bad {
            throw AlexNetError("\(path): tensor '\(name)' holds \(p[j]) at index \(t.rows.lowerBound * t.rowSize + j); weights must be finite (the run that saved them diverged? use an earlier checkpoint)")
        }
    }
}

extension TrainingState {
    /// Throws unless every field is in the range a run can have; `file` names the source in the message.
    /// (Whether `step` is below --steps is the trainer's to check.)
    public func validate(file: String) throws {
        func bad(_ what: String) -> AlexNetError {
            AlexNetError("\(file): the stored training state has \(what); the file is damaged or not written by alexnet-mpi --save")
        }
        guard step >= 0 else { throw bad("step \(step), which is negative") }
        guard learningRate.isFinite, learningRate >= 0 else { throw bad("learning rate \(learningRate)") }
        guard model.width.isFinite, model.width > 0, model.width <= 64 else { throw bad("width \(model.width) (expected 0 < width ≤ 64)") }
        guard model.classes >= 2, model.classes <= 1 << 24 else { throw bad("\(model.classes) classes (expected 2 to 2^24)") }
        if let scale = inputScale, !(scale.isFinite && scale > 0) { throw bad("input scale \(scale) (expected a positive number)") }
        guard model.dropout >= 0, model.dropout < 1 else { throw bad("dropout \(model.dropout) (expected 0 ≤ dropout < 1)") }
        if let problem = schedule?.storedProblem { throw bad(problem) }
        guard model.lrnSize >= 1, model.lrnSize <= 1024, model.lrnAlpha.isFinite, model.lrnBeta.isFinite, model.lrnK.isFinite else {
            throw bad("local response normalisation size \(model.lrnSize), alpha \(model.lrnAlpha), beta \(model.lrnBeta), k \(model.lrnK)")
        }
    }
}
