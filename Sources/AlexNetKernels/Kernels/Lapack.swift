// LAPACK through OpenBLAS: the eigen-decomposition of a small symmetric matrix (ssyev), for the colour PCA of the
// training images (the RGB covariance's principal components).
import COpenBLAS

public enum Lapack {
    /// Eigenvalues (ascending) and unit eigenvectors of the symmetric 3 × 3 matrix `m` (row-major; only its upper
    /// triangle is read). `vectors` is row-major with the eigenvectors as columns: vectors[i·3 + j] is component i of
    /// the eigenvector of values[j]. Each eigenvector's largest component (by magnitude; the first of equals) is
    /// positive, so the signs do not depend on the LAPACK build. Nil if ssyev fails to converge or `m` is not finite.
    public static func symmetricEigen3(_ m: [Double]) -> (values: [Float], vectors: [Float])? {
        symmetricEigen(m, n: 3)
    }

    /// `symmetricEigen3` for any n × n symmetric matrix (row-major, n² entries).
    public static func symmetricEigen(_ m: [Double], n: Int) -> (values: [Float], vectors: [Float])? {
        precondition(n > 0 && m.count == n * n, "symmetricEigen: \(m.count) entries for n = \(n)")
        guard m.allSatisfy({ $0.isFinite }) else { return nil }
        // Column-major for LAPACK: with uplo 'L' it reads the lower triangle of the column-major array, which is the
        // upper triangle of the row-major one.
        var a = m.map(Float.init), w = [Float](repeating: 0, count: n)
        var order = Int32(n), lda = Int32(n), info: Int32 = 0
        var lwork = Int32(max(1, 3 * n - 1) + 64 * n)   // ≥ 3n − 1 (the minimum); the block size LAPACK prefers is small
        var work = [Float](repeating: 0, count: Int(lwork))
        let jobz: CChar = 0x56, uplo: CChar = 0x4C    // "V": values and vectors; "L"
        // On one thread: OpenBLAS's BLAS calls inside ssyev sum in another order with more threads, and the last bits
        // of the result would depend on how many cores the process was given (one process vs a rank under mpirun).
        let threads = Blas.threads
        Blas.setThreads(1)
        defer { Blas.setThreads(threads) }
        scrubWorkBuffer()
        withUnsafePointer(to: jobz) { jobzPointer in
            withUnsafePointer(to: uplo) { uploPointer in
                ssyev_(jobzPointer, uploPointer, &order, &a, &lda, &w, &work, &lwork, &info, 1, 1)
            }
        }
        guard info == 0 else { return nil }
        // On return column j of the column-major `a` (a[j·n ..< j·n + n]) is the eigenvector of w[j].
        var vectors = [Float](repeating: 0, count: n * n)
        for j in 0..<n {
            let column = a[(j * n)..<(j * n + n)]
            var largest = column.startIndex
            for i in column.indices where abs(column[i]) > abs(column[largest]) { largest = i }
            let sign: Float = column[largest] < 0 ? -1 : 1
            for i in 0..<n { vectors[i * n + j] = sign * a[j * n + i] }
        }
        return (w, vectors)
    }

    /// OpenBLAS's level-2 kernels for some cores (0.3.21's Prescott ones among them) read their shared work buffer as
    /// if it held no NaN (OpenBLAS issue #746). Once a NaN had gone through a BLAS call of the process (in the test
    /// suite, a run that blew up), ssyev returned NaN for a finite matrix. An sgemm of zeros, too large for OpenBLAS's
    /// small-matrix path, first rewrites the start of the buffer that this thread's next call gets.
    static func scrubWorkBuffer() {
        let side = 256
        let zeros = [Float](repeating: 0, count: side * side)
        var product = [Float](repeating: 0, count: side * side)
        zeros.withUnsafeBufferPointer { z in
            product.withUnsafeMutableBufferPointer { p in
                Blas.sgemm(m: side, n: side, k: side, a: z.baseAddress!, lda: side, b: z.baseAddress!, ldb: side,
                           c: p.baseAddress!, ldc: side)
            }
        }
    }
}
