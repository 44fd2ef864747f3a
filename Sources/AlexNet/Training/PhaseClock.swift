// Wall-clock time per layer and phase (forward, backward, exchange), accumulated over steps.
import Dispatch

public enum Stage: Int, CaseIterable, Sendable {
    case data, conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8, loss, update
    public var name: String { "\(self)" }
}

public enum Phase: Int, CaseIterable, Sendable {
    case forward, backward, exchange
    public var name: String { "\(self)" }
}

public final class PhaseClock: @unchecked Sendable {
    public private(set) var seconds = [Double](repeating: 0, count: Stage.allCases.count * Phase.allCases.count)
    /// --trace: where `time` also records each interval, on this clock's thread row (nil: only summed, at the cost of
    /// one branch).
    public private(set) var recorder: TraceRecorder? = nil
    public private(set) var row = 0

    public init() {}

    /// Records every `time` interval into `recorder` on `row` (set before the clock's thread starts timing).
    public func attach(recorder: TraceRecorder?, row: Int) {
        self.recorder = recorder
        self.row = row
    }

    @inline(__always) public static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Runs body and charges its time to (stage, phase).
    @inline(__always)
    public func time<T>(_ stage: Stage, _ phase: Phase, _ body: () throws -> T) rethrows -> T {
        let t0 = PhaseClock.now()
        defer {
            let t1 = PhaseClock.now()
            seconds[stage.rawValue * Phase.allCases.count + phase.rawValue] += Double(t1 - t0) * 1e-9
            if let recorder { recorder.record(stage, phase, row: row, start: t0, end: t1) }
        }
        return try body()
    }

    public func seconds(_ stage: Stage, _ phase: Phase) -> Double {
        seconds[stage.rawValue * Phase.allCases.count + phase.rawValue]
    }
    public func total(_ phase: Phase) -> Double { Stage.allCases.reduce(0) { $0 + seconds($1, phase) } }
    public var total: Double { seconds.reduce(0, +) }

    public func reset() {
        seconds = [Double](repeating: 0, count: seconds.count)
    }
}
