// The network of docs/model.md as numbers: channel counts under the width multiplier, the layer table,
// and how the two towers split every layer.

public struct ModelConfig: Sendable, Equatable, Codable {
    public var width: Double = 1
    public var classes: Int = 1000
    public var dropout: Float = 0.5
    public var lrnSize = 5
    public var lrnAlpha: Float = 1e-4
    public var lrnBeta: Float = 0.75
    public var lrnK: Float = 2

    public static let towers = 2
    public static let inputSize = 227

    /// A square window: convolution kernel or max-pool (docs/model.md's layer table).
    public struct Window: Sendable {
        public let size, stride, pad: Int
        public var area: Int { size * size }
        public func outputSide(_ inputSide: Int) -> Int { (inputSide + 2 * pad - size) / stride + 1 }
        public var label: String { "\(size)/\(stride)/\(pad)" }
    }
    // The layer table's windows, the same at every width, and the spatial sides they give from the 227 input, each
    // from the one before.
    public static let conv1Window = Window(size: 11, stride: 4, pad: 0)
    public static let conv2Window = Window(size: 5, stride: 1, pad: 2)
    public static let conv3To5Window = Window(size: 3, stride: 1, pad: 1)
    public static let poolWindow = Window(size: 3, stride: 2, pad: 0)     // every max-pool: overlapping
    public static let conv1Side = conv1Window.outputSide(inputSize)       // 55
    public static let conv2Side = poolWindow.outputSide(conv1Side)        // 27: pool1's output, conv2's input and output
    public static let conv3Side = poolWindow.outputSide(conv2Side)        // 13: pool2's output, conv3–conv5's planes
    public static let pool5Side = poolWindow.outputSide(conv3Side)        // 6
    public static let conv1Plane = conv1Side * conv1Side, conv2Plane = conv2Side * conv2Side
    public static let conv3Plane = conv3Side * conv3Side, pool5Plane = pool5Side * pool5Side

    public init(width: Double = 1, classes: Int = 1000, dropout: Float = 0.5) {
        self.width = width; self.classes = classes; self.dropout = dropout
    }

    /// C(W) = 2·round(C·W/2), at least 2 (ties to even, as Python's round in the reference generator).
    public func scaled(_ paperChannels: Int) -> Int {
        max(2, Int((Double(paperChannels) * width / 2).rounded(.toNearestOrEven)) * 2)
    }
    public var conv1: Int { scaled(96) }
    public var conv2: Int { scaled(256) }
    public var conv3: Int { scaled(384) }
    public var conv4: Int { scaled(384) }
    public var conv5: Int { scaled(256) }
    public var fc6: Int { scaled(4096) }
    public var fc7: Int { scaled(4096) }
    public var fc6Inputs: Int { conv5 * Self.pool5Plane }

    public var lrn: LocalResponseNorm { LocalResponseNorm(size: lrnSize, alpha: lrnAlpha, beta: lrnBeta, k: lrnK) }

    /// First row (channel or neuron) of tower t among `rows`: tower 0 owns [0, ⌊rows/2⌋), tower 1 the rest.
    public static func towerStart(_ t: Int, of rows: Int) -> Int { sliceStart(t, of: rows, slices: towers) }

    /// First row of slice i when `rows` are cut into `slices` contiguous slices (uneven when they do not divide:
    /// ⌊i·rows/slices⌋). Two slices are the two towers.
    public static func sliceStart(_ i: Int, of rows: Int, slices: Int) -> Int { i * rows / slices }

    /// Whether a parameter tensor belongs to the fully connected stack (fc6, fc7, fc8).
    public static func isFullyConnected(_ tensor: String) -> Bool { tensor.hasPrefix("fc") }

    /// The parameter tensors in checkpoint order: name, PyTorch shape, whether the paper sets its bias to 1.
    public var tensors: [(name: String, shape: [Int])] {
        [("conv1.weight", [conv1, 3, 11, 11]), ("conv1.bias", [conv1]),
         ("conv2.weight", [conv2, conv1 / 2, 5, 5]), ("conv2.bias", [conv2]),
         ("conv3.weight", [conv3, conv2, 3, 3]), ("conv3.bias", [conv3]),
         ("conv4.weight", [conv4, conv3 / 2, 3, 3]), ("conv4.bias", [conv4]),
         ("conv5.weight", [conv5, conv4 / 2, 3, 3]), ("conv5.bias", [conv5]),
         ("fc6.weight", [fc6, fc6Inputs]), ("fc6.bias", [fc6]),
         ("fc7.weight", [fc7, fc6]), ("fc7.bias", [fc7]),
         ("fc8.weight", [classes, fc7]), ("fc8.bias", [classes])]
    }

    /// The classifier's weights: `--init he` starts them at the paper's N(0, 0.01²), not at He's scale.
    public static let classifierWeight = "fc8.weight"

    /// Biases the paper initialises to 1 (the others start at 0).
    public static let biasesSetToOne: Set<String> = ["conv2.bias", "conv4.bias", "conv5.bias", "fc6.bias", "fc7.bias"]

    /// Floats tower t sends its partner at one exchange point of a training step of N images (model parallelism):
    /// its own slice forward, the partner's slice of its input-gradient partial backward.
    public func exchangeFloats(at point: ExchangePoint, tower t: Int, batch N: Int) -> Int {
        func classesOf(_ tower: Int) -> Int { Self.towerStart(tower + 1, of: classes) - Self.towerStart(tower, of: classes) }
        switch point {
        case .conv3Input, .conv3InputGradient: return conv2 / 2 * Self.conv3Plane * N
        case .fc6Input, .fc6InputGradient: return conv5 / 2 * Self.pool5Plane * N
        case .fc7Input, .fc7InputGradient: return fc6 / 2 * N
        case .fc8Input, .fc8InputGradient: return fc7 / 2 * N
        case .logits: return classesOf(t) * N
        case .imageLabels: return 0   // the towers of a replica see the same images
        }
    }

    /// Floats tower t sends in one training step of N images.
    public func exchangeFloatsPerStep(tower t: Int, batch N: Int) -> Int {
        ExchangePoint.allCases.reduce(0) { $0 + exchangeFloats(at: $1, tower: t, batch: N) }
    }

    /// Multiply–adds ×2 of one image's forward pass.
    /// (CostModel's LayerArithmetic counts the same layer by layer; a test holds the two equal.)
    public var forwardFlopsPerImage: Double {
        func conv(_ m: Int, _ k: Int, _ plane: Int) -> Double { 2 * Double(m) * Double(k) * Double(plane) }
        typealias M = ModelConfig
        return conv(conv1, 3 * M.conv1Window.area, M.conv1Plane) + conv(conv2, conv1 / 2 * M.conv2Window.area, M.conv2Plane)
            + conv(conv3, conv2 * M.conv3To5Window.area, M.conv3Plane) + conv(conv4, conv3 / 2 * M.conv3To5Window.area, M.conv3Plane)
            + conv(conv5, conv4 / 2 * M.conv3To5Window.area, M.conv3Plane)
            + 2 * Double(fc6 * fc6Inputs + fc7 * fc6 + classes * fc7)
    }
    /// Forward + backward (input and weight gradients; conv1 needs no input gradient).
    public var trainingFlopsPerImage: Double {
        3 * forwardFlopsPerImage - 2 * Double(conv1 * 3 * Self.conv1Window.area * Self.conv1Plane)
    }
}
