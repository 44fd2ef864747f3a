// The start-up table: every layer's output shape, parameter count and how the towers split it.

public enum LayerTable {
    public static func render(_ c: ModelConfig, localTowers: Range<Int>) -> String {
        let t = ModelConfig.towers
        func who(_ channels: Int) -> String {
            localTowers.count == t ? "both towers (\(channels / t) + \(channels - channels / t))"
                : "tower \(localTowers.lowerBound) (\(ModelConfig.towerStart(localTowers.lowerBound + 1, of: channels) - ModelConfig.towerStart(localTowers.lowerBound, of: channels)) of \(channels))"
        }
        func params(_ name: String) -> Int {
            c.tensors.filter { $0.name.hasPrefix(name + ".") }.reduce(0) { $0 + $1.shape.reduce(1, *) }
        }
        let rows: [(String, String, String, String, String)] = [
            ("input", "3×227×227", "", "", "mean image subtracted"),
            ("conv1", "\(c.conv1)×55×55", "11/4/0", who(c.conv1), "ReLU, LRN, pool → \(c.conv1)×27×27"),
            ("conv2", "\(c.conv2)×27×27", "5/1/2", who(c.conv2), "ReLU, LRN, pool → \(c.conv2)×13×13"),
            ("conv3", "\(c.conv3)×13×13", "3/1/1", who(c.conv3), "ReLU; input exchanged"),
            ("conv4", "\(c.conv4)×13×13", "3/1/1", who(c.conv4), "ReLU"),
            ("conv5", "\(c.conv5)×13×13", "3/1/1", who(c.conv5), "ReLU, pool → \(c.conv5)×6×6"),
            ("fc6", "\(c.fc6)", "", who(c.fc6), "ReLU, dropout \(c.dropout); input exchanged"),
            ("fc7", "\(c.fc7)", "", who(c.fc7), "ReLU, dropout \(c.dropout); input exchanged"),
            ("fc8", "\(c.classes)", "", who(c.classes), "softmax; input and logits exchanged"),
        ]
        var lines = [pad("layer", 6) + pad("output", 12) + pad("k/s/p", 8) + pad("params", 12) + pad("held by", 28) + "then"]
        var total = 0
        for r in rows {
            let p = r.0 == "input" ? 0 : params(r.0)
            total += p
            lines.append(pad(r.0, 6) + pad(r.1, 12) + pad(r.2, 8) + pad(p == 0 ? "" : grouped(p), 12) + pad(r.3, 28) + r.4)
        }
        lines.append("parameters: \(grouped(total)) (\(grouped(total * 4)) bytes);  "
                     + String(format: "%.2f GFLOP per training image", c.trainingFlopsPerImage / 1e9))
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
