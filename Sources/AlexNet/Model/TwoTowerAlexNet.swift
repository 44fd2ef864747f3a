// The paper's network as two towers with explicit exchange points; this process computes `exchange.localTowers`.
//
// Activations are channel-major so that a tower's half of any layer is one contiguous slice:
// conv maps (C, N, H, W), fc activations (features, N). The exchanges before conv3, fc6, fc7, fc8 and of the
// logits (forward), and of the input gradients of fc8, fc7, fc6 and conv3 (backward) are calls to `exchange`.
//
// Under the conv-data/fc-model layout (Krizhevsky 2014, "one weird trick") a second exchange serves fc6–fc8: the
// model holds both towers' convolutions for its N images, and one slice of every fc layer's neurons for the images
// of all R ranks (B = R·N columns, rank k's at [k·N, (k+1)·N)); pool5's features are gathered block-major
// (R, features, N), the slices' outputs all-gathered, and fc6's input gradient reduce-scattered back by image block.

// The planes (H·W) of the layer table's stages, from ModelConfig: conv1 55², pool1 and conv2 27², pool2 and
// conv3–conv5 13², pool5 6².
private let conv1Plane = ModelConfig.conv1Plane, conv2Plane = ModelConfig.conv2Plane
private let conv3Plane = ModelConfig.conv3Plane, pool5Plane = ModelConfig.pool5Plane

public final class TwoTowerAlexNet {
    public let config: ModelConfig
    public let parameters: ParameterStore
    public let exchange: TowerExchange
    /// fc6–fc8's exchange: `exchange` itself (fc rows split by tower), or the conv-data/fc-model slice exchange.
    public let fullyConnectedExchange: TowerExchange
    /// Whether fc6–fc8 are split by neuron slice over ranks that each bring their own images (conv-data/fc-model).
    public let slicesFullyConnected: Bool
    let fcSlices: Int            // parts fc6–fc8's neurons are cut into: 2 towers, or one slice a rank
    let fcLocal: Range<Int>      // the parts this model computes
    /// Image blocks the fc stack computes: 1, or (conv-data/fc-model) every rank's images.
    public let imageBlocks: Int
    /// The fc stack's columns of each image block and their end, [0, N] alone or [0, n₀, n₀ + n₁, …, B]: block k is
    /// rank k's images, ⌊k·B/R⌋ … of the global batch (uneven when R does not divide B). Set by each forward pass.
    public private(set) var blockStarts: [Int] = [0, 0]
    public let clock = PhaseClock()
    public let maxBatch: Int
    /// Called during backward as soon as a layer's weight and bias gradients are final, with their range in
    /// `parameters.gradients` (last layers first): data parallelism starts their allreduce there.
    public var gradientsReady: ((Range<Int>) -> Void)? = nil
    /// Called between the im2col chunks of the conv layers' backward: lets communication in flight progress.
    public var progress: (() -> Void)? = nil
    public let towers: Range<Int>
    /// Threads this model's loops may use (its share of the process's cores; BLAS threads are set apart).
    public let threads: Int

    // Layers. Every conv/fc layer has one part per local tower.
    public let conv1, conv2, conv3, conv4, conv5: Convolution
    let pool1: MaxPool, pool2: MaxPool, pool5: MaxPool
    let fc6, fc7, fc8: FullyConnected
    let lrn: LocalResponseNorm

    // Channels / neurons per tower, and local counts.
    let c1, c2, c3, c4, c5: Int     // per tower
    var parts: Int { towers.count }

    // Activations (local towers unless marked "all towers").
    private var arena: [UnsafeMutableRawPointer] = []
    /// Floats (and Int32 pooling indices) this model allocated, parameter buffers included: what `floatsNeeded` predicts.
    public private(set) var allocatedFloats = 0
    let a1, p1: UnsafeMutablePointer<Float>                  // (c1·parts, N, 55, 55), (…, 27, 27)
    let a2: UnsafeMutablePointer<Float>                      // (c2·parts, N, 27, 27)
    /// One buffer a level for what is alive at different times: forward, the LRN output that the pool reads; backward,
    /// the pool's input gradient, which LRN backward overwrites in place with its own (the conv's output gradient).
    /// LRN backward recomputes its normaliser and output from a, so nothing of forward's needs keeping here.
    let l1: UnsafeMutablePointer<Float>                      // (c1·parts, N, 55, 55)
    let l2: UnsafeMutablePointer<Float>                      // (c2·parts, N, 27, 27)
    let x3: UnsafeMutablePointer<Float>                      // (2·c2, N, 13, 13) all towers: conv3 input
    let a3, a4, a5: UnsafeMutablePointer<Float>              // (c3·parts | c4·parts | c5·parts, N, 13, 13)
    let p5: UnsafeMutablePointer<Float>                      // (c5·parts, N, 6, 6)
    // B = imageBlocks·N: the columns of the fc stack.
    let x6: UnsafeMutablePointer<Float>                      // (2·c5·36, N) all towers: fc6 input; sliced: (R, 2·c5·36, N)
    let h6, h7: UnsafeMutablePointer<Float>                  // (fc6, B), (fc7, B) all parts
    public let logits: UnsafeMutablePointer<Float>           // (classes, B) all parts
    let m6, m7: UnsafeMutablePointer<Float>                  // dropout masks (local rows, B)
    let labelsGathered: UnsafeMutablePointer<Float>          // (B) every block's labels (sliced fc stack)
    let ownLogits: UnsafeMutablePointer<Float>               // (classes, N) this model's images' logits (sliced fc stack)
    let idx1, idx2, idx5: UnsafeMutablePointer<Int32>        // pooling winners
    // Gradients.
    let dlogits: UnsafeMutablePointer<Float>                 // (classes, B)
    let partials8, partials7, partials6: [UnsafeMutablePointer<Float>]   // (fc7, B), (fc6, B), like x6: one a local fc part
    let partials3: [UnsafeMutablePointer<Float>]             // (2·c2, N, 13, 13), one a local tower
    let dh7, dh6: UnsafeMutablePointer<Float>                // (local rows, B)
    let dx6: UnsafeMutablePointer<Float>                     // (c5·parts·36, N)
    let dp5: UnsafeMutablePointer<Float>                     // (c5·parts, N, 6, 6)
    let da5, da4, da3: UnsafeMutablePointer<Float>           // (…·parts, N, 13, 13)
    let dp2: UnsafeMutablePointer<Float>                     // (c2·parts, N, 13, 13)
    let dp1: UnsafeMutablePointer<Float>                     // (c1·parts, N, 27, 27)
    // The gradients at conv1's and conv2's outputs (through pool and LRN) are in l1 and l2, above.
    let col, colGradient: UnsafeMutablePointer<Float>        // im2col scratch
    let kept: [UnsafeMutablePointer<Float>?]                 // conv1–conv5: transformed inputs kept for the backward, or nil

    /// Bytes a local tower may spend keeping Winograd layers' transformed inputs V from forward to backward (the
    /// backward then skips its input transform). Writing V out and reading it back costs memory traffic that the
    /// transform it saves does not: `bench`, interleaved on the Emerald Rapids VM, gave about 1.5–2.5% of the step at
    /// W = 1/4, batch 64 (all four layers kept: 54 MB a tower with conv2 as F(2 × 2, 5 × 5), 47 MB as F(4 × 4, 5 × 5)),
    /// but 0.6% at W = 1, batch 128 for 160 MB a tower (conv4 and conv5; all four take over 300 MB a tower). So small
    /// widths keep them and the paper's width does not.
    public static let keptInputBytesPerTower = 64_000_000

    /// Floats kept for conv1–conv5 (0: none): from conv5 back to conv2, each layer whose transformed input still fits.
    static func keptInputSizes(_ convs: [Convolution], batch: Int, towers: Int) -> [Int] {
        var left = keptInputBytesPerTower / MemoryLayout<Float>.size * towers
        return convs.reversed().map { c -> Int in
            let n = c.keptInputSize(batch: batch)
            guard n > 0 && n <= left else { return 0 }
            left -= n
            return n
        }.reversed()
    }

    /// Allocates a model for batches of up to `maxBatch` images, for the towers `exchange.localTowers`.
    /// `threads`: what this model's loops may use; `columnBudget`: floats an im2col chunk may hold; `winograd`: where
    /// the stride-1 convolutions run as Winograd.
    /// `fullyConnectedExchange`: the conv-data/fc-model layout's slice exchange (this model then holds both towers
    /// and slice `localTowers` of its `partCount` slices of fc6–fc8); nil: fc6–fc8 split by tower like the rest.
    /// `parameterMemory`: buffers for the parameter store (data parallelism's shared window); nil: its own.
    public init(config: ModelConfig, maxBatch: Int, exchange: TowerExchange, fullyConnectedExchange: TowerExchange? = nil,
                threads: Int = 1, columnBudget: Int = Convolution.defaultColumnBudget, winograd: WinogradUse = .whereItPays,
                parameterMemory: ParameterMemory? = nil) {
        self.config = config
        self.exchange = exchange
        self.maxBatch = maxBatch
        self.towers = exchange.localTowers
        self.threads = threads
        let fcExchange = fullyConnectedExchange ?? exchange
        self.fullyConnectedExchange = fcExchange
        slicesFullyConnected = fullyConnectedExchange != nil
        fcSlices = fcExchange.partCount
        fcLocal = fcExchange.localTowers
        imageBlocks = slicesFullyConnected ? fcExchange.partCount : 1
        precondition(!slicesFullyConnected || (exchange.localTowers == 0..<ModelConfig.towers && fcLocal.count == 1),
                     "a sliced fc stack needs both towers' convolutions and one slice")
        let slice = slicesFullyConnected ? NeuronSlice(index: fcLocal.lowerBound, count: fcSlices) : nil
        parameters = ParameterStore(config: config, towers: exchange.localTowers, fullyConnectedSlice: slice, threads: threads,
                                    memory: parameterMemory)
        var lrn = config.lrn
        lrn.threads = threads
        self.lrn = lrn
        let T = ModelConfig.towers
        c1 = config.conv1 / T; c2 = config.conv2 / T; c3 = config.conv3 / T; c4 = config.conv4 / T; c5 = config.conv5 / T
        let P = exchange.localTowers.count
        let convs = Self.convolutions(config: config, parts: P, threads: threads, columnBudget: columnBudget, winograd: winograd)
        conv1 = convs[0]; conv2 = convs[1]; conv3 = convs[2]; conv4 = convs[3]; conv5 = convs[4]
        pool1 = MaxPool(inputHeight: ModelConfig.conv1Side, inputWidth: ModelConfig.conv1Side, threads: threads)
        pool2 = MaxPool(inputHeight: ModelConfig.conv2Side, inputWidth: ModelConfig.conv2Side, threads: threads)
        pool5 = MaxPool(inputHeight: ModelConfig.conv3Side, inputWidth: ModelConfig.conv3Side, threads: threads)
        let (slices, local) = (fcSlices, fcLocal)
        func partRows(_ rows: Int) -> [Int] {
            local.map { ModelConfig.sliceStart($0 + 1, of: rows, slices: slices) - ModelConfig.sliceStart($0, of: rows, slices: slices) }
        }
        fc6 = FullyConnected(inputs: config.fc6Inputs, partRows: partRows(config.fc6), threads: threads)
        fc7 = FullyConnected(inputs: config.fc6, partRows: partRows(config.fc7), threads: threads)
        fc8 = FullyConnected(inputs: config.fc7, partRows: partRows(config.classes), threads: threads)

        var arena: [UnsafeMutableRawPointer] = []
        var allocated = 3 * parameters.count
        func floats(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n))
            p.initialize(repeating: 0, count: max(1, n))
            arena.append(UnsafeMutableRawPointer(p))
            allocated += max(1, n)
            return p
        }
        func indices(_ n: Int) -> UnsafeMutablePointer<Int32> {
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            arena.append(UnsafeMutableRawPointer(p))
            allocated += n
            return p
        }
        let N = maxBatch, B = imageBlocks * maxBatch, PF = fcLocal.count
        a1 = floats(c1 * P * N * conv1Plane); l1 = floats(c1 * P * N * conv1Plane)
        p1 = floats(c1 * P * N * conv2Plane); idx1 = indices(c1 * P * N * conv2Plane)
        a2 = floats(c2 * P * N * conv2Plane); l2 = floats(c2 * P * N * conv2Plane)
        x3 = floats(2 * c2 * N * conv3Plane); idx2 = indices(c2 * P * N * conv3Plane)
        a3 = floats(c3 * P * N * conv3Plane); a4 = floats(c4 * P * N * conv3Plane); a5 = floats(c5 * P * N * conv3Plane)
        p5 = floats(c5 * P * N * pool5Plane); idx5 = indices(c5 * P * N * pool5Plane)
        let rows6 = fc6.outputs, rows7 = fc7.outputs
        x6 = floats(config.fc6Inputs * B); h6 = floats(config.fc6 * B); h7 = floats(config.fc7 * B)
        logits = floats(config.classes * B)
        m6 = floats(rows6 * B); m7 = floats(rows7 * B)
        labelsGathered = floats(B); ownLogits = floats(config.classes * N)
        dlogits = floats(config.classes * B)
        let (c2, fc6Inputs, fc6Rows, fc7Rows) = (c2, config.fc6Inputs, config.fc6, config.fc7)
        var p8: [UnsafeMutablePointer<Float>] = [], p7: [UnsafeMutablePointer<Float>] = []
        var p6: [UnsafeMutablePointer<Float>] = [], p3: [UnsafeMutablePointer<Float>] = []
        for _ in 0..<PF { p8.append(floats(fc7Rows * B)); p7.append(floats(fc6Rows * B)); p6.append(floats(fc6Inputs * B)) }
        for _ in 0..<P { p3.append(floats(2 * c2 * N * conv3Plane)) }
        partials8 = p8; partials7 = p7; partials6 = p6; partials3 = p3
        dh7 = floats(rows7 * B); dh6 = floats(rows6 * B); dx6 = floats(c5 * P * pool5Plane * N)
        dp5 = floats(c5 * P * N * pool5Plane)
        da5 = floats(c5 * P * N * conv3Plane); da4 = floats(c4 * P * N * conv3Plane); da3 = floats(c3 * P * N * conv3Plane)
        dp2 = floats(c2 * P * N * conv3Plane); dp1 = floats(c1 * P * N * conv2Plane)
        let colSize = [conv1, conv2, conv3, conv4, conv5].map { $0.columnBufferSize(batch: N) }.max()!
        col = floats(colSize); colGradient = floats(colSize)
        kept = Self.keptInputSizes(convs, batch: N, towers: P).map { $0 > 0 ? floats($0) : nil }
        self.arena = arena
        self.allocatedFloats = allocated
    }

    /// conv1–conv5 for `parts` local towers, their shapes from the layer table: the model's layers, its memory
    /// estimate and `bench-convolutions` all build them here.
    public static func convolutions(config: ModelConfig, parts: Int, threads: Int = 1,
                                    columnBudget: Int = Convolution.defaultColumnBudget,
                                    winograd: WinogradUse = .whereItPays) -> [Convolution] {
        let T = ModelConfig.towers, side = ModelConfig.inputSize
        let c1 = config.conv1 / T, c2 = config.conv2 / T, c3 = config.conv3 / T, c4 = config.conv4 / T, c5 = config.conv5 / T
        func conv(_ inputSide: Int, _ w: ModelConfig.Window, _ cin: Int, _ cout: Int, shared: Bool) -> Convolution {
            Convolution(geometry: .init(inputHeight: inputSide, inputWidth: inputSide, kernel: w.size, stride: w.stride, pad: w.pad),
                        inputChannelsPerPart: cin, outputChannelsPerPart: cout, parts: parts, sharedInput: shared,
                        threads: threads, columnBudget: columnBudget, winograd: winograd)
        }
        typealias M = ModelConfig
        return [conv(side, M.conv1Window, 3, c1, shared: true),                      // 227 → 55
                conv(M.conv2Side, M.conv2Window, c1, c2, shared: false),             // after pool1
                conv(M.conv3Side, M.conv3To5Window, 2 * c2, c3, shared: true),      // after pool2 and the exchange
                conv(M.conv3Side, M.conv3To5Window, c3, c4, shared: false),
                conv(M.conv3Side, M.conv3To5Window, c4, c5, shared: false)]
    }

    /// Floats a model for `towers` and batches of `maxBatch` will allocate (activations, gradients, scratch and its
    /// parameter, gradient and momentum buffers), computed before allocating anything; nil if it does not fit in an Int.
    /// The same sums as `init` (a test holds them equal).
    public static func floatsNeeded(config: ModelConfig, maxBatch N: Int, towers: Range<Int>, fullyConnectedSlice: NeuronSlice? = nil,
                                    columnBudget: Int = Convolution.defaultColumnBudget, winograd: WinogradUse = .whereItPays) -> Int? {
        let T = Double(ModelConfig.towers), P = Double(towers.count), n = Double(N)
        let B = n * Double(fullyConnectedSlice?.count ?? 1), PF = fullyConnectedSlice == nil ? P : 1
        func localRows(_ rows: Int) -> Double {
            Double(ParameterStore.rows(of: "fc", shape: [rows], towers: towers, fullyConnectedSlice: fullyConnectedSlice).count)
        }
        let fc6 = Double(config.fc6), fc7 = Double(config.fc7), fcIn = Double(config.fc6Inputs), classes = Double(config.classes)
        let c1 = Double(config.conv1) / T, c2 = Double(config.conv2) / T, c3 = Double(config.conv3) / T
        let c4 = Double(config.conv4) / T, c5 = Double(config.conv5) / T
        let plane1 = Double(conv1Plane), plane2 = Double(conv2Plane), plane3 = Double(conv3Plane), plane5 = Double(pool5Plane)
        var total = 0.0
        total += 2 * c1 * P * n * plane1 + 2 * c1 * P * n * plane2                      // a1 l1, p1 idx1
        total += 2 * c2 * P * n * plane2 + 2 * c2 * n * plane3 + c2 * P * n * plane3     // a2 l2, x3, idx2
        total += (c3 + c4 + c5) * P * n * plane3 + 2 * c5 * P * n * plane5                // a3 a4 a5, p5 idx5
        total += fcIn * B + fc6 * B + fc7 * B                                            // x6 h6 h7
        total += 2 * classes * B + (localRows(config.fc6) + localRows(config.fc7)) * B   // logits dlogits, m6 m7
        total += B + classes * n                                                         // gathered labels, own logits
        total += PF * (fc7 * B + fc6 * B + fcIn * B) + P * 2 * c2 * n * plane3            // partials
        total += (localRows(config.fc7) + localRows(config.fc6)) * B + c5 * P * plane5 * n + c5 * P * n * plane5   // dh7 dh6, dx6, dp5
        total += (c5 + c4 + c3) * P * n * plane3 + c2 * P * n * plane3                  // da5 da4 da3, dp2
        total += c1 * P * n * plane2                                                    // dp1
        // The convolution scratch (col and colGradient: im2col chunks, or Winograd's transformed chunks), as
        // Convolution sizes it (for absurd widths, where its Int arithmetic could overflow: more than memory holds).
        // The kept transformed inputs likewise (none counted where the scratch is already beyond counting).
        let countable = [c1 * 3, c2 * c1, c3 * 2 * c2, c4 * c3, c5 * c4].max()! * P * n < 0x1p40
        let convs = countable ? convolutions(config: config, parts: towers.count, columnBudget: columnBudget, winograd: winograd) : []
        total += 2 * (countable ? Double(convs.map { $0.columnBufferSize(batch: N) }.max()!) : .infinity)
        total += Double(keptInputSizes(convs, batch: N, towers: towers.count).reduce(0, +))
        // Parameters, gradients and momentum of the local towers.
        let params = config.tensors.reduce(0.0) { sum, t in
            let rows = Double(ParameterStore.rows(of: t.name, shape: t.shape, towers: towers, fullyConnectedSlice: fullyConnectedSlice).count)
            return sum + rows * Double(t.shape.dropFirst().reduce(1, *))
        }
        total += 3 * params
        return total < 0x1p62 ? Int(total) : nil
    }

    deinit { for p in arena { p.deallocate() } }

    // MARK: Slices of the all-tower buffers, in floats.

    /// Offsets of each tower's slice in a buffer of `perTower` floats a tower.
    func evenOffsets(_ perTower: Int) -> [Int] { (0...ModelConfig.towers).map { $0 * perTower } }
    var firstTower: Int { towers.lowerBound }

    private func w(_ name: String) -> UnsafeMutablePointer<Float> { parameters.value(name) }
    private func g(_ name: String) -> UnsafeMutablePointer<Float> { parameters.gradient(name) }

    // MARK: Forward

    /// Runs the network on input (3, N, 227, 227) and returns the logits (classes, N), gathered from both towers.
    /// In training, dropout masks come from (seed, step, global sample firstSample + n).
    /// `globalBatch`: with a sliced fc stack, the images of all ranks (default: N on every rank).
    @discardableResult
    public func forward(input x: UnsafePointer<Float>, batch N: Int, training: Bool,
                        seed: UInt64 = 0, step: Int = 0, firstSample: Int = 0, globalBatch: Int? = nil) throws -> UnsafeMutablePointer<Float> {
        precondition(N <= maxBatch && N > 0)
        if slicesFullyConnected {
            let R = imageBlocks, B = globalBatch ?? R * N
            blockStarts = (0...R).map { ModelConfig.sliceStart($0, of: B, slices: R) }
            precondition(blockStarts[fcLocal.lowerBound + 1] - blockStarts[fcLocal.lowerBound] == N, "this rank's block holds its N images")
        } else {
            blockStarts = [0, N]
        }
        let P = parts
        clock.time(.conv1, .forward) {
            conv1.forward(input: x, batch: N, weight: w("conv1.weight"), bias: w("conv1.bias"), output: a1, col: col, relu: true)
            lrn.forward(input: a1, channels: c1 * P, groupChannels: c1, pixels: N * conv1Plane, output: l1)
            pool1.forward(input: l1, planes: c1 * P * N, output: p1, argmax: idx1)
        }
        clock.time(.conv2, .forward) {
            conv2.forward(input: p1, batch: N, weight: w("conv2.weight"), bias: w("conv2.bias"), output: a2, col: col, relu: true, keptInput: kept[1])
            lrn.forward(input: a2, channels: c2 * P, groupChannels: c2, pixels: N * conv2Plane, output: l2)
            pool2.forward(input: l2, planes: c2 * P * N, output: x3 + firstTower * c2 * N * conv3Plane, argmax: idx2)
        }
        try clock.time(.conv3, .exchange) { try exchange.allGather(x3, offsets: evenOffsets(c2 * N * conv3Plane), at: .conv3Input) }
        clock.time(.conv3, .forward) {
            conv3.forward(input: x3, batch: N, weight: w("conv3.weight"), bias: w("conv3.bias"), output: a3, col: col, relu: true, keptInput: kept[2])
        }
        clock.time(.conv4, .forward) {
            conv4.forward(input: a3, batch: N, weight: w("conv4.weight"), bias: w("conv4.bias"), output: a4, col: col, relu: true, keptInput: kept[3])
        }
        clock.time(.conv5, .forward) {
            conv5.forward(input: a4, batch: N, weight: w("conv5.weight"), bias: w("conv5.bias"), output: a5, col: col, relu: true, keptInput: kept[4])
            pool5.forward(input: a5, planes: c5 * P * N, output: p5, argmax: idx5)
            // Flatten in PyTorch's order: fc6 input row = channel·36 + h·6 + w, column = image. A sliced fc stack
            // takes block r of (R, features, N) for its own images; else the local towers' rows of (features, N).
            Self.flatten(p5, channels: c5 * P, batch: N,
                         into: x6 + (slicesFullyConnected ? blockStarts[fcLocal.lowerBound] * config.fc6Inputs : firstTower * c5 * pool5Plane * N))
        }
        let B = blockStarts.last!
        if slicesFullyConnected {
            try clock.time(.fc6, .exchange) {
                try fullyConnectedExchange.allGather(x6, offsets: blockOffsets(config.fc6Inputs), at: .fc6Input)
            }
        } else {
            try clock.time(.fc6, .exchange) { try exchange.allGather(x6, offsets: evenOffsets(c5 * pool5Plane * N), at: .fc6Input) }
        }
        // Dropout masks follow (seed, step, layer, neuron, image of the global batch): the fc columns start at image 0
        // of the global batch when they hold every rank's images.
        let fcFirstSample = slicesFullyConnected ? 0 : firstSample
        try fullyConnectedForward(.fc6, layer: fc6, input: x6, inputBatch: N, blocks: slicesFullyConnected ? blockStarts : nil, output: h6, mask: m6,
                                  training: training, seed: seed, step: step, firstSample: fcFirstSample)
        try clock.time(.fc7, .exchange) {
            try fullyConnectedExchange.allGather(h6, offsets: sliceOffsets(config.fc6, columns: B), at: .fc7Input)
        }
        try fullyConnectedForward(.fc7, layer: fc7, input: h6, inputBatch: B, blocks: nil, output: h7, mask: m7,
                                  training: training, seed: seed, step: step, firstSample: fcFirstSample)
        try clock.time(.fc8, .exchange) {
            try fullyConnectedExchange.allGather(h7, offsets: sliceOffsets(config.fc7, columns: B), at: .fc8Input)
        }
        clock.time(.fc8, .forward) {
            let first = fcFirstRow(config.classes)
            fc8.forward(input: h7, batch: B, weight: w("fc8.weight"), bias: w("fc8.bias"), output: logits + first * B)
        }
        try clock.time(.loss, .exchange) {
            try fullyConnectedExchange.allGather(logits, offsets: sliceOffsets(config.classes, columns: B), at: .logits)
        }
        return logits
    }

    /// The logits (classes, N) of this model's own N images from the last forward pass.
    public func imageLogits(batch N: Int) -> UnsafeMutablePointer<Float> {
        guard slicesFullyConnected else { return logits }
        let B = blockStarts.last!, first = blockStarts[fcLocal.lowerBound]
        for c in 0..<config.classes { (ownLogits + c * N).update(from: logits + c * B + first, count: N) }
        return ownLogits
    }

    /// First row of the local fc parts among `rows`, and the offsets of every part's rows × `columns`.
    func fcFirstRow(_ rows: Int) -> Int { ModelConfig.sliceStart(fcLocal.lowerBound, of: rows, slices: fcSlices) }
    func sliceOffsets(_ rows: Int, columns: Int) -> [Int] {
        (0...fcSlices).map { ModelConfig.sliceStart($0, of: rows, slices: fcSlices) * columns }
    }
    /// Offsets of the image blocks of a block-major buffer of `perImage` floats an image.
    func blockOffsets(_ perImage: Int) -> [Int] { blockStarts.map { $0 * perImage } }

    /// `input` is (features, inputBatch) without `blocks`, else block-major by `blocks` (image block starts); the
    /// output's local rows are (rows, columns): inputBatch, or blocks.last.
    private func fullyConnectedForward(_ stage: Stage, layer: FullyConnected, input: UnsafePointer<Float>, inputBatch: Int,
                                       blocks: [Int]?, output: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>,
                                       training: Bool, seed: UInt64, step: Int, firstSample: Int) throws {
        clock.time(stage, .forward) {
            let name = stage.name, columns = blocks?.last ?? inputBatch
            let first = fcFirstRow(stage == .fc6 ? config.fc6 : config.fc7)
            let out = output + first * columns, count = layer.outputs * columns
            layer.forward(input: input, batch: inputBatch, blocks: blocks, weight: w(name + ".weight"), bias: w(name + ".bias"),
                          output: out, relu: true)
            if training && config.dropout > 0 {
                Dropout(probability: config.dropout).makeMask(rows: layer.outputs, batch: columns, firstUnit: first,
                                                              firstSample: firstSample, seed: seed, step: step,
                                                              layer: stage.rawValue, mask: mask, threads: threads)
                Dropout.apply(mask: mask, to: out, count: count, threads: threads)
            }
        }
    }

    /// p5 (C, N, 36) → rows c·36 + q, columns n of a (C·36, N) block.
    static func flatten(_ p: UnsafePointer<Float>, channels: Int, batch N: Int, into x: UnsafeMutablePointer<Float>) {
        let plane = pool5Plane
        for c in 0..<channels {
            for n in 0..<N {
                let src = p + (c * N + n) * plane
                for q in 0..<plane { x[(c * plane + q) * N + n] = src[q] }
            }
        }
    }
    static func unflatten(_ x: UnsafePointer<Float>, channels: Int, batch N: Int, into p: UnsafeMutablePointer<Float>) {
        let plane = pool5Plane
        for c in 0..<channels {
            for n in 0..<N {
                let dst = p + (c * N + n) * plane
                for q in 0..<plane { dst[q] = x[(c * plane + q) * N + n] }
            }
        }
    }

    // MARK: Loss and backward

    /// Softmax cross-entropy of the gathered logits; returns the summed loss of these N images and fills dlogits,
    /// scaled by 1/normaliser (the global batch).
    /// A sliced fc stack gathers every rank's labels, computes the gradient of the whole batch's logits, and returns
    /// the loss of its own images (the ranks' sum is the batch's).
    public func loss(labels: [Int32], batch N: Int, normaliser: Int) throws -> Double {
        guard slicesFullyConnected else {
            return clock.time(.loss, .forward) {
                SoftmaxCrossEntropy.forwardBackward(logits: logits, classes: config.classes, batch: N, labels: labels,
                                                    normaliser: normaliser, logitsGradient: dlogits)
            }
        }
        let first = blockStarts[fcLocal.lowerBound], B = blockStarts.last!
        for i in 0..<N { labelsGathered[first + i] = Float(labels[i]) }   // exact: classes ≤ 2^24
        try clock.time(.loss, .exchange) {
            try fullyConnectedExchange.allGather(labelsGathered, offsets: blockOffsets(1), at: .imageLabels)
        }
        let all = (0..<B).map { Int32(labelsGathered[$0]) }
        return clock.time(.loss, .forward) {
            SoftmaxCrossEntropy.forwardBackward(logits: logits, classes: config.classes, batch: B, labels: all,
                                                normaliser: normaliser, logitsGradient: dlogits, lossOf: first..<(first + N))
        }
    }

    /// Fills parameters.gradients from dlogits (set by `loss`) for the input of the last forward pass.
    public func backward(input x: UnsafePointer<Float>, batch N: Int, training: Bool) throws {
        let P = parts
        // fc8: own classes' rows of dlogits.
        let B = blockStarts.last!
        clock.time(.fc8, .backward) {
            let first = fcFirstRow(config.classes)
            fc8.backward(input: h7, batch: B, weight: w("fc8.weight"), outputGradient: dlogits + first * B,
                         weightGradient: g("fc8.weight"), biasGradient: g("fc8.bias"), inputGradients: partials8)
        }
        announce("fc8")
        try clock.time(.fc8, .exchange) {
            try fullyConnectedExchange.reduceScatter(partials: partials8, offsets: sliceOffsets(config.fc7, columns: B), into: dh7,
                                                     at: .fc8InputGradient)
        }
        try fullyConnectedBackward(.fc7, layer: fc7, input: h6, inputBatch: B, blocks: nil, output: h7, outputGradient: dh7,
                                   mask: m7, training: training, inputGradients: partials7)
        announce("fc7")
        try clock.time(.fc7, .exchange) {
            try fullyConnectedExchange.reduceScatter(partials: partials7, offsets: sliceOffsets(config.fc6, columns: B), into: dh6,
                                                     at: .fc7InputGradient)
        }
        try fullyConnectedBackward(.fc6, layer: fc6, input: x6, inputBatch: N, blocks: slicesFullyConnected ? blockStarts : nil, output: h6, outputGradient: dh6,
                                   mask: m6, training: training, inputGradients: partials6)
        announce("fc6")
        try clock.time(.fc6, .exchange) {
            if slicesFullyConnected {   // every rank's image block back to it, summed over the slices
                try fullyConnectedExchange.reduceScatter(partials: partials6, offsets: blockOffsets(config.fc6Inputs), into: dx6,
                                                         at: .fc6InputGradient)
            } else {
                try exchange.reduceScatter(partials: partials6, offsets: evenOffsets(c5 * pool5Plane * N), into: dx6, at: .fc6InputGradient)
            }
        }
        clock.time(.conv5, .backward) {
            Self.unflatten(dx6, channels: c5 * P, batch: N, into: dp5)
            pool5.backward(outputGradient: dp5, argmax: idx5, planes: c5 * P * N, inputGradient: da5, reluInput: a5)
            conv5.backward(input: a4, batch: N, weight: w("conv5.weight"), outputGradient: da5,
                           weightGradient: g("conv5.weight"), biasGradient: g("conv5.bias"),
                           inputGradients: (0..<P).map { da4 + $0 * c4 * N * conv3Plane }, col: col, colGradient: colGradient,
                           keptInput: kept[4], afterChunk: progress)
        }
        announce("conv5")
        clock.time(.conv4, .backward) {
            ReLU.backward(output: a4, gradient: da4, count: c4 * P * N * conv3Plane, threads: threads)
            conv4.backward(input: a3, batch: N, weight: w("conv4.weight"), outputGradient: da4,
                           weightGradient: g("conv4.weight"), biasGradient: g("conv4.bias"),
                           inputGradients: (0..<P).map { da3 + $0 * c3 * N * conv3Plane }, col: col, colGradient: colGradient,
                           keptInput: kept[3], afterChunk: progress)
        }
        announce("conv4")
        clock.time(.conv3, .backward) {
            ReLU.backward(output: a3, gradient: da3, count: c3 * P * N * conv3Plane, threads: threads)
            conv3.backward(input: x3, batch: N, weight: w("conv3.weight"), outputGradient: da3,
                           weightGradient: g("conv3.weight"), biasGradient: g("conv3.bias"),
                           inputGradients: partials3, col: col, colGradient: colGradient,
                           keptInput: kept[2], afterChunk: progress)
        }
        announce("conv3")
        try clock.time(.conv3, .exchange) {
            try exchange.reduceScatter(partials: partials3, offsets: evenOffsets(c2 * N * conv3Plane), into: dp2, at: .conv3InputGradient)
        }
        clock.time(.conv2, .backward) {
            pool2.backward(outputGradient: dp2, argmax: idx2, planes: c2 * P * N, inputGradient: l2)
            lrn.backward(input: a2, outputGradient: l2, channels: c2 * P, groupChannels: c2,
                         pixels: N * conv2Plane, inputGradient: l2, throughReLU: true)
            conv2.backward(input: p1, batch: N, weight: w("conv2.weight"), outputGradient: l2,
                           weightGradient: g("conv2.weight"), biasGradient: g("conv2.bias"),
                           inputGradients: (0..<P).map { dp1 + $0 * c1 * N * conv2Plane }, col: col, colGradient: colGradient,
                           keptInput: kept[1], afterChunk: progress)
        }
        announce("conv2")
        clock.time(.conv1, .backward) {
            pool1.backward(outputGradient: dp1, argmax: idx1, planes: c1 * P * N, inputGradient: l1)
            lrn.backward(input: a1, outputGradient: l1, channels: c1 * P, groupChannels: c1,
                         pixels: N * conv1Plane, inputGradient: l1, throughReLU: true)
            conv1.backward(input: x, batch: N, weight: w("conv1.weight"), outputGradient: l1,
                           weightGradient: g("conv1.weight"), biasGradient: g("conv1.bias"),
                           inputGradients: nil, col: col, colGradient: colGradient, afterChunk: progress)
        }
        announce("conv1")
    }

    /// Tells `gradientsReady` that layer `name`'s weight and bias gradients are final.
    private func announce(_ name: String) {
        guard let ready = gradientsReady else { return }
        let w = parameters.tensor(name + ".weight"), b = parameters.tensor(name + ".bias")
        ready(w.offset..<(b.offset + b.count))
    }

    private func fullyConnectedBackward(_ stage: Stage, layer: FullyConnected, input: UnsafePointer<Float>, inputBatch: Int,
                                        blocks: [Int]?, output: UnsafeMutablePointer<Float>, outputGradient dY: UnsafeMutablePointer<Float>,
                                        mask: UnsafePointer<Float>, training: Bool, inputGradients: [UnsafeMutablePointer<Float>]) throws {
        clock.time(stage, .backward) {
            let name = stage.name, columns = blocks?.last ?? inputBatch, count = layer.outputs * columns
            let first = fcFirstRow(stage == .fc6 ? config.fc6 : config.fc7)
            if training && config.dropout > 0 { Dropout.apply(mask: mask, to: dY, count: count, threads: threads) }
            // After dropout the stored output is positive exactly where ReLU passed and the unit was kept.
            ReLU.backward(output: output + first * columns, gradient: dY, count: count, threads: threads)
            layer.backward(input: input, batch: inputBatch, blocks: blocks, weight: w(name + ".weight"), outputGradient: dY,
                           weightGradient: g(name + ".weight"), biasGradient: g(name + ".bias"), inputGradients: inputGradients)
        }
    }
}
