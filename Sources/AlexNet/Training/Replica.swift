// One copy of the network as this process holds it: both towers in one thread, both towers in two threads
// (one BLAS thread each), or the towers of an external exchange (one tower a rank under MPI).
import Foundation

public enum ReplicaLayout: Sendable {
    /// Both towers, computed one after the other on this thread (BLAS may use several threads).
    case sequential
    /// Tower t on thread t, each with a single-threaded BLAS: the two-core layout.
    case threadedTowers
}

/// A result handed from a worker thread to the thread that waits for it (behind a semaphore).
final class Outcome<T>: @unchecked Sendable { var result: Result<T, Error>? = nil }

public final class Replica {
    public let config: ModelConfig
    public let models: [TwoTowerAlexNet]
    let threadExchanges: [ThreadTowerExchange]

    /// `threads`: what each model's loops may use (with threaded towers: each tower's share). `parameterMemory`
    /// (sequential only): the buffers of the parameter store, shared with other processes.
    public init(config: ModelConfig, maxBatch: Int, layout: ReplicaLayout, threads: Int = 1,
                columnBudget: Int = Convolution.defaultColumnBudget, winograd: WinogradUse = .whereItPays,
                parameterMemory: ParameterMemory? = nil) {
        self.config = config
        precondition(parameterMemory == nil || layout == .sequential, "shared parameters need one model in the process")
        switch layout {
        case .sequential:
            models = [TwoTowerAlexNet(config: config, maxBatch: maxBatch, exchange: LocalTowerExchange(threads: threads),
                                      threads: threads, columnBudget: columnBudget, winograd: winograd, parameterMemory: parameterMemory)]
            threadExchanges = []
        case .threadedTowers:
            threadExchanges = ThreadTowerExchange.pair()
            models = threadExchanges.map {
                TwoTowerAlexNet(config: config, maxBatch: maxBatch, exchange: $0, threads: threads, columnBudget: columnBudget,
                                winograd: winograd)
            }
        }
    }

    /// A replica around an exchange whose partner towers live elsewhere (another rank), or (conv-data/fc-model) both
    /// towers' convolutions with a slice of fc6–fc8 served by `fullyConnectedExchange`.
    public init(config: ModelConfig, maxBatch: Int, exchange: TowerExchange, fullyConnectedExchange: TowerExchange? = nil,
                threads: Int = 1, columnBudget: Int = Convolution.defaultColumnBudget, winograd: WinogradUse = .whereItPays) {
        self.config = config
        models = [TwoTowerAlexNet(config: config, maxBatch: maxBatch, exchange: exchange, fullyConnectedExchange: fullyConnectedExchange,
                                  threads: threads, columnBudget: columnBudget, winograd: winograd)]
        threadExchanges = []
    }

    public var stores: [ParameterStore] { models.map(\.parameters) }
    /// Timings of the first model (tower 0 when threaded).
    public var clock: PhaseClock { models[0].clock }
    public var holdsWholeModel: Bool { ParameterStore.coverWholeModel(stores) }

    /// --trace: every model's clock records into `recorder`, each on its thread's row: "tower 0" and "tower 1" when
    /// the towers are threaded, else `name` ("model", or the one tower this rank holds).
    public func attach(trace recorder: TraceRecorder, row name: String) {
        for (i, m) in models.enumerated() {
            m.clock.attach(recorder: recorder, row: recorder.row(named: models.count == 1 ? name : "tower \(i)"))
        }
    }

    /// Runs body(model) for every model, concurrently when there are two; a failure on one releases the other.
    /// Returns the models' results in order.
    func onEveryModel<T>(_ body: @escaping (TwoTowerAlexNet) throws -> T) throws -> [T] {
        if models.count == 1 { return [try body(models[0])] }
        // Tower 1 runs on a worker thread; its result is read only after the semaphore says it is written.
        let second = Outcome<T>()
        let done = DispatchSemaphore(value: 0)
        // The worker owns models[1] and its exchange end until it signals; this thread waits for that signal before
        // it touches them or reads the outcome (a fork-join pair).
        let handOff = SharedForCall((body: body, model: models[1], exchange: threadExchanges[1]))
        let worker = Thread {
            let job = handOff.value
            do { second.result = .success(try job.body(job.model)) } catch {
                job.exchange.abandon("\(error)")
                second.result = .failure(error)
            }
            done.signal()
        }
        worker.stackSize = 8 << 20
        worker.start()
        let first: Result<T, Error>
        do { first = .success(try body(models[0])) } catch {
            threadExchanges[0].abandon("\(error)")
            first = .failure(error)
        }
        done.wait()
        if case .failure = first { threadExchanges[0].resetAfterFailure() }
        if case .failure(let e) = second.result { threadExchanges[1].resetAfterFailure(); if case .success = first { throw e } }
        return [try first.get(), try second.result!.get()]
    }

    /// Forward, loss and backward of one batch; fills every model's gradients and returns the summed loss of the
    /// `batch` images. `normaliser` is the global batch; `firstSample` the first image's position in it.
    public func computeGradients(input: UnsafePointer<Float>, batch: Int, labels: [Int32], normaliser: Int,
                                 seed: UInt64, step: Int, firstSample: Int) throws -> Double {
        try onEveryModel { m in
            m.exchange.beginStep(step)
            try m.forward(input: input, batch: batch, training: true, seed: seed, step: step, firstSample: firstSample,
                          globalBatch: normaliser)
            let loss = try m.loss(labels: labels, batch: batch, normaliser: normaliser)
            try m.backward(input: input, batch: batch, training: true)
            return loss
        }[0]   // every model computes the loss of the gathered logits
    }

    /// The paper's SGD update on every parameter this replica holds. Returns the sum of the updated weights
    /// (finite exactly when every weight is: the non-finite guard).
    @discardableResult
    public func update(learningRate: Float, momentum: Float, weightDecay: Float) throws -> Double {
        try onEveryModel { m in
            m.clock.time(.update, .backward) {
                m.parameters.sgdStep(learningRate: learningRate, momentum: momentum, weightDecay: weightDecay)
            }
        }.reduce(0, +)
    }

    /// Logits (classes, N) of an evaluation pass (no dropout).
    public func evaluate(input: UnsafePointer<Float>, batch: Int) throws -> UnsafeMutablePointer<Float> {
        _ = try onEveryModel { m in try m.forward(input: input, batch: batch, training: false) }
        return models[0].imageLogits(batch: batch)
    }

    /// Every parameter (or momentum) of the whole model, layer-major in checkpoint order: the same numbers whatever
    /// the layout, so runs in different layouts can be compared. Needs a replica that holds both towers.
    public func wholeModel(momentum: Bool = false) -> [Float] {
        precondition(holdsWholeModel)
        var out: [Float] = []
        for index in stores[0].tensors.indices {
            out += ParameterStore.assemble(stores, tensor: index, momentum ? \.momentum : \.values)!
        }
        return out
    }

    public func initialise(_ scheme: Initialisation, seed: UInt64) {
        for s in stores {
            switch scheme {
            case .paper: s.initialisePaper(seed: seed)
            case .he: s.initialiseHe(seed: seed)
            }
        }
    }

    public func load(_ path: String, momentum: Bool = false) throws -> TrainingState? {
        try Checkpoint.load(path, into: stores, momentum: momentum)   // one read and checksum for every store
    }

    /// The whole model's weights, tensor by tensor in checkpoint order (towers put back together).
    public func save(_ path: String, state: TrainingState) throws {
        try Checkpoint.save(stores, state: state, to: path)
    }
}
