// The start-up table: every layer's output shape, parameter count and how the towers split it.

public enum LayerTable {
    /// `ranks`: model parallelism, where rank t owns tower t; then each layer says its owners and the bytes its
    /// input exchange moves a step (each rank sends, forward + backward), predicted from the shapes for `batch`.
    public static func render(_ c: ModelConfig, localTowers: Range<Int>, ranks: Bool = false, batch: Int = 0) -> String {
        let t = ModelConfig.towers
        func who(_ channels: Int) -> String {
            let a = ModelConfig.towerStart(1, of: channels), b = channels - a
            if ranks { return "rank 0: \(a), rank 1: \(b)" }
            return localTowers.count == t ? "both towers (\(a) + \(b))"
                : "tower \(localTowers.lowerBound) (\(ModelConfig.towerStart(localTowers.lowerBound + 1, of: channels) - ModelConfig.towerStart(localTowers.lowerBound, of: channels)) of \(channels))"
        }
        func moved(_ points: [ExchangePoint]) -> String {
            guard ranks else { return "" }
            let bytes = points.reduce(0) { $0 + 4 * c.exchangeFloats(at: $1, tower: 0, batch: batch) }
            return "; exchange \(grouped(bytes)) B/step"
        }
        func params(_ name: String) -> Int {
            c.tensors.filter { $0.name.hasPrefix(name + ".") }.reduce(0) { $0 + $1.shape.reduce(1, *) }
        }
        typealias M = ModelConfig
        func map(_ channels: Int, _ side: Int) -> String { "\(channels)×\(side)×\(side)" }
        let rows: [(String, String, String, String, String)] = [
            ("input", map(3, M.inputSize), "", "", "mean image subtracted"),
            ("conv1", map(c.conv1, M.conv1Side), M.conv1Window.label, who(c.conv1), "ReLU, LRN, pool → " + map(c.conv1, M.conv2Side)),
            ("conv2", map(c.conv2, M.conv2Side), M.conv2Window.label, who(c.conv2), "ReLU, LRN, pool → " + map(c.conv2, M.conv3Side)),
            ("conv3", map(c.conv3, M.conv3Side), M.conv3To5Window.label, who(c.conv3), "ReLU; input exchanged" + moved([.conv3Input, .conv3InputGradient])),
            ("conv4", map(c.conv4, M.conv3Side), M.conv3To5Window.label, who(c.conv4), "ReLU"),
            ("conv5", map(c.conv5, M.conv3Side), M.conv3To5Window.label, who(c.conv5), "ReLU, pool → " + map(c.conv5, M.pool5Side)),
            ("fc6", "\(c.fc6)", "", who(c.fc6), "ReLU, dropout \(c.dropout); input exchanged" + moved([.fc6Input, .fc6InputGradient])),
            ("fc7", "\(c.fc7)", "", who(c.fc7), "ReLU, dropout \(c.dropout); input exchanged" + moved([.fc7Input, .fc7InputGradient])),
            ("fc8", "\(c.classes)", "", who(c.classes), "softmax; input and logits exchanged" + moved([.fc8Input, .fc8InputGradient, .logits])),
        ]
        var lines = [pad("layer", 6) + pad("output", 12) + pad("k/s/p", 8) + pad("params", 12) + pad(ranks ? "channels held by" : "held by", 28) + "then"]
        var total = 0
        for r in rows {
            let p = r.0 == "input" ? 0 : params(r.0)
            total += p
            lines.append(pad(r.0, 6) + pad(r.1, 12) + pad(r.2, 8) + pad(p == 0 ? "" : grouped(p), 12) + pad(r.3, 28) + r.4)
        }
        lines.append("parameters: \(grouped(total)) (\(grouped(total * 4)) bytes);  "
                     + String(format: "%.2f GFLOP per training image", c.trainingFlopsPerImage / 1e9))
        if ranks {
            lines.append("predicted exchange per training step of \(batch): rank 0 sends \(grouped(4 * c.exchangeFloatsPerStep(tower: 0, batch: batch))) B, rank 1 sends \(grouped(4 * c.exchangeFloatsPerStep(tower: 1, batch: batch))) B")
        }
        return lines.joined(separator: "\n")
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

    public static func grouped(_ v: Int) -> String {
        let s = String(v)
        var out = ""
        for (i, ch) in s.enumerated() {
            if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return out
    }
}
