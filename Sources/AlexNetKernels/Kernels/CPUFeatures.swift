// What this CPU can run, from /proc/cpuinfo's flags (x86 Linux; empty elsewhere): the OpenBLAS core choice and the
// direct convolution's AVX-512 loops both ask here.
import Foundation

public enum CPUFeatures {
    /// This CPU's flags, read once.
    public static let flags: Set<String> = {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }()

    /// The AVX-512 subsets that -target-cpu skylake-avx512 code may use (the kernel lists them only where the OS saves
    /// the vector state).
    public static let avx512Subsets = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]
    public static func hasAVX512(flags: Set<String>) -> Bool { avx512Subsets.allSatisfy(flags.contains) }
    public static var hasAVX512: Bool { hasAVX512(flags: flags) }
}
