// LearningRateSchedule: where the paper schedule drops on a hand-made validation-error sequence (threshold, patience, at
// most three drops, identical after a JSON round trip of its state), the step schedule around its milestones, the linear
// warm-up alone and with steps, one-line refusals of bad options, and refusal of an out-of-range stored state.
import AlexNet
import Foundation
import XCTest

final class LearningRateScheduleTests: XCTestCase {
    /// Validation errors (fractions) of evaluations 1...18. With patience 2 and threshold 0.001: 4 and 5 improve on 0.45
    /// by less than the threshold (drop 1 at 5), 8 and 9 do not improve on 0.43 (drop 2 at 9), 11 and 12 not on 0.42
    /// (drop 3 at 12), 14 and 15 not on 0.41 (no drop: three is the most), and 17, 18 not on 0.40 (none either).
    let errors = [0.60, 0.50, 0.45, 0.4495, 0.4492, 0.44, 0.43, 0.43, 0.4295, 0.42, 0.42, 0.42, 0.41, 0.41, 0.41, 0.40, 0.40, 0.40]

    /// The evaluations (1-based) at which `schedule` drops the rate, with the changes, feeding it `errors` (evaluation i
    /// at epoch i); the schedule is left as it is after the last one.
    func drops(_ schedule: inout LearningRateSchedule, from first: Int = 1) -> [(evaluation: Int, change: LearningRateSchedule.Change)] {
        var found: [(Int, LearningRateSchedule.Change)] = []
        for i in first...errors.count {
            if let change = schedule.observe(validationError: errors[i - 1], epoch: Double(i)) { found.append((i, change)) }
        }
        return found
    }

    func assertRate(_ actual: Float, _ expected: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Double(actual), expected, accuracy: expected * 1e-6, what, file: file, line: line)
    }

    func testPaperScheduleDropsAfterPatienceWithoutImprovementAtMostThreeTimes() throws {
        var schedule = try LearningRateSchedule(base: 0.01, kind: .paper())
        assertRate(schedule.rate(epoch: 0), 0.01, "before any evaluation")
        let found = drops(&schedule)
        XCTAssertEqual(found.map(\.evaluation), [5, 9, 12])
        let expected = [(0.01, 0.001), (0.001, 0.0001), (0.0001, 0.00001)]
        for ((_, change), (from, to)) in zip(found, expected) {
            assertRate(change.from, from, "rate before \(change)")
            assertRate(change.to, to, "rate after \(change)")
        }
        XCTAssertEqual(found.map(\.change.epoch), [5, 9, 12])
        XCTAssertTrue(found[0].change.reason.contains("0.4500"), found[0].change.reason)   // the best it failed to beat
        assertRate(schedule.rate(epoch: 18), 0.00001, "after the third drop")
        XCTAssertEqual(schedule.state.drops, 3)
        XCTAssertEqual(schedule.state.history, found.map(\.change))
        XCTAssertEqual(schedule.state.bestError, 0.40)
        XCTAssertEqual(schedule.state.evaluationsSinceImprovement, 2)

        // After a drop the best restarts from the error at the drop, not the old rate's best: with 0.45 then 0.46, 0.47
        // (drop), 0.455 improves on 0.47 and restarts the count, so the next drop is at 6 (from the old best 0.45 it
        // would have been at 5).
        var worse = try LearningRateSchedule(base: 1, kind: .paper())
        let rising = [0.45, 0.46, 0.47, 0.455, 0.456, 0.4565]
        let risingDrops = rising.indices.filter { worse.observe(validationError: rising[$0], epoch: Double($0)) != nil }
        XCTAssertEqual(risingDrops.map { $0 + 1 }, [3, 6])

        // Patience 3: the sequence never has three evaluations in a row without an improvement, so no drop.
        var patient = try LearningRateSchedule(base: 0.01, kind: .paper(patience: 3))
        XCTAssertEqual(drops(&patient).map(\.evaluation), [])
        // maxDrops 1: only the first.
        var once = try LearningRateSchedule(base: 0.01, kind: .paper(maxDrops: 1))
        XCTAssertEqual(drops(&once).map(\.evaluation), [5])
        assertRate(once.rate(epoch: 18), 0.001, "one drop")
    }

    func testThresholdDecidesWhatCountsAsAnImprovement() throws {
        // Threshold 0: any decrease improves, so 4, 5 and 9 are improvements and the drops move to 12, 15 and 18.
        var strictless = try LearningRateSchedule(base: 1, kind: .paper(threshold: 0))
        XCTAssertEqual(drops(&strictless).map(\.evaluation), [12, 15, 18])
        // Threshold 0.02: 0.44 and 0.43 (by 0.0092 and 0.0192) do not improve on 0.4492 either, so drop 2 comes at 7,
        // and 0.43, 0.4295 not on 0.43: drop 3 at 9.
        var coarse = try LearningRateSchedule(base: 1, kind: .paper(threshold: 0.02))
        XCTAssertEqual(drops(&coarse).map(\.evaluation), [5, 7, 9])
        // A non-finite error is no evidence: ignored, it neither counts nor resets.
        var schedule = try LearningRateSchedule(base: 1, kind: .paper())
        for e in [0.5, 0.5, .nan, .infinity] { XCTAssertNil(schedule.observe(validationError: e, epoch: 1)) }
        XCTAssertEqual(schedule.state.evaluationsSinceImprovement, 1)
        XCTAssertNotNil(schedule.observe(validationError: 0.5, epoch: 2))
    }

    func testStateSurvivesJSONAndContinuesIdentically() throws {
        var unbroken = try LearningRateSchedule(base: 0.01, kind: .paper(), warmupEpochs: 0.5)
        let all = drops(&unbroken)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]   // as Checkpoint writes the training state
        // Interrupted after each evaluation in turn (mid-count, right after a drop, after the last drop): the decoded
        // schedule drops at the same evaluations with the same changes, and ends in the same state.
        for stop in 0..<errors.count {
            var first = try LearningRateSchedule(base: 0.01, kind: .paper(), warmupEpochs: 0.5)
            for i in 0..<stop { _ = first.observe(validationError: errors[i], epoch: Double(i + 1)) }
            var state = TrainingState(step: 100, learningRate: 0.01)
            state.schedule = first
            let json = try encoder.encode(state)
            var resumed = try XCTUnwrap(try JSONDecoder().decode(TrainingState.self, from: json).schedule)
            XCTAssertEqual(resumed, first, "after \(stop) evaluations")
            let rest = drops(&resumed, from: stop + 1)
            XCTAssertEqual(rest.map(\.evaluation), all.map(\.evaluation).filter { $0 > stop }, "resumed after \(stop)")
            XCTAssertEqual(rest.map(\.change), all.filter { $0.evaluation > stop }.map(\.change), "resumed after \(stop)")
            XCTAssertEqual(resumed, unbroken, "resumed after \(stop)")
        }
        // Files from before the schedule was kept decode with none.
        var object = try XCTUnwrap(JSONSerialization.jsonObject(with: encoder.encode(TrainingState(step: 3))) as? [String: Any])
        object["schedule"] = nil
        XCTAssertNil(try JSONDecoder().decode(TrainingState.self, from: JSONSerialization.data(withJSONObject: object)).schedule)
    }

    func testStepScheduleAroundEachMilestone() throws {
        var schedule = try LearningRateSchedule.parse(kind: "step", steps: "30, 60,80", base: 0.1)
        XCTAssertEqual(schedule.kind, .step(milestones: [30, 60, 80], factor: 0.1))
        let stepsPerEpoch = 7.0
        for (epoch, expected) in [(0.0, 0.1), (29.0, 0.1), (59.0, 0.01), (79.0, 0.001), (200.0, 0.0001)] {
            assertRate(schedule.rate(epoch: epoch), expected, "epoch \(epoch)")
        }
        for (milestone, before, after) in [(30.0, 0.1, 0.01), (60.0, 0.01, 0.001), (80.0, 0.001, 0.0001)] {
            let first = milestone * stepsPerEpoch   // the first step of the milestone epoch has the lower rate
            assertRate(schedule.rate(epoch: (first - 1) / stepsPerEpoch), before, "last step before epoch \(milestone)")
            assertRate(schedule.rate(epoch: first / stepsPerEpoch), after, "first step of epoch \(milestone)")
            assertRate(schedule.rate(epoch: (first + 1) / stepsPerEpoch), after, "second step of epoch \(milestone)")
        }
        // advance reports each milestone once, at its first step, as the step loop would call it.
        var reported: [(step: Int, change: LearningRateSchedule.Change)] = []
        for step in 0..<600 {
            if let change = schedule.advance(toEpoch: Double(step) / stepsPerEpoch) { reported.append((step, change)) }
        }
        XCTAssertEqual(reported.map(\.step), [210, 420, 560])
        XCTAssertEqual(reported.map(\.change.epoch), [30, 60, 80])
        for ((_, change), (from, to)) in zip(reported, [(0.1, 0.01), (0.01, 0.001), (0.001, 0.0001)]) {
            assertRate(change.from, from, "\(change)"); assertRate(change.to, to, "\(change)")
        }
        XCTAssertEqual(schedule.state.drops, 3)
        XCTAssertEqual(schedule.state.history, reported.map(\.change))
        XCTAssertNil(schedule.observe(validationError: 0.9, epoch: 90), "step ignores validation errors")
        // Resuming past two milestones at once (e.g. with a state from before the schedule): one change, both named.
        var late = try LearningRateSchedule(base: 0.1, kind: .step(milestones: [30, 60, 80]))
        let jump = try XCTUnwrap(late.advance(toEpoch: 65))
        assertRate(jump.from, 0.1, "before the jump"); assertRate(jump.to, 0.001, "after the jump")
        XCTAssertTrue(jump.reason.contains("30, 60"), jump.reason)
        XCTAssertNil(late.advance(toEpoch: 65.5)); XCTAssertNil(late.advance(toEpoch: 10))
        XCTAssertEqual(late.state.drops, 2)
    }

    func testWarmupRampsLinearlyPerStepAloneAndWithSteps() throws {
        let schedule = try LearningRateSchedule(base: 0.4, kind: .constant, warmupEpochs: 5, warmupStartFactor: 0.1)
        assertRate(schedule.rate(epoch: 0), 0.04, "first step")
        assertRate(schedule.rate(epoch: 2.5), 0.22, "midway")
        assertRate(schedule.rate(epoch: 5), 0.4, "at the end of the warm-up")
        assertRate(schedule.rate(epoch: 7.3), 0.4, "after")
        // Per step (10 a epoch): each of the 50 warm-up steps adds the same 0.36 / 50.
        let rates = (0...50).map { Double(schedule.rate(epoch: Double($0) / 10)) }
        for i in 1...50 { XCTAssertEqual(rates[i] - rates[i - 1], 0.36 / 50, accuracy: 1e-6, "step \(i)") }
        // Fractional warm-up: 0.25 epoch of 8 steps a epoch is 2 steps: 0.04, 0.22, then 0.4.
        let short = try LearningRateSchedule(base: 0.4, kind: .constant, warmupEpochs: 0.25)
        for (step, expected) in [0.04, 0.22, 0.4, 0.4].enumerated() { assertRate(short.rate(epoch: Double(step) / 8), expected, "short warm-up step \(step)") }
        // With steps at epochs 2 and 8: the factors multiply.
        let both = try LearningRateSchedule(base: 1, kind: .step(milestones: [2, 8]), warmupEpochs: 5)
        for (epoch, expected) in [(0.0, 0.1), (1.0, 0.28), (2.0, 0.1 * 0.46), (5.0, 0.1), (7.9, 0.1), (8.0, 0.01)] {
            assertRate(both.rate(epoch: epoch), expected, "warm-up with steps at epoch \(epoch)")
        }
        // No warm-up: the base rate from the first step.
        assertRate(try LearningRateSchedule(base: 0.4, kind: .constant).rate(epoch: 0), 0.4, "no warm-up")
    }

    func testDescriptionNamesKindParametersAndState() throws {
        var paper = try LearningRateSchedule.parse(kind: "paper", patience: 4, threshold: 0.002, base: 0.01, warmupEpochs: 2.5)
        for e in [0.5, 0.5, 0.5, 0.5, 0.5] { _ = paper.observe(validationError: e, epoch: 1) }
        let text = paper.description
        for words in ["paper", "0.01", "after 4 evaluations", "0.002", "at most 3", "1 done", "best error 0.5000", "warm-up over 2.5 epochs from 0.1", "now 0.001"] {
            XCTAssertTrue(text.contains(words), "'\(text)' lacks '\(words)'")
        }
        XCTAssertFalse(text.contains("\n"))
        let step = try LearningRateSchedule.parse(kind: "step", steps: "30,60.5", base: 0.1).description
        XCTAssertTrue(step.contains("step") && step.contains("30,60.5") && step.contains("0 of 2 passed") && !step.contains("warm-up"), step)
        XCTAssertTrue(try LearningRateSchedule.parse(kind: "constant", base: 0.02).description.hasPrefix("constant 0.02"))
    }

    /// The one-line error `body` throws, checked to name `option`.
    func refusal(_ option: String, _ words: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Any) {
        do {
            _ = try body()
            XCTFail("accepted (expected a refusal naming \(option))", file: file, line: line)
        } catch let error as AlexNetError {
            let text = error.description
            XCTAssertFalse(text.contains("\n"), "more than one line: \(text)", file: file, line: line)
            XCTAssertTrue(text.hasPrefix(option) && text.contains(words), "'\(text)' does not start with \(option) or lacks '\(words)'", file: file, line: line)
        } catch {
            XCTFail("not an AlexNetError: \(error)", file: file, line: line)
        }
    }

    func testBadOptionsAreRefusedInOneLineNamingTheOption() throws {
        typealias S = LearningRateSchedule
        refusal("--lr-schedule", "cosine") { try S.parse(kind: "cosine", base: 0.01) }
        refusal("--lr-schedule step needs --lr-steps", "30,60,80") { try S.parse(kind: "step", base: 0.01) }
        refusal("--lr-steps 30,20:", "increasing without repeats (20 follows 30)") { try S.parse(kind: "step", steps: "30,20", base: 0.01) }
        refusal("--lr-steps", "without repeats") { try S.parse(kind: "step", steps: "30,30", base: 0.01) }
        refusal("--lr-steps", "'x' is not a number") { try S.parse(kind: "step", steps: "30,x", base: 0.01) }
        refusal("--lr-steps", "'' is not a number") { try S.parse(kind: "step", steps: "30,,60", base: 0.01) }
        refusal("--lr-steps", "not a positive epoch") { try S.parse(kind: "step", steps: "-5,10", base: 0.01) }
        refusal("--lr-steps", "not a positive epoch") { try S.parse(kind: "step", steps: "0", base: 0.01) }
        refusal("--lr-steps", "not a positive epoch") { try S.parse(kind: "step", steps: "30,inf", base: 0.01) }
        refusal("--lr-steps", "not a positive epoch") { try S.parse(kind: "step", steps: "nan", base: 0.01) }
        refusal("--lr-steps", "give at least one") { try S(base: 0.01, kind: .step(milestones: [])) }
        refusal("--lr-steps", "--lr-schedule step") { try S.parse(kind: "paper", steps: "30", base: 0.01) }
        refusal("--lr-patience", "at least 1") { try S.parse(kind: "paper", patience: 0, base: 0.01) }
        refusal("--lr-patience", "--lr-schedule paper") { try S.parse(kind: "constant", patience: 3, base: 0.01) }
        refusal("--lr-threshold", "≥ 0") { try S.parse(kind: "paper", threshold: -0.1, base: 0.01) }
        refusal("--lr-threshold", "≥ 0") { try S.parse(kind: "paper", threshold: .nan, base: 0.01) }
        refusal("--lr-threshold", "--lr-schedule paper") { try S.parse(kind: "step", steps: "3", threshold: 0.01, base: 0.01) }
        refusal("--warmup-epochs", "-1") { try S.parse(kind: "constant", base: 0.01, warmupEpochs: -1) }
        refusal("--warmup-epochs", "inf") { try S.parse(kind: "constant", base: 0.01, warmupEpochs: .infinity) }
        for factor: Double in [0, -0.1, 1.5, .nan] {
            refusal("--warmup-start-factor", "(0, 1]") { try S.parse(kind: "constant", base: 0.01, warmupEpochs: 1, warmupStartFactor: factor) }
        }
        refusal("--lr", "positive") { try S.parse(kind: "constant", base: 0) }
        refusal("--lr", "positive") { try S.parse(kind: "constant", base: .nan) }
        for factor: Double in [0, 1, 2] {
            refusal("--lr-schedule step", "factor") { try S(base: 0.01, kind: .step(milestones: [3], factor: factor)) }
            refusal("--lr-schedule paper", "factor") { try S(base: 0.01, kind: .paper(factor: factor)) }
        }
        refusal("--lr-schedule paper", "maxDrops -1") { try S(base: 0.01, kind: .paper(maxDrops: -1)) }
        // In range, each kind is accepted as asked.
        XCTAssertEqual(try S.parse(kind: "paper", patience: 5, threshold: 0, base: 0.01).kind, .paper(patience: 5, threshold: 0))
        XCTAssertEqual(try S.parse(kind: "step", steps: "0.5,1.25", base: 0.01, warmupEpochs: 0.1, warmupStartFactor: 1).kind, .step(milestones: [0.5, 1.25]))
        XCTAssertEqual(try S.parse(kind: "constant", base: 0.01).kind, .constant)
    }

    func testOutOfRangeStoredScheduleIsRefused() throws {
        let file = "run/step-100.safetensors"
        var good = try LearningRateSchedule(base: 0.01, kind: .paper())
        _ = drops(&good)
        var state = TrainingState(step: 100, learningRate: 0.01)
        state.schedule = good
        XCTAssertNoThrow(try state.validate(file: file))
        var bad: [(LearningRateSchedule, String)] = []
        var s = good; s.state.drops = 4; bad.append((s, "4 drops (expected 0 to 3)"))
        s = good; s.state.drops = -1; bad.append((s, "-1 drops"))
        s = good; s.state.multiplier = 1; bad.append((s, "multiplier 1 after 3 drops (expected 0.001)"))
        s = good; s.state.bestError = -0.5; bad.append((s, "best validation error of -0.5"))
        s = good; s.state.bestError = .nan; bad.append((s, "best validation error of nan"))
        s = good; s.state.evaluationsSinceImprovement = -2; bad.append((s, "-2 evaluations"))
        s = good; s.state.history.append(s.state.history[0]); bad.append((s, "4 learning-rate changes for 3 drops"))
        s = good; s.state.history[1].to = .infinity; bad.append((s, "to inf"))
        s = good; s.kind = .paper(factor: 5); bad.append((s, "factor 5"))
        s = good; s.base = -1; bad.append((s, "lr -1 ("))
        s = good; s.kind = .step(milestones: [3, 2]); s.state = .init(); bad.append((s, "increasing"))
        s = good; s.kind = .constant; bad.append((s, "3 drops (expected 0 to 0)"))
        for (schedule, words) in bad {
            state.schedule = schedule
            do {
                try state.validate(file: file)
                XCTFail("accepted: \(words)")
            } catch let error as AlexNetError {
                let text = error.description
                XCTAssertTrue(text.hasPrefix(file) && text.contains(words) && !text.contains("\n"), "'\(text)' lacks '\(words)'")
            }
        }
        // Through a real checkpoint: a good schedule comes back equal; one with too many drops refuses the load.
        let dir = Paths.temporaryDirectory("schedule-tests"), path = dir + "/schedule.safetensors"
        let model = ModelConfig(width: 0.01, classes: 10, dropout: 0.5)
        let store = ParameterStore(config: model, towers: 0..<2)
        store.initialiseHe(seed: 3)
        state.model = model
        state.schedule = good
        try Checkpoint.save(store, state: state, to: path)
        XCTAssertEqual(try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2))?.schedule, good)
        state.schedule?.state.drops = 7
        try Checkpoint.save(store, state: state, to: path)
        XCTAssertThrowsError(try Checkpoint.load(path, into: ParameterStore(config: model, towers: 0..<2))) { error in
            XCTAssertTrue("\(error)".contains(path) && "\(error)".contains("7 drops"), "\(error)")
        }
    }
}
