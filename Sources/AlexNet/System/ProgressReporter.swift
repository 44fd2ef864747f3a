// Progress of a long job (prepare): on a terminal a bar rewritten in place, otherwise a plain line every `interval`
// seconds, e.g. "prepare  12,345/50,000  24.7%  312 images/s  ETA 2m01s".
import Foundation

public final class ProgressReporter: @unchecked Sendable {   // mutable state under `lock`
    public let label: String
    public let total: Int
    public let interval: Double
    public let terminal: Bool
    let clock: @Sendable () -> Double
    let output: @Sendable (String) -> Void
    let lock = NSLock()
    var start: (time: Double, done: Int)? = nil
    var lastShown = -Double.infinity

    /// `terminal`: rewrite one line (default: whether standard output is a terminal); otherwise print a line every
    /// `interval` seconds. `clock` (seconds) and `output` (text to write as it is) are replaceable for tests.
    public init(label: String, total: Int, interval: Double = 10, terminal: Bool = Terminal.isInteractive,
                clock: @escaping @Sendable () -> Double = { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 },
                output: @escaping @Sendable (String) -> Void = { FileHandle.standardOutput.write(Data($0.utf8)) }) {
        self.label = label; self.total = total; self.interval = interval; self.terminal = terminal
        self.clock = clock; self.output = output
    }

    /// Reports `done` of `total` (shown when the last showing is old enough: 0.2 s on a terminal, else `interval`).
    /// The rate counts from the first update, so a resumed job's earlier work does not inflate it.
    public func update(_ done: Int) {
        lock.lock(); defer { lock.unlock() }
        let now = clock()
        guard let start else { start = (now, done); return }
        guard now - lastShown >= (terminal ? 0.2 : interval) else { return }
        lastShown = now
        let text = Self.line(label: label, done: done, total: total, rate: rate(done, now, start))
        output(terminal ? "\r" + text + "\u{1B}[K" : text + "\n")
    }

    /// The final report: always shown, and ends the terminal's line.
    public func finish(_ done: Int) {
        lock.lock(); defer { lock.unlock() }
        let now = clock(), s = start ?? (now, done)
        let text = Self.line(label: label, done: done, total: total, rate: rate(done, now, s))
        output(terminal ? "\r" + text + "\u{1B}[K\n" : text + "\n")
    }

    func rate(_ done: Int, _ now: Double, _ start: (time: Double, done: Int)) -> Double? {
        now > start.time && done > start.done ? Double(done - start.done) / (now - start.time) : nil
    }

    /// "prepare  12,345/50,000  24.7%  312 images/s  ETA 2m01s" (rate nil: "– images/s  ETA –").
    public static func line(label: String, done: Int, total: Int, rate: Double?) -> String {
        let percent = total > 0 ? 100 * Double(done) / Double(total) : 100
        let speed = rate.map { String(format: $0 >= 10 ? "%.0f" : "%.1f", $0) } ?? "–"
        let eta = rate.map { duration(Double(max(0, total - done)) / $0) } ?? "–"
        return "\(label)  \(grouped(done))/\(grouped(total))  \(String(format: "%.1f", percent))%  \(speed) images/s  ETA \(eta)"
    }

    /// 12345 → "12,345".
    public static func grouped(_ n: Int) -> String {
        let digits = String(n.magnitude)
        var out = ""
        for (k, c) in digits.enumerated() {
            if k > 0 && (digits.count - k) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }

    /// Seconds as "45s", "2m01s" or "3h07m".
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "–" }
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
    }
}
