// Thin Swift face of OpenBLAS: row-major sgemm and the BLAS thread count.
import COpenBLAS

public enum Blas {
    /// C (m, n; ldc) = alpha · op(A) · op(B) + beta · C, all row-major.
    @inline(__always)
    public static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor,
            transA ? CblasTrans : CblasNoTrans,
            transB ? CblasTrans : CblasNoTrans,
            blasint(m), blasint(n), blasint(k),
            alpha, a, blasint(lda), b, blasint(ldb),
            beta, c, blasint(ldc))
    }

    /// Sets the number of threads OpenBLAS uses for every following call.
    public static func setThreads(_ count: Int) {
        openblas_set_num_threads(Int32(max(1, count)))
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// The core whose kernels OpenBLAS runs (e.g. "SkylakeX", "Prescott").
    public static var coreName: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// OpenBLAS's version (e.g. "0.3.21"), from its configuration string.
    public static var version: String {
        guard let c = openblas_get_config() else { return "unknown" }
        let words = String(cString: c).split(separator: " ")
        return words.count > 1 && words[0] == "OpenBLAS" ? String(words[1]) : "unknown"
    }

    /// What OpenBLAS says it was built for and runs on (e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ... SkylakeX MAX_THREADS=64").
    public static var configuration: String {
        guard let c = openblas_get_config() else { return "unknown" }
        let core = openblas_get_corename().map { String(cString: $0) } ?? "?"
        return String(cString: c) + " core=" + core
    }
}
