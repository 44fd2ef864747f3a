// --trace: a timeline of a window of steps. Threads record spans (name, category, thread row, start and end on
// PhaseClock's clock) into a TraceRecorder while the window is open; each rank's spans, shifted onto rank 0's clock,
// become one Chrome trace-event JSON file (Perfetto, chrome://tracing): a process a rank, a thread row a thread.
import Foundation
import Synchronization

/// One timed interval of one thread row, in this process's PhaseClock nanoseconds.
public struct TraceSpan: Codable, Sendable {
    public var name: String
    public var category: String
    public var row: Int
    public var start: UInt64
    public var end: UInt64
    public var args: [String: String]?
    public init(name: String, category: String, row: Int, start: UInt64, end: UInt64, args: [String: String]? = nil) {
        self.name = name; self.category = category; self.row = row; self.start = start; self.end = end; self.args = args
    }
}

/// Collects spans from any thread. Rows are small integers named once ("main" is row 0); spans are kept only while
/// `enabled`, which the training loop turns on at the first step of `window` and off after its last.
public final class TraceRecorder: @unchecked Sendable {
    /// The 0-based steps traced, inclusive.
    public let window: ClosedRange<Int>
    private let on = Atomic<Bool>(false)
    private let lock = NSLock()
    private var spans: [TraceSpan] = []   // under lock
    private var rows: [String] = []       // under lock: row i is named rows[i]
    private var stepStart: UInt64 = 0     // the training thread's only
    /// Span names of PhaseClock's (stage, phase) pairs, built once: recording one copies a reference.
    private static let clockNames: [String] = Stage.allCases.flatMap { stage in Phase.allCases.map { name(stage, $0) } }

    /// The main row (row 0) holds the step spans.
    public static let mainRow = 0

    public init(window: ClosedRange<Int>) {
        self.window = window
        _ = row(named: "main")
    }

    public var enabled: Bool { on.load(ordering: .relaxed) }

    /// The row called `name`, added if new (one a thread: "tower 0", "allreduce progress", "data prefetch").
    public func row(named name: String) -> Int {
        lock.withLock {
            if let i = rows.firstIndex(of: name) { return i }
            rows.append(name)
            return rows.count - 1
        }
    }

    public var rowNames: [String] { lock.withLock { rows } }
    public var recorded: [TraceSpan] { lock.withLock { spans } }

    /// Keeps a span if the window is open.
    public func record(_ name: String, category: String, row: Int, start: UInt64, end: UInt64, args: [String: String]? = nil) {
        guard enabled else { return }
        let span = TraceSpan(name: name, category: category, row: row, start: start, end: max(start, end), args: args)
        lock.withLock { spans.append(span) }
    }

    /// A PhaseClock interval: named by its stage and phase ("conv2 forward", "fc6 exchange", "data wait", "update"),
    /// its category the phase.
    public func record(_ stage: Stage, _ phase: Phase, row: Int, start: UInt64, end: UInt64) {
        guard enabled else { return }
        let span = TraceSpan(name: Self.clockNames[stage.rawValue * Phase.allCases.count + phase.rawValue], category: phase.name,
                             row: row, start: start, end: max(start, end))
        lock.withLock { spans.append(span) }
    }

    static func name(_ stage: Stage, _ phase: Phase) -> String {
        switch (stage, phase) {
        case (.data, .forward): return "data wait"
        case (.update, .backward): return "update"
        case (.update, .exchange): return "allreduce wait"
        default: return "\(stage.name) \(phase.name)"
        }
    }

    /// The training thread, as step `step` begins: opens the window at its first step.
    public func beginStep(_ step: Int) {
        guard window.contains(step) else { return }
        on.store(true, ordering: .relaxed)
        stepStart = PhaseClock.now()
    }

    /// The training thread, as step `step` ends: its "step N" span on the main row; closes the window after its last.
    public func endStep(_ step: Int) {
        guard window.contains(step) else { return }
        record("step \(step)", category: "step", row: Self.mainRow, start: stepStart, end: PhaseClock.now(), args: ["step": "\(step)"])
        if step == window.upperBound { on.store(false, ordering: .relaxed) }
    }

    /// What this process recorded, for the file (`offset`: nanoseconds that put its times on rank 0's clock).
    public func rankTrace(rank: Int, process: String, offset: Int64 = 0, roundTrip: Int64 = 0) -> RankTrace {
        lock.withLock { RankTrace(rank: rank, process: process, rows: rows, offset: offset, roundTrip: roundTrip, spans: spans) }
    }
}

extension TraceSpan {
    /// The same span `nanoseconds` later (tests: a rank whose clock reads differently).
    public func shifted(by nanoseconds: Int64) -> TraceSpan {
        var s = self
        s.start = UInt64(bitPattern: Int64(bitPattern: start) &+ nanoseconds)
        s.end = UInt64(bitPattern: Int64(bitPattern: end) &+ nanoseconds)
        return s
    }
}

/// One rank's part of the trace file, as it travels to rank 0.
public struct RankTrace: Codable, Sendable {
    public var rank: Int
    /// The process's name in the viewer ("rank 1 (tower 1)").
    public var process: String
    public var rows: [String]
    /// Nanoseconds added to this rank's times to read rank 0's clock, and the round trip of the measurement that set it.
    public var offset: Int64
    public var roundTrip: Int64
    public var spans: [TraceSpan]
    public init(rank: Int, process: String, rows: [String], offset: Int64, roundTrip: Int64, spans: [TraceSpan]) {
        self.rank = rank; self.process = process; self.rows = rows; self.offset = offset; self.roundTrip = roundTrip; self.spans = spans
    }
}

public enum TraceFile {
    /// The Chrome trace-event JSON of every rank's spans: "X" events (ts and dur in µs from the earliest span, pid the
    /// rank, tid the row) on rank 0's clock, "M" events naming processes and rows, and `metadata`.
    public static func json(_ ranks: [RankTrace], metadata: [String: Any]) throws -> Data {
        let origin = ranks.flatMap { r in r.spans.map { Int64(bitPattern: $0.start) + r.offset } }.min() ?? 0
        var events: [[String: Any]] = []
        for r in ranks {
            events.append(["name": "process_name", "ph": "M", "ts": 0, "pid": r.rank, "tid": 0, "args": ["name": r.process]])
            events.append(["name": "process_sort_index", "ph": "M", "ts": 0, "pid": r.rank, "tid": 0, "args": ["sort_index": r.rank]])
            for (row, name) in r.rows.enumerated() {
                events.append(["name": "thread_name", "ph": "M", "ts": 0, "pid": r.rank, "tid": row, "args": ["name": name]])
                events.append(["name": "thread_sort_index", "ph": "M", "ts": 0, "pid": r.rank, "tid": row, "args": ["sort_index": row]])
            }
        }
        var spans: [(ts: Double, event: [String: Any])] = []
        for r in ranks {
            for s in r.spans {
                let ts = Double(Int64(bitPattern: s.start) + r.offset - origin) * 1e-3
                var event: [String: Any] = ["name": s.name, "cat": s.category, "ph": "X", "ts": ts,
                                            "dur": Double(s.end - s.start) * 1e-3, "pid": r.rank, "tid": s.row]
                if let args = s.args { event["args"] = args }
                spans.append((ts, event))
            }
        }
        events += spans.sorted { $0.ts < $1.ts }.map(\.event)
        var meta = metadata
        meta["clock_offsets_ns"] = ranks.map(\.offset)
        meta["clock_round_trips_ns"] = ranks.map(\.roundTrip)
        return try JSONSerialization.data(withJSONObject: ["traceEvents": events, "displayTimeUnit": "ms", "metadata": meta],
                                          options: [.sortedKeys])
    }

    /// Writes the file durably (a temporary file, synced, renamed over `path`).
    public static func write(_ ranks: [RankTrace], metadata: [String: Any], to path: String) throws {
        let data = try json(ranks, metadata: metadata)
        try DurableFile.replace(path, with: data)
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try DurableFile.syncFolder(folder.isEmpty ? "." : folder)
    }

    /// The default window (steps 1 to 3: after the first, whose start-up costs are not typical), clipped to a run of
    /// `steps` steps.
    public static func defaultWindow(steps: Int) -> ClosedRange<Int> {
        let last = max(0, steps - 1)
        return min(1, last)...min(3, last)
    }

    /// "A:B" → A...B; nil if it is not two integers 0 ≤ A ≤ B.
    public static func parseWindow(_ text: String) -> ClosedRange<Int>? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = Int(parts[0].trimmingCharacters(in: .whitespaces)),
              let b = Int(parts[1].trimmingCharacters(in: .whitespaces)), a >= 0, a <= b else { return nil }
        return a...b
    }
}
