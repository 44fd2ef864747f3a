// All parameters a process holds in one contiguous buffer with named views (llm.c style), gradients and momentum alike,
// so that an allreduce is one call and the SGD update one loop.
//
// Layer-major: for each tensor of ModelConfig.tensors, the rows (output channels / neurons) this process holds, in
// PyTorch layout: those of its towers, or for fc6–fc8 under the conv-data/fc-model layout one slice of the neurons.
// A process holding both towers therefore holds exactly the PyTorch tensors back to back.

/// Slice `index` of `count` contiguous slices of every fully connected layer's neurons (conv-data/fc-model layout).
public struct NeuronSlice: Sendable, Equatable, CustomStringConvertible {
    public let index: Int
    public let count: Int
    public init(index: Int, count: Int) {
        precondition(count >= 1 && index >= 0 && index < count)
        self.index = index; self.count = count
    }
    /// The rows of a layer of `rows` neurons this slice holds.
    public func rows(of rows: Int) -> Range<Int> {
        ModelConfig.sliceStart(index, of: rows, slices: count)..<ModelConfig.sliceStart(index + 1, of: rows, slices: count)
    }
    public var description: String { "slice \(index + 1) of \(count)" }
}

/// Buffers of `ParameterStore.floats` floats each that a store uses instead of allocating its own, zeroed by their
/// owner, who also frees them: data parallelism's shared-memory window (one copy of the weights and momentum for every
/// rank of a node, each rank's gradients beside them).
public struct ParameterMemory: @unchecked Sendable {
    public let values: UnsafeMutablePointer<Float>      // (count), shared by the node's ranks
    public let gradients: UnsafeMutablePointer<Float>   // (count), this rank's
    public let momentum: UnsafeMutablePointer<Float>    // (count), shared by the node's ranks
    public init(values: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, momentum: UnsafeMutablePointer<Float>) {
        self.values = values; self.gradients = gradients; self.momentum = momentum
    }
}

public final class ParameterStore: @unchecked Sendable {
    public struct Tensor: Sendable {
        public let name: String
        public let shape: [Int]            // whole-model PyTorch shape
        public let rows: Range<Int>        // rows of shape[0] held here
        public let offset: Int             // in the buffer
        public var rowSize: Int { shape.dropFirst().reduce(1, *) }
        public var count: Int { rows.count * rowSize }
    }

    public let config: ModelConfig
    public let towers: Range<Int>
    /// The neurons of fc6–fc8 held here when they are split apart from the towers (nil: the towers' rows).
    public let fullyConnectedSlice: NeuronSlice?
    public let tensors: [Tensor]
    public let count: Int
    public let values: UnsafeMutablePointer<Float>      // (count)
    public let gradients: UnsafeMutablePointer<Float>   // (count)
    public let momentum: UnsafeMutablePointer<Float>    // (count)
    public let threads: Int                             // threads the update and initialisation loops may use
    let ownsBuffers: Bool                               // false: they are a ParameterMemory's

    /// `memory`: buffers to use (their owner zeroed them and frees them); nil: allocated here, zeroed.
    public init(config: ModelConfig, towers: Range<Int>, fullyConnectedSlice: NeuronSlice? = nil, threads: Int = 1,
                memory: ParameterMemory? = nil) {
        self.config = config
        self.towers = towers
        self.fullyConnectedSlice = fullyConnectedSlice
        self.threads = threads
        tensors = Self.tensors(config: config, towers: towers, fullyConnectedSlice: fullyConnectedSlice)
        let offset = tensors.last.map { $0.offset + $0.count } ?? 0
        count = offset
        if let memory {
            (values, gradients, momentum, ownsBuffers) = (memory.values, memory.gradients, memory.momentum, false)
        } else {
            values = .allocate(capacity: offset); values.initialize(repeating: 0, count: offset)
            gradients = .allocate(capacity: offset); gradients.initialize(repeating: 0, count: offset)
            momentum = .allocate(capacity: offset); momentum.initialize(repeating: 0, count: offset)
            ownsBuffers = true
        }
    }

    deinit { if ownsBuffers { values.deallocate(); gradients.deallocate(); momentum.deallocate() } }

    /// The tensors a store for these towers and slice holds, back to back in the buffer.
    static func tensors(config: ModelConfig, towers: Range<Int>, fullyConnectedSlice: NeuronSlice?) -> [Tensor] {
        var list: [Tensor] = [], offset = 0
        for (name, shape) in config.tensors {
            let t = Tensor(name: name, shape: shape, rows: rows(of: name, shape: shape, towers: towers, fullyConnectedSlice: fullyConnectedSlice),
                           offset: offset)
            list.append(t)
            offset += t.count
        }
        return list
    }

    /// Floats a store for these towers and slice holds (its `count`), before one is made.
    public static func floats(config: ModelConfig, towers: Range<Int>, fullyConnectedSlice: NeuronSlice? = nil) -> Int {
        tensors(config: config, towers: towers, fullyConnectedSlice: fullyConnectedSlice).last.map { $0.offset + $0.count } ?? 0
    }

    /// The rows of tensor `name` (shape[0] rows in all) that a store for these towers and slice holds.
    public static func rows(of name: String, shape: [Int], towers: Range<Int>, fullyConnectedSlice: NeuronSlice?) -> Range<Int> {
        if let slice = fullyConnectedSlice, ModelConfig.isFullyConnected(name) { return slice.rows(of: shape[0]) }
        return ModelConfig.towerStart(towers.lowerBound, of: shape[0])..<ModelConfig.towerStart(towers.upperBound, of: shape[0])
    }

    /// Floats of the convolution stack's tensors, which come first in the buffer (conv1 … conv5, weights and biases).
    public var convolutionCount: Int { tensor("fc6.weight").offset }

    /// Whole tensor `index` (of ModelConfig.tensors) of `buffer` (values or momentum) put together from `stores`,
    /// each row from the first store that holds it; nil if some row is held by none.
    public static func assemble(_ stores: [ParameterStore], tensor index: Int,
                                _ buffer: KeyPath<ParameterStore, UnsafeMutablePointer<Float>>) -> [Float]? {
        let shape = stores[0].tensors[index].shape
        let rowSize = shape.dropFirst().reduce(1, *)
        var whole = [Float](repeating: 0, count: shape.reduce(1, *))
        var covered = [Bool](repeating: false, count: shape[0])
        whole.withUnsafeMutableBufferPointer { out in
            for s in stores {
                let part = s.tensors[index]
                for row in part.rows where !covered[row] {
                    covered[row] = true
                    (out.baseAddress! + row * rowSize).update(from: s[keyPath: buffer] + part.offset + (row - part.rows.lowerBound) * rowSize,
                                                             count: rowSize)
                }
            }
        }
        return covered.allSatisfy { $0 } ? whole : nil
    }

    /// Whether `stores` together hold every row of every tensor.
    public static func coverWholeModel(_ stores: [ParameterStore]) -> Bool {
        guard let first = stores.first, stores.allSatisfy({ $0.config == first.config }) else { return false }
        return first.tensors.indices.allSatisfy { index in
            var covered = [Bool](repeating: false, count: first.tensors[index].shape[0])
            for s in stores { for row in s.tensors[index].rows { covered[row] = true } }
            return covered.allSatisfy { $0 }
        }
    }

    public func tensor(_ name: String) -> Tensor {
        guard let t = tensors.first(where: { $0.name == name }) else { preconditionFailure("no parameter \(name)") }
        return t
    }
    public func value(_ name: String) -> UnsafeMutablePointer<Float> { values + tensor(name).offset }
    public func gradient(_ name: String) -> UnsafeMutablePointer<Float> { gradients + tensor(name).offset }

    /// The paper's initialisation: weights N(0, 0.01²), biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.
    /// Each element is drawn from (seed, tensor, global element index), so every layout starts from the same model.
    public func initialisePaper(seed: UInt64, weightStd: Float = 0.01) {
        for (index, t) in tensors.enumerated() {
            let p = values + t.offset
            if t.shape.count == 1 {
                let b: Float = ModelConfig.biasesSetToOne.contains(t.name) ? 1 : 0
                p.update(repeating: b, count: t.count)
            } else {
                let first = t.rows.lowerBound * t.rowSize
                Parallel.forEachChunk(t.count, minimumPerThread: 1 << 14, threads: threads) { r in
                    for i in r {
                        p[i] = weightStd * CounterRandom.normal(seed: seed, .initialisation, UInt64(index), UInt64(first + i))
                    }
                }
            }
        }
        momentum.update(repeating: 0, count: count)
    }

    /// He initialisation (weights N(0, 2/fan-in)), with the paper's biases scaled to 0.1: the scheme of the PyTorch
    /// fixture. It keeps every layer's signal alive at small widths, where the paper's fixed 0.01 starves the top layers.
    /// The classifier (fc8) keeps the paper's N(0, 0.01²): its logits start small, every class near even odds. With He
    /// there too, the first step's loss was 4.3 instead of ln(classes), and the default job sat at chance for 100–150
    /// of its then 400 steps: seeds 2–4 reached 73–88% held-out top-1; with this, seeds 1–5 reached 94.6–99.6%.
    public static let classifierStd: Float = 0.01
    public func initialiseHe(seed: UInt64) {
        for (index, t) in tensors.enumerated() {
            let p = values + t.offset
            if t.shape.count == 1 {
                p.update(repeating: ModelConfig.biasesSetToOne.contains(t.name) ? 0.1 : 0, count: t.count)
            } else {
                let first = t.rows.lowerBound * t.rowSize
                let std = t.name == ModelConfig.classifierWeight ? Self.classifierStd : Float((2.0 / Double(t.rowSize)).squareRoot())
                Parallel.forEachChunk(t.count, minimumPerThread: 1 << 14, threads: threads) { r in
                    for i in r { p[i] = std * CounterRandom.normal(seed: seed, .initialisation, UInt64(index), UInt64(first + i)) }
                }
            }
        }
        momentum.update(repeating: 0, count: count)
    }

    /// The paper's update, one loop over every parameter: v ← μ·v − λ·ε·w − ε·g;  w ← w + v. Returns the sum of the
    /// new weights, taken in the same pass: finite exactly when every weight is (the non-finite guard's check).
    @discardableResult
    public func sgdStep(learningRate lr: Float, momentum mu: Float, weightDecay decay: Float) -> Double {
        SGD.step(values: values, gradients: gradients, momentum: momentum, count: count,
                 learningRate: lr, momentum: mu, weightDecay: decay, threads: threads)
    }

    /// The first tensor holding a NaN or an infinity (in the weights, or the momentum), for error messages.
    public func firstNonFiniteTensor() -> String? {
        for t in tensors {
            for (label, buffer) in [("", values), ("momentum of ", momentum)] {
                let p = buffer + t.offset
                for i in 0..<t.count where !p[i].isFinite { return label + t.name }
            }
        }
        return nil
    }
}
