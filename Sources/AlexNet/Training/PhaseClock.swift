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

    public init() {}

    @inline(__always) public static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Runs body and charges its time to (stage, phase).
    @inline(__always)
    public func time<T>(_ stage: Stage, _ phase: Phase, _ body: () throws -> T) rethrows -> T {
        let t0 = PhaseClock.now()
        defer { seconds[stage.rawValue * Phase.allCases.count + phase.rawValue] += Double(PhaseClock.now() - t0) * 1e-9 }
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
