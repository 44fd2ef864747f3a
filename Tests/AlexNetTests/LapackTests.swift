// LAPACK's ssyev through Lapack.symmetricEigen3 (the colour PCA): a matrix made from known eigenpairs, and agreement
// with a plain Jacobi eigen-solver (the one BatchAssembler used before) on random symmetric matrices, and a finite
// answer after NaNs went through an earlier BLAS call of the process.
import AlexNet
import Foundation
import XCTest

final class LapackTests: XCTestCase {
    /// Jacobi rotations on a symmetric 3 × 3 matrix: (eigenvalues, eigenvectors as columns, row-major), unordered.
    static func jacobi(_ m: [Double]) -> ([Double], [Double]) {
        var a = m, v: [Double] = [1, 0, 0, 0, 1, 0, 0, 0, 1]
        for _ in 0..<100 {
            var p = 0, q = 1, largest = abs(a[1])
            if abs(a[2]) > largest { p = 0; q = 2; largest = abs(a[2]) }
            if abs(a[5]) > largest { p = 1; q = 2; largest = abs(a[5]) }
            if largest < 1e-14 { break }
            let theta = (a[q * 3 + q] - a[p * 3 + p]) / (2 * a[p * 3 + q])
            let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
            let c = 1 / (t * t + 1).squareRoot(), s = t * c
            for k in 0..<3 { let x = a[k * 3 + p], y = a[k * 3 + q]; a[k * 3 + p] = c * x - s * y; a[k * 3 + q] = s * x + c * y }
            for k in 0..<3 { let x = a[p * 3 + k], y = a[q * 3 + k]; a[p * 3 + k] = c * x - s * y; a[q * 3 + k] = s * x + c * y }
            for k in 0..<3 { let x = v[k * 3 + p], y = v[k * 3 + q]; v[k * 3 + p] = c * x - s * y; v[k * 3 + q] = s * x + c * y }
        }
        return ([a[0], a[4], a[8]], v)
    }

    func testKnownEigenpairsComeBackAscendingWithPositiveLargestComponents() throws {
        // Q: a rotation (orthonormal columns); M = Q · diag(9, 1, 4) · Qᵀ.
        let s = 1 / 3.0
        let q: [Double] = [2 * s, -s, 2 * s,
                           2 * s, 2 * s, -s,
                           -s, 2 * s, 2 * s]
        let d: [Double] = [9, 1, 4]
        var m = [Double](repeating: 0, count: 9)
        for i in 0..<3 { for j in 0..<3 { for k in 0..<3 { m[i * 3 + j] += q[i * 3 + k] * d[k] * q[j * 3 + k] } } }
        let r = try XCTUnwrap(Lapack.symmetricEigen3(m))
        for (j, want) in [1.0, 4, 9].enumerated() { XCTAssertEqual(Double(r.values[j]), want, accuracy: 1e-5) }
        for (j, column) in [1, 2, 0].enumerated() {   // eigenvalue 1 is Q's column 1, 4 column 2, 9 column 0
            var want = (0..<3).map { q[$0 * 3 + column] }
            if abs(want.min()!) > abs(want.max()!) { want = want.map { -$0 } }   // the largest component positive
            for i in 0..<3 { XCTAssertEqual(Double(r.vectors[i * 3 + j]), want[i], accuracy: 1e-5, "vector \(j) component \(i)") }
        }
        XCTAssertNil(Lapack.symmetricEigen3([1, .nan, 0, .nan, 1, 0, 0, 0, 1]))
    }

    func testAgreesWithJacobiOnRandomSymmetricMatrices() throws {
        for seed in 0..<20 {
            let x = randomFloats(9, seed: UInt64(seed), scale: 30).map(Double.init)
            var m = [Double](repeating: 0, count: 9)   // X·Xᵀ
            for i in 0..<3 { for j in 0..<3 { for k in 0..<3 { m[i * 3 + j] += x[i * 3 + k] * x[j * 3 + k] } } }
            let r = try XCTUnwrap(Lapack.symmetricEigen3(m))
            let (values, vectors) = Self.jacobi(m)
            let order = (0..<3).sorted { values[$0] < values[$1] }
            let scale: Double = values.map { abs($0) }.max()!
            for (j, k) in order.enumerated() {
                XCTAssertEqual(Double(r.values[j]), values[k], accuracy: 1e-5 * scale, "seed \(seed) eigenvalue \(j)")
                let mine = (0..<3).map { Double(r.vectors[$0 * 3 + j]) }, theirs = (0..<3).map { vectors[$0 * 3 + k] }
                let dot = zip(mine, theirs).reduce(0.0) { $0 + $1.0 * $1.1 }
                XCTAssertEqual(abs(dot), 1, accuracy: 1e-3, "seed \(seed) eigenvector \(j) (up to sign)")
            }
        }
    }

    /// OpenBLAS issue #746: its level-2 kernels for some cores read their shared work buffer as if it held no NaN.
    /// An sgemm over NaNs (what a run that blows up does) leaves them in that buffer; ssyev on a finite matrix must
    /// still give the eigenpairs (in the suite it gave NaN after PrefetchTests' blow-up).
    func testAFiniteMatrixAfterNaNsWentThroughBLAS() throws {
        let side = 256
        let nans = [Float](repeating: .nan, count: side * side)
        var product = [Float](repeating: 0, count: side * side)
        let threads = Blas.threads
        Blas.setThreads(1)
        defer { Blas.setThreads(threads) }
        nans.withUnsafeBufferPointer { a in
            product.withUnsafeMutableBufferPointer { c in
                Blas.sgemm(m: side, n: side, k: side, a: a.baseAddress!, lda: side, b: a.baseAddress!, ldb: side,
                           c: c.baseAddress!, ldc: side)
            }
        }
        XCTAssertTrue(product[0].isNaN, "the sgemm did not see the NaNs")
        let m: [Double] = [5466.9, 4096.9, 2732.8, 4096.9, 3412.2, 2048.3, 2732.8, 2048.3, 2730.4]
        let result = try XCTUnwrap(Lapack.symmetricEigen3(m), "ssyev failed on a finite matrix")
        XCTAssertTrue((result.values + result.vectors).allSatisfy { $0.isFinite }, "\(result)")
    }
}
