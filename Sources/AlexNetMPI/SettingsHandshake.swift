// Start-up handshake: every rank shows the others its settings and layer shapes; on any difference all ranks
// refuse to start, naming the field and each rank's value.
import AlexNet
import Foundation

public enum SettingsHandshake {
    /// `fields` are (name, value) pairs in a fixed order. Returns normally only when every rank has the same list.
    public static func check(_ fields: [(String, String)], on communicator: MPICommunicator) throws {
        let text = fields.map { "\($0.0)\u{1F}\($0.1)" }.joined(separator: "\u{1E}")
        let all = try communicator.waiting(in: "the start-up comparison of settings") {
            try communicator.allGather(bytes: Array(text.utf8))
        }.map { String(decoding: $0, as: UTF8.self) }
        guard Set(all).count > 1 else { return }
        func parse(_ s: String) -> [(String, String)] {
            s.split(separator: "\u{1E}", omittingEmptySubsequences: false).map {
                let parts = $0.split(separator: "\u{1F}", maxSplits: 1, omittingEmptySubsequences: false)
                return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
            }
        }
        let lists = all.map(parse)
        var differences: [String] = []
        let names = lists.flatMap { $0.map(\.0) }.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        for name in names {
            let values = lists.map { list in list.first { $0.0 == name }?.1 ?? "(missing)" }
            if Set(values).count > 1 {
                differences.append("\(name): " + values.enumerated().map { "rank \($0.offset) has \($0.element)" }.joined(separator: ", "))
            }
        }
        throw AlexNetError("the ranks' settings differ, so none of them starts: " + differences.joined(separator: "; ")
                           + " (give every rank the same options)")
    }
}
