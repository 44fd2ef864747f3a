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

    /// The binary: a CRC-32 of its bytes (two builds of different code do not agree).
    static let buildIdentity: String = {
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: "/proc/self/exe"), options: .alwaysMapped) else { return "unknown" }
        return CRC32.hex(data.withUnsafeBytes { CRC32.checksum($0) }) + " (\(data.count) bytes)"
    }()
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
}
