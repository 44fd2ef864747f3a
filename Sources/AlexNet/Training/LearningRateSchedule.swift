// The learning rate of each step: constant, the paper's drop-on-plateau, or Caffe's multistep, times an optional linear
// warm-up. A value type whose state (drops, best validation error, history) is Codable, so it rides in TrainingState.
import Foundation

public struct LearningRateSchedule: Codable, Equatable, Sendable {
    public enum Kind: Codable, Equatable, Sendable {
        /// The base rate throughout.
        case constant
        /// Krizhevsky et al. 2012: "divide the learning rate by 10 when the validation error rate stopped improving with
        /// the current learning rate ... reduced three times prior to termination". An evaluation improves when its error
        /// is lower than the best so far (at this rate) by more than `threshold` (absolute, in error-rate units: 0.001 is
        /// 0.1 percentage point); after `patience` evaluations in a row without one, the rate is multiplied by `factor`,
        /// at most `maxDrops` times.
        case paper(patience: Int = 2, threshold: Double = 0.001, factor: Double = 0.1, maxDrops: Int = 3)
        /// Caffe's "multistep": the rate is multiplied by `factor` from the first step whose epoch is ≥ each milestone
        /// (e.g. [30, 60, 80]: epochs 0..<30 at the base rate, 30..<60 at base/10, ...).
        case step(milestones: [Double], factor: Double = 0.1)
    }

    /// One change of the rate, for the log and the checkpoint's history.
    public struct Change: Codable, Equatable, Sendable {
        /// The (fractional) epoch at which it took effect.
        public var epoch: Double
        /// The rate just before and from then on, both with the warm-up factor of that epoch (1 after the warm-up).
        public var from: Float
        public var to: Float
        /// Why, in words (e.g. "milestone epoch 30", "no improvement of more than 0.001 on 0.4300 in 2 evaluations").
        public var reason: String
        public init(epoch: Double, from: Float, to: Float, reason: String) {
            self.epoch = epoch; self.from = from; self.to = to; self.reason = reason
        }
    }

    /// What a run has done with the schedule: saved in checkpoints so a resumed run drops exactly as an unbroken one.
    public struct State: Codable, Equatable, Sendable {
        /// Drops done (paper) or milestones passed (step, as reported by `advance`); 0 for constant.
        public var drops = 0
        /// factor^drops: what the base rate is multiplied by (before the warm-up factor).
        public var multiplier = 1.0
        /// The lowest validation error seen at the current rate (reset to the error at each drop); nil before the first.
        public var bestError: Double? = nil
        /// Evaluations in a row without an improvement on `bestError`.
        public var evaluationsSinceImprovement = 0
        /// Every change so far, oldest first.
        public var history: [Change] = []
        public init() {}
    }

    public var base: Float
    public var kind: Kind
    /// Epochs (fractional allowed) over which the rate rises linearly, step by step, from base × warmupStartFactor to base.
    public var warmupEpochs: Double
    public var warmupStartFactor: Double
    public var state = State()

    /// Throws one line naming the command-line option of the first bad value (see `parse` for the options).
    public init(base: Float, kind: Kind, warmupEpochs: Double = 0, warmupStartFactor: Double = 0.1) throws {
        self.base = base; self.kind = kind; self.warmupEpochs = warmupEpochs; self.warmupStartFactor = warmupStartFactor
        if let p = configurationProblem() { throw AlexNetError("\(p.option) \(p.value): \(p.expected)") }
    }

    /// The schedule the command line asks for: `kind` is --lr-schedule (constant, paper or step), `steps` --lr-steps
    /// (comma-separated epochs, only with step), `patience` --lr-patience and `threshold` --lr-threshold (only with paper;
    /// nil: the defaults 2 and 0.001), `base` --lr. Bad or misplaced values are refused in one line naming the option.
    public static func parse(kind: String, steps: String? = nil, patience: Int? = nil, threshold: Double? = nil,
                             base: Float, warmupEpochs: Double = 0, warmupStartFactor: Double = 0.1) throws -> LearningRateSchedule {
        if kind != "step", let steps { throw AlexNetError("--lr-steps \(steps): milestones are for --lr-schedule step (the schedule is \(kind)); leave --lr-steps out or use --lr-schedule step") }
        if kind != "paper", let patience { throw AlexNetError("--lr-patience \(patience): patience is for --lr-schedule paper (the schedule is \(kind)); leave it out or use --lr-schedule paper") }
        if kind != "paper", let threshold { throw AlexNetError("--lr-threshold \(threshold): the threshold is for --lr-schedule paper (the schedule is \(kind)); leave it out or use --lr-schedule paper") }
        let parsed: Kind
        switch kind {
        case "constant": parsed = .constant
        case "paper": parsed = .paper(patience: patience ?? 2, threshold: threshold ?? 0.001)
        case "step":
            guard let steps else { throw AlexNetError("--lr-schedule step needs --lr-steps: the epochs at which to divide the rate by 10, e.g. --lr-steps 30,60,80") }
            let fields = steps.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            var milestones: [Double] = []
            for field in fields {
                guard let epoch = Double(field) else { throw AlexNetError("--lr-steps \(steps): '\(field)' is not a number; give comma-separated epochs, e.g. 30,60,80") }
                milestones.append(epoch)
            }
            parsed = .step(milestones: milestones)
        default:
            throw AlexNetError("--lr-schedule \(kind): unknown schedule; use constant, paper (divide by 10 when the validation error stops improving) or step (with --lr-steps)")
        }
        return try LearningRateSchedule(base: base, kind: parsed, warmupEpochs: warmupEpochs, warmupStartFactor: warmupStartFactor)
    }

    /// A number as the command line would take it (30, not 30.0).
    func g(_ x: Double) -> String { String(format: "%g", x) }

    /// The first out-of-range setting: its option, its value, and what it should be.
    func configurationProblem() -> (option: String, value: String, expected: String)? {
        guard base.isFinite, base > 0 else { return ("--lr", g(Double(base)), "the base learning rate must be a positive number") }
        guard warmupEpochs.isFinite, warmupEpochs >= 0 else { return ("--warmup-epochs", g(warmupEpochs), "must be a number of epochs ≥ 0 (0: no warm-up)") }
        guard warmupStartFactor.isFinite, warmupStartFactor > 0, warmupStartFactor <= 1 else {
            return ("--warmup-start-factor", g(warmupStartFactor), "the warm-up starts at --lr times this; it must be in (0, 1]")
        }
        switch kind {
        case .constant: break
        case .paper(let patience, let threshold, let factor, let maxDrops):
            guard patience >= 1 else { return ("--lr-patience", "\(patience)", "must be at least 1 (evaluations without improvement before the rate drops)") }
            guard threshold.isFinite, threshold >= 0 else { return ("--lr-threshold", g(threshold), "must be an error-rate difference ≥ 0 (e.g. 0.001 for 0.1 percentage point)") }
            guard factor.isFinite, factor > 0, factor < 1 else { return ("--lr-schedule paper", "factor \(g(factor))", "the drop factor must be in (0, 1)") }
            guard maxDrops >= 0 else { return ("--lr-schedule paper", "maxDrops \(maxDrops)", "the number of drops must be ≥ 0") }
        case .step(let milestones, let factor):
            let list = milestones.map(g).joined(separator: ",")
            guard !milestones.isEmpty else { return ("--lr-steps", "(none)", "give at least one epoch, e.g. 30,60,80") }
            if let bad = milestones.first(where: { !($0.isFinite && $0 > 0) }) {
                return ("--lr-steps", list, "milestone \(g(bad)) is not a positive epoch")
            }
            if let i = milestones.indices.dropFirst().first(where: { milestones[$0] <= milestones[$0 - 1] }) {
                return ("--lr-steps", list, "milestones must be increasing without repeats (\(g(milestones[i])) follows \(g(milestones[i - 1])))")
            }
            guard factor.isFinite, factor > 0, factor < 1 else { return ("--lr-schedule step", "factor \(g(factor))", "the drop factor must be in (0, 1)") }
        }
        return nil
    }

    /// What is wrong with a decoded schedule (settings or state), in words for "the stored training state has ...", or nil.
    var storedProblem: String? {
        if let p = configurationProblem() { return "a learning-rate schedule with \(p.option.replacingOccurrences(of: "--", with: "")) \(p.value) (\(p.expected))" }
        let s = state
        let (factor, maxDrops): (Double, Int) = switch kind {
        case .constant: (1, 0)
        case .paper(_, _, let factor, let maxDrops): (factor, maxDrops)
        case .step(let milestones, let factor): (factor, milestones.count)
        }
        guard s.drops >= 0, s.drops <= maxDrops else { return "a learning-rate schedule with \(s.drops) drops (expected 0 to \(maxDrops))" }
        let expected = pow(factor, Double(s.drops))
        guard s.multiplier.isFinite, abs(s.multiplier - expected) <= 1e-9 * expected else {
            return "a learning-rate multiplier \(g(s.multiplier)) after \(s.drops) drops (expected \(g(expected)))"
        }
        if let best = s.bestError, !(best.isFinite && best >= 0) { return "a best validation error of \(best) (expected a number ≥ 0)" }
        guard s.evaluationsSinceImprovement >= 0 else { return "\(s.evaluationsSinceImprovement) evaluations since the last improvement (expected ≥ 0)" }
        guard s.history.count <= s.drops else { return "\(s.history.count) learning-rate changes for \(s.drops) drops" }
        if let c = s.history.first(where: { !($0.epoch.isFinite && $0.epoch >= 0 && $0.from.isFinite && $0.to.isFinite) }) {
            return "a learning-rate change at epoch \(c.epoch) from \(c.from) to \(c.to) (expected finite numbers)"
        }
        return nil
    }

    /// The warm-up factor at `epoch`: linear from warmupStartFactor at 0 to 1 at warmupEpochs, then 1.
    public func warmupFactor(epoch: Double) -> Double {
        guard warmupEpochs > 0, epoch < warmupEpochs else { return 1 }
        return warmupStartFactor + (1 - warmupStartFactor) * max(0, epoch) / warmupEpochs
    }

    /// factor^(milestones ≤ epoch) for step (a function of the epoch alone, so a resumed run needs no `advance` first);
    /// the state's multiplier for paper; 1 for constant.
    func multiplier(epoch: Double) -> Double {
        switch kind {
        case .constant: return 1
        case .paper: return state.multiplier
        case .step(let milestones, let factor): return pow(factor, Double(milestones.count { $0 <= epoch }))
        }
    }

    /// The rate of the step at `epoch` (= step / steps per epoch, fractional): base × schedule multiplier × warm-up.
    public func rate(epoch: Double) -> Float {
        Float(Double(base) * multiplier(epoch: epoch) * warmupFactor(epoch: epoch))
    }

    /// Records a validation error (a fraction, e.g. 1 − top-1) measured at `epoch`. Paper: returns the drop it causes, if
    /// any; others: nil, and no state changes. A non-finite error is ignored (it is no evidence either
    /// way). After a drop the best error restarts from the error that caused it, and the count from 0: the new
    /// rate has to improve on where the old one stalled, not on the old rate's best.
    public mutating func observe(validationError error: Double, epoch: Double) -> Change? {
        guard error.isFinite, case .paper(let patience, let threshold, let factor, let maxDrops) = kind else { return nil }
        guard let best = state.bestError, !(error < best - threshold) else {
            state.bestError = error
            state.evaluationsSinceImprovement = 0
            return nil
        }
        state.evaluationsSinceImprovement += 1
        guard state.evaluationsSinceImprovement >= patience, state.drops < maxDrops else { return nil }
        let from = rate(epoch: epoch)
        state.drops += 1
        state.multiplier = pow(factor, Double(state.drops))
        let change = Change(epoch: epoch, from: from, to: rate(epoch: epoch),
                            reason: String(format: "no improvement of more than %g on %.4f in %d evaluations (drop %d of %d)",
                                           threshold, best, state.evaluationsSinceImprovement, state.drops, maxDrops))
        state.bestError = error
        state.evaluationsSinceImprovement = 0
        state.history.append(change)
        return change
    }

    /// Step: records the milestones passed by `epoch` (the epoch of the step about to run) and returns the change if
    /// this call passes one or more (one change from the old rate to the new); others, or going backwards: nil.
    public mutating func advance(toEpoch epoch: Double) -> Change? {
        guard case .step(let milestones, let factor) = kind else { return nil }
        let passed = milestones.count { $0 <= epoch }
        guard passed > state.drops else { return nil }
        let crossed = milestones[state.drops..<passed].map { String(format: "%g", $0) }.joined(separator: ", ")
        let from = Float(Double(base) * state.multiplier * warmupFactor(epoch: epoch))
        state.drops = passed
        state.multiplier = pow(factor, Double(passed))
        let change = Change(epoch: epoch, from: from, to: rate(epoch: epoch),
                            reason: "milestone epoch \(crossed) (\(passed) of \(milestones.count))")
        state.history.append(change)
        return change
    }

    /// One line for the start-up table: kind, parameters, warm-up and state.
    public var description: String {
        var text: String
        switch kind {
        case .constant:
            text = String(format: "constant %g", Double(base))
        case .paper(let patience, let threshold, let factor, let maxDrops):
            text = String(format: "paper: %g, ×%g after %d evaluations without an improvement of more than %g, at most %d times; %d done",
                          Double(base), factor, patience, threshold, maxDrops, state.drops)
            if let best = state.bestError {
                text += String(format: ", best error %.4f, %d evaluations since", best, state.evaluationsSinceImprovement)
            }
        case .step(let milestones, let factor):
            text = String(format: "step: %g, ×%g at epochs %@; %d of %d passed", Double(base), factor,
                          milestones.map { String(format: "%g", $0) }.joined(separator: ","), state.drops, milestones.count)
        }
        if warmupEpochs > 0 { text += String(format: "; warm-up over %g epochs from %g×", warmupEpochs, warmupStartFactor) }
        if state.drops > 0 { text += String(format: "; now %g", Double(base) * state.multiplier) }
        return text
    }
}
