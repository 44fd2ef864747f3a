// The OpenBLAS kernel choice: the best core this CPU supports is used when nothing is set, a core forced lower with
// OPENBLAS_CORETYPE is reported with a warning, and bench's limit still uses the best kernels (a low fraction).
import AlexNet
import Foundation
import XCTest

final class BlasKernelTests: XCTestCase {
    func testCoreLevelsAndTheBestCoreForAFlagSet() {
        XCTAssertEqual(BlasKernels.level(ofCore: "Prescott"), .sse)
        XCTAssertEqual(BlasKernels.level(ofCore: "HASWELL"), .avx2)
        XCTAssertEqual(BlasKernels.level(ofCore: "cooperlake"), .avx512)
        XCTAssertNil(BlasKernels.level(ofCore: "armv8"))
        let avx512: Set = ["avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]
        XCTAssertEqual(BlasKernels.bestCore(flags: avx512).core, "SkylakeX")
        XCTAssertEqual(BlasKernels.bestCore(flags: avx512.union(["avx512_bf16"])).core, "Cooperlake")
        XCTAssertEqual(BlasKernels.bestCore(flags: ["avx", "avx2", "fma"]).level, .avx2)
        XCTAssertEqual(BlasKernels.bestCore(flags: ["avx", "avx2"]).level, .avx, "AVX2 without FMA is not Haswell")
        XCTAssertEqual(BlasKernels.bestCore(flags: ["sse3"]).core, "Prescott")
        // conv1's sixteen-lane loops need every subset skylake-avx512 code may use.
        XCTAssertTrue(CPUFeatures.hasAVX512(flags: avx512))
        XCTAssertFalse(CPUFeatures.hasAVX512(flags: avx512.subtracting(["avx512vl"])))
        XCTAssertFalse(CPUFeatures.hasAVX512(flags: ["avx", "avx2", "fma"]))
    }

    /// The kernels named in a start-up or bench line "BLAS: OpenBLAS 0.3.21, NAME kernels …".
    func kernels(in output: String) -> String? {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("BLAS: ") }),
              let comma = line.firstIndex(of: ","), let end = line.range(of: " kernels") else { return nil }
        return String(line[line.index(comma, offsetBy: 2)..<end.lowerBound])
    }

    func fraction(in output: String) -> Double? {
        guard let json = output.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
              let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { return nil }
        return object["fraction_of_sgemm_limit"] as? Double
    }

    func testTheBestKernelsAreUsedAndAForcedLowCoreShowsAsALowFraction() throws {
        let best = BlasKernels.bestCore(flags: BlasKernels.cpuFlags)
        try XCTSkipIf(best.level == .sse, "this CPU has nothing better than the generic kernels")
        let bench = ["bench", "--width", "0.5", "--batch", "32", "--classes", "100", "--steps", "2", "--threads", "2"]
        // The machine's own OPENBLAS_CORETYPE, if it sets one, is the user's choice and is left alone.
        let userChoice = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"]
        let chosen = runProcess(Paths.binary, bench, timeout: 600)
        XCTAssertEqual(chosen.status, 0, chosen.err)
        let used = try XCTUnwrap(kernels(in: chosen.out), chosen.out)
        // The strided convolution's loops are named too: sixteen lanes exactly where the CPU has AVX-512.
        let direct = try XCTUnwrap(chosen.out.split(separator: "\n").first { $0.hasPrefix("strided convolution (conv1): ") }, chosen.out)
        XCTAssertEqual(direct.contains("16-lane AVX-512"), CPUFeatures.hasAVX512(flags: BlasKernels.cpuFlags), String(direct))
        if userChoice == nil {
            XCTAssertEqual(BlasKernels.level(ofCore: used), best.level, "with nothing set the kernels should be \(best.core)-level:\n\(chosen.out)")
        }

        let forced = runProcess(Paths.binary, bench, environment: ["OPENBLAS_CORETYPE": "Prescott"], timeout: 600)
        XCTAssertEqual(forced.status, 0, forced.err)
        XCTAssertEqual(kernels(in: forced.out), "Prescott", forced.out)
        XCTAssertTrue(forced.out.contains("WARNING") && forced.out.contains("OPENBLAS_CORETYPE=Prescott"), forced.out)
        XCTAssertTrue(forced.out.contains("with the best this CPU supports"), "the limit must come from the best kernels:\n\(forced.out)")
        let fast = try XCTUnwrap(fraction(in: chosen.out)), slow = try XCTUnwrap(fraction(in: forced.out))
        // Generic kernels run sgemm several times slower; against the best kernels' limit the fraction must drop.
        XCTAssertLessThan(slow, 0.75 * fast, "forced Prescott: \(slow) of the limit, best kernels: \(fast)")
    }
}
