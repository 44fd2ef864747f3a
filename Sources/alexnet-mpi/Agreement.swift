// What ranks agree on (every option, the build, the world, each step's verdict) and the limits a run is checked
// against before anything is allocated.
import AlexNet
import AlexNetMPI
import ArgumentParser
import Foundation

enum Agreement {
    /// Every option of a command as (name, value), read from the parsed command itself so that an option added later
    /// is compared too. --threads is per rank by nature (nodes may differ in cores) and is left out.
    static func optionFields(of command: Any) -> [(String, String)] {
        var fields: [(String, String)] = []
        for child in Mirror(reflecting: command).children {
            guard let label = child.label, label.hasPrefix("_"), label != "_threadOptions" else { continue }
            fields.append(("--" + kebab(String(label.dropFirst())), String(describing: child.value)))
        }
        return fields
    }

    /// camelCase → kebab-case, the option spelling ("saveEvery" → "save-every"); `initialisation` is spelt --init.
    static func kebab(_ name: String) -> String {
        if name == "initialisation" { return "init" }
        var out = ""
        for c in name {
            if c.isUppercase { out += "-" + c.lowercased() } else { out.append(c) }
        }
        return out
    }

    /// The binary (a CRC-32 of its bytes: two builds of different code do not agree) and the world size.
    static func buildAndWorld() -> [(String, String)] {
        [("build", buildIdentity), ("ranks", "\(Launch.size)")]
    }

    static let buildIdentity: String = {
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: "/proc/self/exe"), options: .alwaysMapped) else { return "unknown" }
        return CRC32.hex(data.withUnsafeBytes { CRC32.checksum($0) }) + " (\(data.count) bytes)"
    }()

    /// After every step: the lowest rank that saw a non-finite value and the lowest rank asked to stop, over the world
    /// (two one-number allreduces: microseconds against a step of milliseconds to seconds).
    static func afterStep(_ report: StepReport, on world: MPICommunicator) throws -> StepAgreement {
        let size = Double(world.size), rank = Double(world.rank)
        let (bad, stop) = try world.waiting(in: "the end-of-step agreement (blow-up and stop checks)") {
            (try world.maximum(report.nonFinite == nil ? 0 : size - rank), try world.maximum(report.stopRequested ? size - rank : 0))
        }
        return StepAgreement(nonFiniteRank: bad > 0 ? Int(size - bad) : nil, stopRank: stop > 0 ? Int(size - stop) : nil)
    }
}

/// Bounds on the settings, checked before any arithmetic on them, and the memory a run will take.
enum Limits {
    static let width = 64.0, classes = 1_000_000, batch = 65_536, steps = 1_000_000_000_000, epochs = 1_000_000

    static func check(width w: Double, classes c: Int?, batch b: Int) throws {
        guard w > 0, w.isFinite, w <= width else {
            throw ValidationError("--width must be positive and at most \(Int(width)) (got \(w)); 1 is the paper's network")
        }
        if let c, c < 2 || c > classes { throw ValidationError("--classes must be in 2…\(classes) (got \(c))") }
        guard b >= 1, b <= batch else { throw ValidationError("--batch must be in 1…\(batch) (got \(b))") }
    }

    /// Says what one process will take and refuses (on this rank, which stops the job) a run whose processes on this
    /// node would not fit in its memory.
    static func checkMemory(config: ModelConfig, batch: Int, layout: ReplicaLayout, localTowers: Range<Int>, inputs: Int = 1,
                            say: (String) -> Void) throws {
        let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
        guard let bytes = MemoryBudget.bytes(config: config, maxBatch: batch, layout: layout, localTowers: localTowers, inputs: inputs) else {
            throw AlexNetError("width \(config.width), \(config.classes) classes and a batch of \(batch) need more memory than can be counted; use a smaller --width, --classes or --batch")
        }
        let machine = MemoryBudget.machineBytes
        say("memory: \(MemoryBudget.gigabytes(bytes)) a process for the model and a batch of \(batch)"
            + (local > 1 ? " (× \(local) processes on this node)" : "")
            + (machine.map { " of \(MemoryBudget.gigabytes($0)) on this machine" } ?? ""))
        if let machine, bytes.multipliedReportingOverflow(by: local).partialValue > machine * 9 / 10 || bytes > machine {
            throw AlexNetError("the model and batch need \(MemoryBudget.gigabytes(bytes)) a process"
                               + (local > 1 ? " × \(local) processes" : "") + ", more than 90% of this machine's \(MemoryBudget.gigabytes(machine)); use a smaller --batch or --width, or more nodes")
        }
    }
}
