// Winograd minimal filtering F(m × m, r × r) (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks")
// for the stride-1 layers, forward and backward side by side: conv3–conv5 (F(2 × 2, 3 × 3)) do 2.25× fewer
// multiplications than im2col + sgemm, conv2 (F(4 × 4, 5 × 5)) 6.25× fewer, as α² = (m + r − 1)² sgemms of
// (output channels × input channels × tiles) a chunk of tiles.
//
// Forward, one tile of α × α inputs d and one filter g (r × r):  y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A   (m × m outputs).
// Backward is the exact adjoint of the same linear maps: with dŶ = A dy Aᵀ,
//   dU[ξ] = Σ_tiles dŶ[ξ] · V[ξ]ᵀ  →  dg = Gᵀ dU G,      dV[ξ] = U[ξ]ᵀ · dŶ[ξ]  →  dd += B dV Bᵀ (overlapping tiles add).
// The transforms run on eight tiles at once (one vector lane a tile); the tiles of a chunk are numbered across the
// batch, t = (n · tilesHigh + ty) · tilesWide + tx, and every transformed buffer is (α², rows, tiles of the chunk).

/// The three matrices of F(m, r) from the interpolation points 0, 1, −1, 2, −2, ½, −½ (the first α − 1) and ∞
/// (Toom–Cook: G and A evaluate the filter and the output polynomials there, Bᵀ is the transposed interpolation).
public struct WinogradTransform: Sendable, Equatable {
    public let outputTile: Int    // m
    public let kernel: Int        // r
    public var tile: Int { outputTile + kernel - 1 }   // α
    public let inputTransform: [Float]    // Bᵀ (α, α)
    public let filterTransform: [Float]   // G (α, r)
    public let outputTransform: [Float]   // Aᵀ (m, α)

    public static let points: [Double] = [0, 1, -1, 2, -2, 0.5, -0.5]

    public init(outputTile m: Int, kernel r: Int) {
        let a = m + r - 1
        precondition(m >= 1 && r >= 1 && a - 1 <= Self.points.count, "F(\(m), \(r)) needs more interpolation points")
        outputTile = m; kernel = r
        let p = Array(Self.points.prefix(a - 1))
        func power(_ x: Double, _ k: Int) -> Double { k == 0 ? 1 : (1..<k).reduce(x) { v, _ in v * x } }
        // E (α, α): row j < α − 1 evaluates a polynomial of degree α − 1 at p_j; the last row takes its top coefficient.
        var e = [Double](repeating: 0, count: a * a)
        for j in 0..<(a - 1) { for k in 0..<a { e[j * a + k] = power(p[j], k) } }
        e[a * a - 1] = 1
        let c = Self.inverse(e, size: a)   // C = E⁻¹, and Bᵀ = Cᵀ
        var bt = [Float](repeating: 0, count: a * a)
        for i in 0..<a { for k in 0..<a { bt[i * a + k] = Float(c[k * a + i]) } }
        var g = [Float](repeating: 0, count: a * r), at = [Float](repeating: 0, count: m * a)
        for j in 0..<(a - 1) {
            for k in 0..<r { g[j * r + k] = Float(power(p[j], k)) }
            for k in 0..<m { at[k * a + j] = Float(power(p[j], k)) }
        }
        g[a * r - 1] = 1
        at[m * a - 1] = 1
        inputTransform = bt; filterTransform = g; outputTransform = at
    }

    /// Gauss–Jordan inverse with partial pivoting of a small, well-conditioned matrix.
    static func inverse(_ matrix: [Double], size n: Int) -> [Double] {
        var a = matrix, inv = [Double](repeating: 0, count: n * n)
        for i in 0..<n { inv[i * n + i] = 1 }
        for col in 0..<n {
            let pivot = (col..<n).max { abs(a[$0 * n + col]) < abs(a[$1 * n + col]) }!
            for k in 0..<n { a.swapAt(col * n + k, pivot * n + k); inv.swapAt(col * n + k, pivot * n + k) }
            let d = a[col * n + col]
            for k in 0..<n { a[col * n + k] /= d; inv[col * n + k] /= d }
            for row in 0..<n where row != col {
                let f = a[row * n + col]
                if f == 0 { continue }
                for k in 0..<n { a[row * n + k] -= f * a[col * n + k]; inv[row * n + k] -= f * inv[col * n + k] }
            }
        }
        return inv
    }

    /// The Winograd tile for a stride-1 layer with an r × r kernel, or nil where im2col + sgemm stays. 5 × 5: F(4 × 4)
    /// does 2.25× fewer multiplications than F(2 × 2) and transforms 2.25× less data (`bench-convolutions`, W = 1,
    /// batch 128: conv2 forward + backward 215 against 425 ms on the Emerald Rapids VM); its float32 error is about
    /// twice F(2 × 2)'s, a few 10⁻⁶ of the output (points up to ±2 and ±½, as NNPACK's F(6 × 6, 3 × 3)).
    public static func forKernel(_ r: Int) -> WinogradTransform? {
        switch r {
        case 3: return WinogradTransform(outputTile: 2, kernel: 3)
        case 5: return WinogradTransform(outputTile: 4, kernel: 5)
        default: return nil
        }
    }
}

/// Where a convolution runs as Winograd: where it pays (stride 1 and a known tile: the default), or nowhere (im2col +
/// sgemm for every layer; tests and comparisons).
public enum WinogradUse: String, Sendable, Equatable, CaseIterable {
    case whereItPays = "where-it-pays", never
}

/// The 1-D maps of F(m, r) along one axis, on eight lanes at a time (a lane a tile or a column), written out term by
/// term: a loop over the matrices' entries kept its sums in memory and ran 3–5× slower. x and y are `stride` floats
/// apart from one vector to the next; WinogradConvolutionTests checks each map against `WinogradTransform`'s matrices.
public protocol WinogradAxis {
    static var alpha: Int { get }
    static func inputMap(_ x: UnsafePointer<Float>, _ xStride: Int, _ y: UnsafeMutablePointer<Float>, _ yStride: Int)      // y = Bᵀ x
    static func inputAdjoint(_ x: UnsafePointer<Float>, _ xStride: Int, _ y: UnsafeMutablePointer<Float>, _ yStride: Int)  // y = B x
    static func outputMap(_ x: UnsafePointer<Float>, _ xStride: Int, _ y: UnsafeMutablePointer<Float>, _ yStride: Int)     // y = Aᵀ x (α → m)
    static func outputAdjoint(_ x: UnsafePointer<Float>, _ xStride: Int, _ y: UnsafeMutablePointer<Float>, _ yStride: Int) // y = A x (m → α)
}

/// Vector i of x or y, `stride` floats per vector.
@inline(__always) func loadLanes(_ p: UnsafePointer<Float>, _ i: Int, _ stride: Int) -> WinogradTiles.Vector {
    WinogradTiles.load(p + i * stride)
}
@inline(__always) func storeLanes(_ v: WinogradTiles.Vector, _ p: UnsafeMutablePointer<Float>, _ i: Int, _ stride: Int) {
    WinogradTiles.store(v, p + i * stride)
}

/// F(2 × 2, 3 × 3), α = 4: Bᵀ = [1 0 −1 0; 0 ½ ½ 0; 0 −½ ½ 0; 0 −1 0 1], Aᵀ = [1 1 1 0; 0 1 −1 1].
public enum WinogradF2x3: WinogradAxis {
    public static var alpha: Int { 4 }
    @inline(__always) public static func inputMap(_ x: UnsafePointer<Float>, _ xs: Int, _ y: UnsafeMutablePointer<Float>, _ ys: Int) {
        let x0 = loadLanes(x, 0, xs), x1 = loadLanes(x, 1, xs), x2 = loadLanes(x, 2, xs), x3 = loadLanes(x, 3, xs)
        storeLanes(x0 - x2, y, 0, ys)
        storeLanes(0.5 * (x1 + x2), y, 1, ys)
        storeLanes(0.5 * (x2 - x1), y, 2, ys)
        storeLanes(x3 - x1, y, 3, ys)
    }
    @inline(__always) public static func inputAdjoint(_ x: UnsafePointer<Float>, _ xs: Int, _ y: UnsafeMutablePointer<Float>, _ ys: Int) {
        let x0 = loadLanes(x, 0, xs), x1 = loadLanes(x, 1, xs), x2 = loadLanes(x, 2, xs), x3 = loadLanes(x, 3, xs)
        storeLanes(x0, y, 0, ys)
        storeLanes(0.5 * (x1 - x2) - x3, y, 1, ys)
        storeLanes(0.5 * (x1 + x2) - x0, y, 2, ys)
        storeLanes(x3, y, 3, ys)
    }
    @inline(__always) public static func outputMap(_ x: UnsafePointer<Float>, _ xs: Int, _ y: UnsafeMutablePointer<Float>, _ ys: Int) {
        let x0 = loadLanes(x, 0, xs), x1 = loadLanes(x, 1, xs), x2 = loadLanes(x, 2, xs), x3 = loadLanes(x, 3, xs)
        storeLanes(x0 + x1 + x2, y, 0, ys)
        storeLanes(x1 - x2 + x3, y, 1, ys)
    }
    @inline(__always) public static func outputAdjoint(_ x: UnsafePointer<Float>, _ xs: Int, _ y: UnsafeMutablePointer<Float>, _ ys: Int) {
        let x0 = loadLanes(x, 0, xs), x1 = loadLanes(x, 1, xs)
        storeLanes(x0, y, 0, ys)
        storeLanes(x0 + x1, y, 1, ys)
        storeLanes(x0 - x1, y, 2, ys)
        storeLanes(x1, y, 3, ys)
    }
}

/// F(4 × 4, 5 × 5), α = 8, points 0, ±1, ±2, ±½ and ∞. Rows 2q − 1 and 2q of Bᵀ (points ±p) are e ± o, e and o the
/// sums over the even and odd inputs: Bᵀ's rows are [1 0 −21/4 0 21/4 0 −1 0], [0 −2/9 −2/9 17/18 17/18 −2/9 −2/9 0],
/// [0 2/9 −2/9 −17/18 17/18 2/9 −2/9 0], [0 1/180 1/360 −1/36 −1/72 1/45 1/90 0], [0 −1/180 1/360 1/36 −1/72 −1/45 1/90 0],
/// [0 64/45 128/45 −16/9 −32/9 16/45 32/45 0], [0 −64/45 128/45 16/9 −32/9 −16/45 32/45 0], [0 −1 0 21/4 0 −21/4 0 1];
/// Aᵀ's row k holds p^k at each point p (and 1 at ∞ in the last row).
public enum WinogradF4x5: WinogradAxis {
    public static var alpha: Int { 8 }
    static let twoNinths: Float = 2 / 9, seventeenEighteenths: Float = 17 / 18
    static let c180: Float = 1 / 180, c360: Float = 1 / 360, c36: Float = 1 / 36, c72: Float = 1 / 72, c45: Float = 1 / 45
    static let c90: Float = 1 / 90
    static let c64_45: Float = 64 / 45, c128_45: Float = 128 / 45, c16_9: Float = 16 / 9, c32_9: Float = 32 / 9
    static let c16_45: Float = 16 / 45, c32_45: Float = 32 / 45
    @inline(__always) public static func inputMap(_ x: UnsafePointer<Float>, _ xs: Int, _ y: UnsafeMutablePointer<Float>, _ ys: Int) {
        let x0 = loadLanes(x, 0, xs), x1 = loadLanes(x, 1, xs), x2 = loadLanes(x, 2, xs), x3 = loadLanes(x, 3, xs)
        let x4 = loadLanes(x, 4, xs), x5 = loadLanes(x, 5, xs), x6 = loadLanes(x, 6, xs), x7 = loadLanes(x, 7, xs)
        storeLanes(x0 - x6 + 5.25 * (x4 - x2), y, 0, ys)
        let e1 = seventeenEighteenths * x4 - twoNinths * (x2 + x6), o1 = seventeenEighteenths * x3 - twoNinths * (x1 + x5)
        storeLanes(e1 + o1, y, 1, ys)
        storeLanes(e1 - o1, y, 2, ys)
        let e3 = c360 * x2 - c72 * x4 + c90 * x6, o3 = c180 * x1 - c36 * x3 + c45 * x5
        storeLanes(e3 + o3, y, 3, ys)
        storeLanes(e3 - o3, y, 4, ys)
        let e5 = c128_45 * x2 - c32_9 * x4 + c32_45 * x6, o5 = c64_45 * x1 - c16_9 * x3 + c16_45 * x5
        storeLanes(e5 + o5, y, 5, ys)
        storeLanes(e5 - o5, y, 6, ys)
        storeLanes(x7 - x1 + 5.25 * (x3 - x5), y, 7, ys)
    }
    @inline(__always) public static func inputAdjoint(_ x: UnsafePointer<Float>, _ xs: Int, _ y: UnsafeMutablePointer<Float>, _ ys: Int) {
        let x0 = loadLanes(x, 0, xs), x1 = loadLanes(x, 1, xs), x2 = loadLanes(x, 2, xs), x3 = loadLanes(x, 3, xs)
        let x4 = loadLanes(x, 4, xs), x5 = loadLanes(x, 5, xs), x6 = loadLanes(x, 6, xs), x7 = loadLanes(x, 7, xs)
        let s1 = x1 + x2, d1 = x1 - x2, s3 = x3 + x4, d3 = x3 - x4, s5 = x5 + x6, d5 = x5 - x6
        storeLanes(x0, y, 0, ys)
        storeLanes(c180 * d3 + c64_45 * d5 - twoNinths * d1 - x7, y, 1, ys)
        storeLanes(c360 * s3 + c128_45 * s5 - twoNinths * s1 - 5.25 * x0, y, 2, ys)
        storeLanes(seventeenEighteenths * d1 - c36 * d3 - c16_9 * d5 + 5.25 * x7, y, 3, ys)
        storeLanes(5.25 * x0 + seventeenEighteenths * s1 - c72 * s3 - c32_9 * s5, y, 4, ys)
        storeLanes(c45 * d3 + c16_45 * d5 - twoNinths * d1 - 5.25 * x7, y, 5, ys)
        storeLanes(c90 * s3 + c32_45 * s5 - twoNinths * s1 - x0, y, 6, ys)
        storeLanes(x7, y, 7, ys)
    }
    @inline(__always) public static func outputMap(_ x: UnsafePointer<Float>, _ xs: Int, _ y: UnsafeMutablePointer<Float>, _ ys: Int) {
        let x0 = loadLanes(x, 0, xs), x1 = loadLanes(x, 1, xs), x2 = loadLanes(x, 2, xs), x3 = loadLanes(x, 3, xs)
        let x4 = loadLanes(x, 4, xs), x5 = loadLanes(x, 5, xs), x6 = loadLanes(x, 6, xs), x7 = loadLanes(x, 7, xs)
        let s1 = x1 + x2, d1 = x1 - x2, s3 = x3 + x4, d3 = x3 - x4, s5 = x5 + x6, d5 = x5 - x6
        storeLanes(x0 + s1 + s3 + s5, y, 0, ys)
        storeLanes(d1 + 2 * d3 + 0.5 * d5, y, 1, ys)
        storeLanes(s1 + 4 * s3 + 0.25 * s5, y, 2, ys)
        storeLanes(d1 + 8 * d3 + 0.125 * d5 + x7, y, 3, ys)
    }
    @inline(__always) public static func outputAdjoint(_ x: UnsafePointer<Float>, _ xs: Int, _ y: UnsafeMutablePointer<Float>, _ ys: Int) {
        let x0 = loadLanes(x, 0, xs), x1 = loadLanes(x, 1, xs), x2 = loadLanes(x, 2, xs), x3 = loadLanes(x, 3, xs)
        storeLanes(x0, y, 0, ys)
        let e1 = x0 + x2, o1 = x1 + x3
        storeLanes(e1 + o1, y, 1, ys)
        storeLanes(e1 - o1, y, 2, ys)
        let e3 = x0 + 4 * x2, o3 = 2 * x1 + 8 * x3
        storeLanes(e3 + o3, y, 3, ys)
        storeLanes(e3 - o3, y, 4, ys)
        let e5 = x0 + 0.25 * x2, o5 = 0.5 * x1 + 0.125 * x3
        storeLanes(e5 + o5, y, 5, ys)
        storeLanes(e5 - o5, y, 6, ys)
        storeLanes(x3, y, 7, ys)
    }
}

/// The tiles of a stride-1 layer and the transforms between feature maps and the Winograd domain, a row of tiles at a
/// time and all in vectors. m = 2: the transform along y runs on whole padded rows (16 columns at a time), the one
/// along x on their even and odd columns (8 lanes over the tiles of the row, in one or two halves: up to 16 tiles,
/// outputs ≤ 32 wide). m = 4: one vector of up to 8 tiles a row (outputs ≤ 32 wide); along y on 32 columns at a
/// time, along x on their four phases (columns 4l + p). Each transform dispatches once on α to code written for its
/// tile (`WinogradAxis`).
struct WinogradTiles {
    typealias Vector = SIMD8<Float>      // one lane a tile of (half) a row
    typealias Row = SIMD16<Float>        // one lane a column of a row
    static let lanes = 8
    static let rowFloats = 48            // a padded row buffer: columns −pad …, three rows of 16 lanes
    let geometry: ConvGeometry
    let alpha: Int
    let outputTile: Int                  // m
    let tilesHigh: Int, tilesWide: Int
    let halves: Int                      // vectors of tiles a row
    var tilesPerImage: Int { tilesHigh * tilesWide }
    let unusedColumns: [SIMDMask<SIMD16<Int32>>]   // m = 2, of each half: the columns of tiles past the row's end
    let unusedLanes: SIMDMask<SIMD8<Int32>>        // m = 4: the lanes past the row's tiles

    /// Whether a layer of this geometry can run: stride 1; F(2 × 2, 3 × 3) and a row of tiles in two vectors, or
    /// F(4 × 4, 5 × 5) and a row of tiles in one (every tap inside a row buffer's first 36 columns).
    static func supports(_ g: ConvGeometry, _ w: WinogradTransform) -> Bool {
        guard g.stride == 1 else { return false }
        switch (w.outputTile, w.kernel) {
        case (2, 3): return (g.outputWidth + 1) / 2 <= 2 * lanes && g.inputWidth + 2 * g.pad <= 32
        case (4, 5): return (g.outputWidth + 3) / 4 <= lanes && g.inputWidth + 2 * g.pad <= 36
        default: return false
        }
    }

    init(geometry g: ConvGeometry, transform: WinogradTransform) {
        precondition(Self.supports(g, transform))
        geometry = g
        alpha = transform.tile
        let m = transform.outputTile
        outputTile = m
        tilesHigh = (g.outputHeight + m - 1) / m
        tilesWide = (g.outputWidth + m - 1) / m
        halves = (tilesWide + Self.lanes - 1) / Self.lanes
        unusedColumns = m == 2 ? (0..<halves).map { [tilesWide] half in Self.columnMask(firstTile: Self.lanes * half, tiles: tilesWide) } : []
        unusedLanes = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7) .>= SIMD8<Int32>(repeating: Int32(tilesWide))
    }
    static func roundUp(_ n: Int) -> Int { (n + lanes - 1) / lanes * lanes }

    /// The chunk column of the first tile of row `row` of image `image` (images numbered in the batch).
    @inline(__always) func firstTile(image: Int, row: Int, of images: Range<Int>) -> Int {
        ((image - images.lowerBound) * tilesHigh + row) * tilesWide
    }

    /// Runs body(offset of the image in its plane, tile row, chunk column of the row's first tile) for every tile row
    /// of `images`, image by image.
    @inline(__always) func forEachTileRow(of images: Range<Int>, imageStride: Int, _ body: (Int, Int, Int) -> Void) {
        for n in images { for ty in 0..<tilesHigh { body(n * imageStride, ty, firstTile(image: n, row: ty, of: images)) } }
    }

    /// Floats of scratch one thread's transforms need (the largest of the four's layouts, given in each).
    var scratchFloats: Int {
        let a = alpha, R = Self.rowFloats, L = Self.lanes
        if outputTile == 4 { return max(a * R + 32 * a + a * a * L, 32 * a + 4 * L + 128, 4 * R + 32 * a + 4 * L, 2 * a * R + a * L + 32) }
        return max(a * R + 2 * a * L + a * a * L, 16 * a + 2 * L + 32, 2 * R + 16 * a + 2 * L, 2 * a * R + a * L)
    }

    /// The four phases of 32 floats: lane l of phase p is x[4l + p].
    @inline(__always) static func phases(_ x: UnsafePointer<Float>) -> (Vector, Vector, Vector, Vector) {
        let a = loadRow(x), b = loadRow(x + 16)
        let even = Row(lowHalf: a.evenHalf, highHalf: b.evenHalf), odd = Row(lowHalf: a.oddHalf, highHalf: b.oddHalf)
        return (even.evenHalf, odd.evenHalf, even.oddHalf, odd.oddHalf)
    }
    /// Rows firstRow ..< firstRow + count of a height × width plane into row buffers `stride` apart (zeros for the
    /// rows outside the plane).
    @inline(__always) static func gatherRows(_ image: UnsafePointer<Float>, height: Int, width: Int, firstRow: Int, count: Int,
                                             into rows: UnsafeMutablePointer<Float>, stride: Int) {
        for i in 0..<count {
            let y = firstRow + i, row = rows + i * stride
            if y >= 0 && y < height { row.update(from: image + y * width, count: width) } else { row.update(repeating: 0, count: width) }
        }
    }
    /// Adds row buffers `stride` apart to rows firstRow ..< firstRow + count of a height × width plane, skipping the
    /// rows outside it.
    @inline(__always) static func addRows(_ rows: UnsafePointer<Float>, stride: Int, count: Int, firstRow: Int,
                                          into image: UnsafeMutablePointer<Float>, height: Int, width: Int) {
        for i in 0..<count {
            let y = firstRow + i
            guard y >= 0 && y < height else { continue }
            let src = rows + i * stride, dst = image + y * width
            for x in 0..<width { dst[x] += src[x] }
        }
    }
    /// dst[x] = src[x] + bias, clamped at 0 if `relu`, for x < count.
    @inline(__always) static func putRow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count: Int, bias: Float, relu: Bool) {
        if relu { for x in 0..<count { dst[x] = max(src[x] + bias, 0) } } else { for x in 0..<count { dst[x] = src[x] + bias } }
    }

    /// The inverse of `phases`: out[4l + p] = phase p's lane l, 32 floats.
    @inline(__always) static func interleave(_ p0: Vector, _ p1: Vector, _ p2: Vector, _ p3: Vector, into out: UnsafeMutablePointer<Float>) {
        var even = Row(), odd = Row(), a = Row(), b = Row()
        even.evenHalf = p0; even.oddHalf = p2; odd.evenHalf = p1; odd.oddHalf = p3
        a.evenHalf = even.lowHalf; a.oddHalf = odd.lowHalf; b.evenHalf = even.highHalf; b.oddHalf = odd.highHalf
        storeRow(a, out); storeRow(b, out + 16)
    }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> Vector { UnsafeRawPointer(p).loadUnaligned(as: Vector.self) }
    @inline(__always) static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }
    @inline(__always) static func loadRow(_ p: UnsafePointer<Float>) -> Row { UnsafeRawPointer(p).loadUnaligned(as: Row.self) }
    @inline(__always) static func storeRow(_ v: Row, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Row.self)
    }

    /// V (α², ·, ld) at `rowStride` per ξ = Bᵀ d B of the α × α inputs of every tile of `images` (one channel, images
    /// `imageStride` apart), zero outside the image (the padding); tile t of the chunk at column t. Writes whole
    /// vectors: a row of tiles may spill into the next one, written after it, and ld leaves a vector of room at the end.
    func transformInput(_ plane: UnsafePointer<Float>, imageStride: Int, images: Range<Int>,
                        into v: UnsafeMutablePointer<Float>, rowStride: Int, scratch: UnsafeMutablePointer<Float>) {
        switch alpha {
        case 4: transformInput(WinogradF2x3.self, plane, imageStride: imageStride, images: images, into: v, rowStride: rowStride, scratch: scratch)
        default: transformInputFour(WinogradF4x5.self, plane, imageStride: imageStride, images: images, into: v, rowStride: rowStride, scratch: scratch)
        }
    }
    @inline(__always)
    private func transformInput<K: WinogradAxis>(_: K.Type, _ plane: UnsafePointer<Float>, imageStride: Int, images: Range<Int>,
                                                 into v: UnsafeMutablePointer<Float>, rowStride: Int, scratch: UnsafeMutablePointer<Float>) {
        let g = geometry, W = g.inputWidth, R = Self.rowFloats, a = K.alpha, L = Self.lanes
        let rows = scratch, columns = rows + a * R, taps = columns + 2 * a * L   // columns: (α, 16), taps: (α, α, 8)
        rows.update(repeating: 0, count: a * R)     // the padding columns stay zero
        forEachTileRow(of: images, imageStride: imageStride) { offset, ty, first in
            let image = plane + offset
            Self.gatherRows(image, height: g.inputHeight, width: W, firstRow: 2 * ty - g.pad, count: a, into: rows + g.pad, stride: R)
            for h in 0..<halves {
                // along y: T[k] = Σ_i Bᵀ[k, i] · row i from column 16h + 2s; tile tx of the half reads its taps
                // j = 2s, 2s + 1 as the even and odd columns
                for shift in 0..<((a + 1) / 2) {
                    let from = rows + 16 * h + 2 * shift
                    K.inputMap(from, R, columns, 16)
                    K.inputMap(from + L, R, columns + L, 16)
                    for k in 0..<a {
                        let t = Self.loadRow(columns + 16 * k)
                        Self.store(t.evenHalf, taps + (k * a + 2 * shift) * L)
                        if 2 * shift + 1 < a { Self.store(t.oddHalf, taps + (k * a + 2 * shift + 1) * L) }
                    }
                }
                // along x: V[k, b](tx) = Σ_j Bᵀ[b, j] · T[k](2tx + j)
                for k in 0..<a {
                    K.inputMap(taps + k * a * L, L, v + k * a * rowStride + first + L * h, rowStride)
                }
            }
        }
    }

    /// Rows of one output channel from Ŷ (α², ·, ld) at `rowStride` per ξ: y = Aᵀ Ŷ A + bias, clamped at 0 if `relu`,
    /// cropped to the output plane (images `imageStride` apart).
    func transformOutput(_ yHat: UnsafePointer<Float>, rowStride: Int, images: Range<Int>, bias: Float, relu: Bool,
                         into plane: UnsafeMutablePointer<Float>, imageStride: Int, scratch: UnsafeMutablePointer<Float>) {
        switch alpha {
        case 4: transformOutput(WinogradF2x3.self, yHat, rowStride: rowStride, images: images, bias: bias, relu: relu,
                            into: plane, imageStride: imageStride, scratch: scratch)
        default: transformOutputFour(WinogradF4x5.self, yHat, rowStride: rowStride, images: images, bias: bias, relu: relu,
                            into: plane, imageStride: imageStride, scratch: scratch)
        }
    }
    @inline(__always)
    private func transformOutput<K: WinogradAxis>(_: K.Type, _ yHat: UnsafePointer<Float>, rowStride: Int, images: Range<Int>,
                                                  bias: Float, relu: Bool, into plane: UnsafeMutablePointer<Float>,
                                                  imageStride: Int, scratch: UnsafeMutablePointer<Float>) {
        let g = geometry, outW = g.outputWidth, a = K.alpha, L = Self.lanes
        let z = scratch, pair = z + 16 * a, out = pair + 2 * L     // z: (α, 16) columns, pair: (2, 8), out: (2, 16)
        forEachTileRow(of: images, imageStride: imageStride) { offset, ty, first in
            let image = plane + offset
            for h in 0..<halves {
                for k in 0..<a {
                    // along x: Z[k](2tx + j) = Σ_b Aᵀ[j, b] · Ŷ[k, b](tx), j = 0, 1 the even and odd columns
                    K.outputMap(yHat + k * a * rowStride + first + L * h, rowStride, pair, L)
                    var row = Row()
                    row.evenHalf = Self.load(pair); row.oddHalf = Self.load(pair + L)
                    Self.storeRow(row, z + 16 * k)
                }
                // along y: out[i] = Σ_k Aᵀ[i, k] · Z[k]
                K.outputMap(z, 16, out, 16)
                K.outputMap(z + L, 16, out + L, 16)
                let x0 = 16 * h, width = min(16, outW - x0)
                for i in 0..<min(2, g.outputHeight - 2 * ty) {
                    Self.putRow(out + 16 * i, image + (2 * ty + i) * outW + x0, count: width, bias: bias, relu: relu)
                }
            }
        }
    }

    /// dŶ (α², ·, ld) at `rowStride` per ξ = A dy Aᵀ of every tile's 2 × 2 output gradients (zero where cropped).
    func transformOutputGradient(_ plane: UnsafePointer<Float>, imageStride: Int, images: Range<Int>,
                                 into dyHat: UnsafeMutablePointer<Float>, rowStride: Int, scratch: UnsafeMutablePointer<Float>) {
        switch alpha {
        case 4: transformOutputGradient(WinogradF2x3.self, plane, imageStride: imageStride, images: images, into: dyHat,
                                    rowStride: rowStride, scratch: scratch)
        default: transformOutputGradientFour(WinogradF4x5.self, plane, imageStride: imageStride, images: images, into: dyHat,
                                    rowStride: rowStride, scratch: scratch)
        }
    }
    @inline(__always)
    private func transformOutputGradient<K: WinogradAxis>(_: K.Type, _ plane: UnsafePointer<Float>, imageStride: Int,
                                                          images: Range<Int>, into dyHat: UnsafeMutablePointer<Float>,
                                                          rowStride: Int, scratch: UnsafeMutablePointer<Float>) {
        let g = geometry, outW = g.outputWidth, R = Self.rowFloats, a = K.alpha, L = Self.lanes
        let rows = scratch, columns = rows + 2 * R, phases = columns + 16 * a   // columns: (α, 16), phases: (2, 8)
        rows.update(repeating: 0, count: 2 * R)      // the columns past the output stay zero
        forEachTileRow(of: images, imageStride: imageStride) { offset, ty, first in
            let image = plane + offset
            Self.gatherRows(image, height: g.outputHeight, width: outW, firstRow: 2 * ty, count: 2, into: rows, stride: R)
            for h in 0..<halves {
                // along y: T[k] = Σ_i A[k, i] · dy row i  (A = (Aᵀ)ᵀ), columns 16h …
                K.outputAdjoint(rows + 16 * h, R, columns, 16)
                K.outputAdjoint(rows + 16 * h + L, R, columns + L, 16)
                for k in 0..<a {
                    // along x: dŶ[k, b](tx) = Σ_j A[b, j] · T[k](2tx + j)
                    let t = Self.loadRow(columns + 16 * k)
                    Self.store(t.evenHalf, phases); Self.store(t.oddHalf, phases + L)
                    K.outputAdjoint(phases, L, dyHat + k * a * rowStride + first + L * h, rowStride)
                }
            }
        }
    }

    /// Adds B dV Bᵀ of every tile to the input gradient plane (images `imageStride` apart), skipping the padding.
    func addInputGradient(_ dv: UnsafePointer<Float>, rowStride: Int, images: Range<Int>,
                          into plane: UnsafeMutablePointer<Float>, imageStride: Int, scratch: UnsafeMutablePointer<Float>) {
        switch alpha {
        case 4: addInputGradient(WinogradF2x3.self, dv, rowStride: rowStride, images: images, into: plane, imageStride: imageStride,
                             scratch: scratch)
        default: addInputGradientFour(WinogradF4x5.self, dv, rowStride: rowStride, images: images, into: plane, imageStride: imageStride,
                             scratch: scratch)
        }
    }
    @inline(__always)
    private func addInputGradient<K: WinogradAxis>(_: K.Type, _ dv: UnsafePointer<Float>, rowStride: Int, images: Range<Int>,
                                                   into plane: UnsafeMutablePointer<Float>, imageStride: Int,
                                                   scratch: UnsafeMutablePointer<Float>) {
        let g = geometry, W = g.inputWidth, R = Self.rowFloats, a = K.alpha, L = Self.lanes
        let z = scratch, out = z + a * R, taps = out + a * R    // z, out: (α, R); taps: (α, 8)
        let unused = unusedColumns
        forEachTileRow(of: images, imageStride: imageStride) { offset, ty, first in
            let image = plane + offset
            z.update(repeating: 0, count: a * R)
            for k in 0..<a {
                for h in 0..<halves {
                    // along x: G[j](tx) = Σ_b B[j, b] · dV[k, b](tx) (B = (Bᵀ)ᵀ); Z[k](2tx + j) sums the tiles'
                    // G[j]: taps 2s, 2s + 1 at columns 16h + 2s + (even, odd), the tiles overlapping
                    K.inputAdjoint(dv + k * a * rowStride + first + L * h, rowStride, taps, L)
                    for shift in 0..<((a + 1) / 2) {
                        var pair = Row()
                        pair.evenHalf = Self.load(taps + 2 * shift * L)
                        if 2 * shift + 1 < a { pair.oddHalf = Self.load(taps + (2 * shift + 1) * L) }
                        // lanes past the row's tiles hold another row's values
                        pair = pair.replacing(with: 0, where: unused[h])
                        let p = z + k * R + 16 * h + 2 * shift
                        Self.storeRow(Self.loadRow(p) + pair, p)
                    }
                }
            }
            // along y: out[i] = Σ_k B[i, k] · Z[k], over the row buffer's columns
            for block in stride(from: 0, to: R, by: L) { K.inputAdjoint(z + block, R, out + block, R) }
            Self.addRows(out + g.pad, stride: R, count: a, firstRow: 2 * ty - g.pad, into: image, height: g.inputHeight, width: W)
        }
    }

    // m = 4: tile l of a row reads its tap j at padded column 4l + j, which is phase j mod 4 of the 32 columns from
    // 4·⌊j / 4⌋; one vector of tiles a row.

    /// `transformInput` for m = 4.
    @inline(__always)
    private func transformInputFour<K: WinogradAxis>(_: K.Type, _ plane: UnsafePointer<Float>, imageStride: Int, images: Range<Int>,
                                                     into v: UnsafeMutablePointer<Float>, rowStride: Int, scratch: UnsafeMutablePointer<Float>) {
        let g = geometry, W = g.inputWidth, R = Self.rowFloats, a = K.alpha, L = Self.lanes
        let rows = scratch, columns = rows + a * R, taps = columns + 32 * a   // rows (α, R), columns (α, 32), taps (α, α, 8)
        rows.update(repeating: 0, count: a * R)     // the padding columns stay zero
        forEachTileRow(of: images, imageStride: imageStride) { offset, ty, first in
            let image = plane + offset
            Self.gatherRows(image, height: g.inputHeight, width: W, firstRow: 4 * ty - g.pad, count: a, into: rows + g.pad, stride: R)
            for shift in 0..<(a / 4) {
                // along y: T[k] = Σ_i Bᵀ[k, i] · row i, the 32 columns from 4·shift; tile l's taps 4·shift + p are
                // their phases p
                for block in 0..<4 { K.inputMap(rows + 4 * shift + L * block, R, columns + L * block, 32) }
                for k in 0..<a {
                    let (p0, p1, p2, p3) = Self.phases(columns + 32 * k), t = taps + (k * a + 4 * shift) * L
                    Self.store(p0, t); Self.store(p1, t + L); Self.store(p2, t + 2 * L); Self.store(p3, t + 3 * L)
                }
            }
            // along x: V[k, b](tx) = Σ_j Bᵀ[b, j] · T[k](4tx + j)
            for k in 0..<a { K.inputMap(taps + k * a * L, L, v + k * a * rowStride + first, rowStride) }
        }
    }

    /// `transformOutput` for m = 4.
    @inline(__always)
    private func transformOutputFour<K: WinogradAxis>(_: K.Type, _ yHat: UnsafePointer<Float>, rowStride: Int, images: Range<Int>,
                                                      bias: Float, relu: Bool, into plane: UnsafeMutablePointer<Float>,
                                                      imageStride: Int, scratch: UnsafeMutablePointer<Float>) {
        let g = geometry, outW = g.outputWidth, a = K.alpha, L = Self.lanes
        let z = scratch, phases = z + 32 * a, out = phases + 4 * L     // z: (α, 32) columns, phases: (4, 8), out: (4, 32)
        forEachTileRow(of: images, imageStride: imageStride) { offset, ty, first in
            let image = plane + offset
            for k in 0..<a {
                // along x: Z[k](4tx + j) = Σ_b Aᵀ[j, b] · Ŷ[k, b](tx)
                K.outputMap(yHat + k * a * rowStride + first, rowStride, phases, L)
                Self.interleave(Self.load(phases), Self.load(phases + L), Self.load(phases + 2 * L), Self.load(phases + 3 * L),
                                into: z + 32 * k)
            }
            // along y: out[i] = Σ_k Aᵀ[i, k] · Z[k]
            for block in 0..<4 { K.outputMap(z + L * block, 32, out + L * block, 32) }
            for i in 0..<min(4, g.outputHeight - 4 * ty) {
                Self.putRow(out + 32 * i, image + (4 * ty + i) * outW, count: outW, bias: bias, relu: relu)
            }
        }
    }

    /// `transformOutputGradient` for m = 4.
    @inline(__always)
    private func transformOutputGradientFour<K: WinogradAxis>(_: K.Type, _ plane: UnsafePointer<Float>, imageStride: Int,
                                                              images: Range<Int>, into dyHat: UnsafeMutablePointer<Float>,
                                                              rowStride: Int, scratch: UnsafeMutablePointer<Float>) {
        let g = geometry, outW = g.outputWidth, R = Self.rowFloats, a = K.alpha, L = Self.lanes
        let rows = scratch, columns = rows + 4 * R, phases = columns + 32 * a   // rows (4, R), columns (α, 32), phases (4, 8)
        rows.update(repeating: 0, count: 4 * R)      // the columns past the output stay zero
        forEachTileRow(of: images, imageStride: imageStride) { offset, ty, first in
            let image = plane + offset
            Self.gatherRows(image, height: g.outputHeight, width: outW, firstRow: 4 * ty, count: 4, into: rows, stride: R)
            // along y: T[k] = Σ_i A[k, i] · dy row i, 32 columns
            for block in 0..<4 { K.outputAdjoint(rows + L * block, R, columns + L * block, 32) }
            for k in 0..<a {
                // along x: dŶ[k, b](tx) = Σ_j A[b, j] · T[k](4tx + j)
                let (p0, p1, p2, p3) = Self.phases(columns + 32 * k)
                Self.store(p0, phases); Self.store(p1, phases + L); Self.store(p2, phases + 2 * L); Self.store(p3, phases + 3 * L)
                K.outputAdjoint(phases, L, dyHat + k * a * rowStride + first, rowStride)
            }
        }
    }

    /// `addInputGradient` for m = 4.
    @inline(__always)
    private func addInputGradientFour<K: WinogradAxis>(_: K.Type, _ dv: UnsafePointer<Float>, rowStride: Int, images: Range<Int>,
                                                       into plane: UnsafeMutablePointer<Float>, imageStride: Int,
                                                       scratch: UnsafeMutablePointer<Float>) {
        let g = geometry, W = g.inputWidth, R = Self.rowFloats, a = K.alpha, L = Self.lanes
        let z = scratch, out = z + a * R, taps = out + a * R, spread = taps + a * L   // z, out: (α, R); taps: (α, 8); spread: 32
        let unused = unusedLanes
        forEachTileRow(of: images, imageStride: imageStride) { offset, ty, first in
            let image = plane + offset
            z.update(repeating: 0, count: a * R)
            for k in 0..<a {
                // along x: G[j](tx) = Σ_b B[j, b] · dV[k, b](tx); Z[k](4tx + j) sums the tiles' G[j] (they overlap):
                // taps 4·shift + p are phase p of the 32 columns from 4·shift
                K.inputAdjoint(dv + k * a * rowStride + first, rowStride, taps, L)
                for shift in 0..<(a / 4) {
                    // lanes past the row's tiles hold another row's values
                    @inline(__always) func tap(_ p: Int) -> Vector { Self.load(taps + (4 * shift + p) * L).replacing(with: 0, where: unused) }
                    Self.interleave(tap(0), tap(1), tap(2), tap(3), into: spread)
                    let row = z + k * R + 4 * shift
                    Self.storeRow(Self.loadRow(row) + Self.loadRow(spread), row)
                    Self.storeRow(Self.loadRow(row + 16) + Self.loadRow(spread + 16), row + 16)
                }
            }
            // along y: out[i] = Σ_k B[i, k] · Z[k], over the row buffer's columns
            for block in stride(from: 0, to: R, by: L) { K.inputAdjoint(z + block, R, out + block, R) }
            Self.addRows(out + g.pad, stride: R, count: a, firstRow: 4 * ty - g.pad, into: image, height: g.inputHeight, width: W)
        }
    }

    /// The columns (2tx + j, 16 lanes) of a half whose tile firstTile + tx is past the row's `tiles`.
    static func columnMask(firstTile: Int, tiles: Int) -> SIMDMask<SIMD16<Int32>> {
        var lane = SIMD16<Int32>()
        for q in 0..<16 { lane[q] = Int32(firstTile + q / 2) }
        return lane .>= SIMD16<Int32>(repeating: Int32(tiles))
    }
}

extension Convolution {
    /// The Winograd transform this layer runs with (stride 1 and a kernel `WinogradTransform.forKernel` knows), or nil.
    /// It pays at every width: with the written-out transforms, `bench-convolutions` (one thread, batch 64 or 128, the
    /// Emerald Rapids VM) gave conv3–conv5 forward + backward in 0.49–0.76× im2col's time from W = 1/16 (3 input
    /// channels to conv2) to W = 1, and conv2 as F(4 × 4, 5 × 5) 0.37× at W = 1 and 0.46–0.48× at W = 1/16 and 1/4.
    /// With the loops over the matrices' entries it took 48 input channels.
    public var winograd: WinogradTransform? {
        guard winogradUse != .never, geometry.stride == 1,
              let w = WinogradTransform.forKernel(geometry.kernel), WinogradTiles.supports(geometry, w) else { return nil }
        return w
    }

    /// Images a Winograd chunk covers: about the column budget ÷ 256 tiles (512 by default, at least one image): enough
    /// columns for an efficient sgemm, few enough for the transformed chunk to stay near the caches.
    func winogradImagesPerChunk(batch: Int, tiles: WinogradTiles) -> Int {
        max(1, min(batch, columnBudget / 256 / tiles.tilesPerImage))
    }
    /// Columns of a transformed chunk's rows: its tiles, and a vector of room for the transforms' whole-vector writes.
    func winogradLeadingDimension(batch: Int, tiles: WinogradTiles) -> Int {
        WinogradTiles.roundUp(winogradImagesPerChunk(batch: batch, tiles: tiles) * tiles.tilesPerImage) + WinogradTiles.lanes
    }

    /// Floats that keep this layer's transformed inputs V from forward to backward for a batch (0 without Winograd):
    /// every chunk's V (α², Cin, ld) of every group, in the order the forward writes them. With them the backward
    /// skips its input transform (as much time as the forward's).
    public func keptInputSize(batch: Int) -> Int {
        guard let w = winograd else { return 0 }
        let tiles = WinogradTiles(geometry: geometry, transform: w), perChunk = winogradImagesPerChunk(batch: batch, tiles: tiles)
        return keptOffset(chunk: (batch + perChunk - 1) / perChunk, group: 0, tile: w.tile,
                          ld: winogradLeadingDimension(batch: batch, tiles: tiles))
    }

    /// Where chunk `chunk`'s V of group `group` starts in the kept buffer (the forward writes, the backward reads).
    private func keptOffset(chunk: Int, group: Int, tile: Int, ld: Int) -> Int {
        (chunk * winogradGroups().count + group) * tile * tile * inputChannelsPerPart * ld
    }

    /// Floats of scratch each of the two column buffers needs for the Winograd path (0 without it): forward, col
    /// holds U, V and Ŷ; backward, col holds U, V and dU, and colGradient dŶ and dV (and a vector of slack: the
    /// transforms read whole vectors of tiles).
    func winogradScratch(batch: Int) -> Int {
        guard let w = winograd else { return 0 }
        let a2 = w.tile * w.tile, ld = winogradLeadingDimension(batch: batch, tiles: WinogradTiles(geometry: geometry, transform: w))
        let weights = a2 * outputChannels * inputChannelsPerPart, transformed = a2 * (outputChannels + inputChannelsPerPart) * ld
        return max(weights + transformed, 2 * weights + a2 * inputChannelsPerPart * ld, transformed) + WinogradTiles.lanes
    }

    /// Input channels rounded up to whole eight-lane vectors: the weight transforms run eight channels at a time.
    private var paddedInputChannels: Int { (inputChannelsPerPart + 7) / 8 * 8 }

    /// Runs body(output channel, matrix, scratch) for every output channel, split over the threads, with `floats` of
    /// scratch a thread (zeroed once: the lanes past Cin stay zero) and `matrix` (G or Gᵀ) as a pointer.
    private func forEachFilterRow(_ matrix: [Float], scratch floats: Int,
                                  _ body: (Int, UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) {
        matrix.withUnsafeBufferPointer { g in
            let shared = SharedForCall(g.baseAddress!)   // read only, and every chunk finishes before this returns
            Parallel.forEachChunk(outputChannels, threads: threads) { range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: floats) { buffer in
                    let scratch = buffer.baseAddress!
                    scratch.initialize(repeating: 0, count: floats)
                    for o in range { body(o, shared.value, scratch) }
                }
            }
        }
    }

    /// U (α², parts·M, Cin) = G g Gᵀ of every filter, eight input channels a vector: each output channel's filters
    /// are first turned channel-minor, (r·r, Cin), so that every tap of eight channels is one load.
    private func transformWeights(_ weight: UnsafePointer<Float>, _ w: WinogradTransform, into u: UnsafeMutablePointer<Float>) {
        let r = w.kernel, a = w.tile, rows = outputChannels, cin = inputChannelsPerPart, ld = paddedInputChannels
        forEachFilterRow(w.filterTransform, scratch: (r * r + a * r + a * a) * ld) { o, g, scratch in
            let filters = scratch                  // (r·r, ld): tap-major, channels contiguous
            let tmp = filters + r * r * ld         // (α, r, ld) = G · filter
            let out = tmp + a * r * ld             // (α², ld) = tmp · Gᵀ
            for c in 0..<cin {
                let filter = weight + (o * cin + c) * r * r
                for t in 0..<(r * r) { filters[t * ld + c] = filter[t] }
            }
            Self.twoSidedProduct(left: g, leftRows: a, filters, rows: r, columns: r, right: g, rightRows: a, tmp: tmp, into: out, ld: ld)
            for xi in 0..<(a * a) { (u + (xi * rows + o) * cin).update(from: out + xi * ld, count: cin) }
        }
    }

    /// dW (parts·M, Cin, r, r) = Gᵀ dU G of every filter, eight input channels a vector (dU's rows are channel-minor
    /// already; the result is turned back to the weights' (Cin, r, r) at the end).
    private func transformWeightGradient(_ du: UnsafePointer<Float>, _ w: WinogradTransform,
                                         into weightGradient: UnsafeMutablePointer<Float>) {
        let r = w.kernel, a = w.tile, rows = outputChannels, cin = inputChannelsPerPart, ld = paddedInputChannels
        let g = w.filterTransform, transposed = (0..<(r * a)).map { g[($0 % a) * r + $0 / a] }   // Gᵀ (r, α)
        forEachFilterRow(transposed, scratch: (a * a + r * a + r * r) * ld) { o, gt, scratch in
            let dU = scratch                       // (α², ld): this output channel's dU
            let tmp = dU + a * a * ld              // (r, α, ld) = Gᵀ · dU
            let out = tmp + r * a * ld             // (r·r, ld) = tmp · G
            for xi in 0..<(a * a) { (dU + xi * ld).update(from: du + (xi * rows + o) * cin, count: cin) }
            Self.twoSidedProduct(left: gt, leftRows: r, dU, rows: a, columns: a, right: gt, rightRows: r, tmp: tmp, into: out, ld: ld)
            for c in 0..<cin {
                let filter = weightGradient + (o * cin + c) * r * r
                for t in 0..<(r * r) { filter[t] = out[t * ld + c] }
            }
        }
    }

    /// out (P, Q) = L (P, K) · x (K, J) · Rᵀ with L and R (Q, J) row-major, for `ld` channels at once, eight a vector:
    /// every entry of x, tmp (P, J) and out is a row of `ld` channels.
    @inline(__always)
    private static func twoSidedProduct(left: UnsafePointer<Float>, leftRows P: Int, _ x: UnsafePointer<Float>, rows K: Int, columns J: Int,
                                        right: UnsafePointer<Float>, rightRows Q: Int, tmp: UnsafeMutablePointer<Float>,
                                        into out: UnsafeMutablePointer<Float>, ld: Int) {
        for v in stride(from: 0, to: ld, by: 8) {
            for p in 0..<P { for j in 0..<J {
                var sum = SIMD8<Float>()
                for k in 0..<K { sum += left[p * K + k] * load8(x + (k * J + j) * ld + v) }
                store8(sum, tmp + (p * J + j) * ld + v)
            } }
            for p in 0..<P { for q in 0..<Q {
                var sum = SIMD8<Float>()
                for j in 0..<J { sum += right[q * J + j] * load8(tmp + (p * J + j) * ld + v) }
                store8(sum, out + (p * Q + q) * ld + v)
            } }
        }
    }

    @inline(__always) private static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }
    @inline(__always) private static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }

    /// Runs body(plane index range, scratch) split over the threads, with transform scratch for each thread.
    private func forEachPlane(_ count: Int, _ tiles: WinogradTiles,
                              _ body: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
        Parallel.forEachChunk(count, threads: threads) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: tiles.scratchFloats) { buffer in
                body(range, buffer.baseAddress!)
            }
        }
    }

    /// The tile ranges of the chunks, and the (group, rows, first input channel) of the sgemms: one group of all
    /// parts' rows when the input is shared, else one group a part with its own input channels.
    private func winogradGroups() -> [(rows: Range<Int>, firstInput: Int)] {
        let M = outputChannelsPerPart
        return sharedInput ? [(0..<outputChannels, 0)]
                           : (0..<parts).map { p in (p * M..<(p + 1) * M, p * inputChannelsPerPart) }
    }

    /// V (α², Cin, ld) of `images` for the Cin input channels from `firstChannel` of (C, N, H, W) maps.
    private func transformInputs(_ input: UnsafePointer<Float>, batch: Int, firstChannel: Int, images: Range<Int>,
                                 _ tiles: WinogradTiles, into v: UnsafeMutablePointer<Float>, ld: Int) {
        let cin = inputChannelsPerPart, channelStride = batch * geometry.inputPlane
        forEachPlane(cin, tiles) { channels, scratch in
            for c in channels {
                tiles.transformInput(input + (firstChannel + c) * channelStride, imageStride: geometry.inputPlane,
                                     images: images, into: v + c * ld, rowStride: cin * ld, scratch: scratch)
            }
        }
    }

    func winogradForward(input: UnsafePointer<Float>, batch: Int, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                         output: UnsafeMutablePointer<Float>, col: UnsafeMutablePointer<Float>, relu: Bool,
                         keptInput: UnsafeMutablePointer<Float>?) {
        let w = winograd!, tiles = WinogradTiles(geometry: geometry, transform: w)
        let a2 = w.tile * w.tile, rowsAll = outputChannels, cin = inputChannelsPerPart
        let ld = winogradLeadingDimension(batch: batch, tiles: tiles), imagesPerChunk = winogradImagesPerChunk(batch: batch, tiles: tiles)
        let u = col, v = col + a2 * rowsAll * cin     // U (α², rowsAll, Cin), V (α², Cin, ld)
        let yHat = v + a2 * cin * ld                    // Ŷ (α², rowsAll, ld)
        let outChannelStride = batch * geometry.outputPlane
        transformWeights(weight, w, into: u)
        let groups = winogradGroups()
        for (chunkIndex, n0) in stride(from: 0, to: batch, by: imagesPerChunk).enumerated() {
            let chunk = n0..<min(batch, n0 + imagesPerChunk), n = chunk.count * tiles.tilesPerImage
            for (groupIndex, group) in groups.enumerated() {
                // V into the kept buffer (read again by the backward) or the scratch
                let v = keptInput.map { $0 + keptOffset(chunk: chunkIndex, group: groupIndex, tile: w.tile, ld: ld) } ?? v
                transformInputs(input, batch: batch, firstChannel: group.firstInput, images: chunk, tiles, into: v, ld: ld)
                let M = group.rows.count
                for xi in 0..<a2 {
                    Blas.sgemm(m: M, n: n, k: cin, a: u + (xi * rowsAll + group.rows.lowerBound) * cin, lda: cin,
                               b: v + xi * cin * ld, ldb: ld, c: yHat + (xi * rowsAll + group.rows.lowerBound) * ld, ldc: ld)
                }
                forEachPlane(M, tiles) { range, scratch in
                    for i in range {
                        let o = group.rows.lowerBound + i
                        tiles.transformOutput(yHat + o * ld, rowStride: rowsAll * ld, images: chunk, bias: bias[o], relu: relu,
                                              into: output + o * outChannelStride, imageStride: geometry.outputPlane, scratch: scratch)
                    }
                }
            }
        }
    }

    func winogradBackward(input: UnsafePointer<Float>, batch: Int, weight: UnsafePointer<Float>,
                          outputGradient: UnsafePointer<Float>, weightGradient: UnsafeMutablePointer<Float>,
                          biasGradient: UnsafeMutablePointer<Float>, inputGradients: [UnsafeMutablePointer<Float>]?,
                          col: UnsafeMutablePointer<Float>, colGradient: UnsafeMutablePointer<Float>,
                          keptInput: UnsafePointer<Float>?, afterChunk: (() -> Void)?) {
        let w = winograd!, tiles = WinogradTiles(geometry: geometry, transform: w)
        let a2 = w.tile * w.tile, rowsAll = outputChannels, cin = inputChannelsPerPart, M = outputChannelsPerPart
        let ld = winogradLeadingDimension(batch: batch, tiles: tiles), imagesPerChunk = winogradImagesPerChunk(batch: batch, tiles: tiles)
        let weightsSize = a2 * rowsAll * cin
        let u = col, scratchV = col + weightsSize, du = col + weightsSize + a2 * cin * ld   // U, V (α², Cin, ld), dU like U
        let dyHat = colGradient, dv = colGradient + a2 * rowsAll * ld                // dŶ (α², rowsAll, ld), dV (α², Cin, ld)
        let inChannelStride = batch * geometry.inputPlane, outChannelStride = batch * geometry.outputPlane
        if inputGradients != nil { transformWeights(weight, w, into: u) }
        du.update(repeating: 0, count: weightsSize)
        if let grads = inputGradients {
            precondition(grads.count == parts)
            for g in grads { g.update(repeating: 0, count: cin * inChannelStride) }
        }
        let groups = winogradGroups()
        for (chunkIndex, n0) in stride(from: 0, to: batch, by: imagesPerChunk).enumerated() {
            let chunk = n0..<min(batch, n0 + imagesPerChunk), n = chunk.count * tiles.tilesPerImage
            for (groupIndex, group) in groups.enumerated() {
                // V as the forward kept it, or transformed again
                let v: UnsafePointer<Float>
                if let kept = keptInput {
                    v = kept + keptOffset(chunk: chunkIndex, group: groupIndex, tile: w.tile, ld: ld)
                } else {
                    transformInputs(input, batch: batch, firstChannel: group.firstInput, images: chunk, tiles, into: scratchV, ld: ld)
                    v = UnsafePointer(scratchV)
                }
                forEachPlane(group.rows.count, tiles) { range, scratch in
                    for i in range {
                        let o = group.rows.lowerBound + i
                        tiles.transformOutputGradient(outputGradient + o * outChannelStride, imageStride: geometry.outputPlane,
                                                      images: chunk, into: dyHat + o * ld, rowStride: rowsAll * ld, scratch: scratch)
                    }
                }
                for xi in 0..<a2 {
                    // dU[ξ] (rows, Cin) += dŶ[ξ] (rows, tiles) · V[ξ]ᵀ (tiles, Cin)
                    let first = xi * rowsAll + group.rows.lowerBound
                    Blas.sgemm(transB: true, m: group.rows.count, n: cin, k: n, a: dyHat + first * ld, lda: ld,
                               b: v + xi * cin * ld, ldb: ld, beta: 1, c: du + first * cin, ldc: cin)
                }
                guard let grads = inputGradients else { continue }
                // Each part's own rows give its input gradient: the part's own channels, or its partial of a shared input.
                for p in 0..<parts where group.rows.contains(p * M) {
                    for xi in 0..<a2 {
                        // dV[ξ] (Cin, tiles) = U[ξ]ᵀ (Cin, M) · dŶ[ξ] (M, tiles), part p's rows
                        let first = xi * rowsAll + p * M
                        Blas.sgemm(transA: true, m: cin, n: n, k: M, a: u + first * cin, lda: cin,
                                   b: dyHat + first * ld, ldb: ld, c: dv + xi * cin * ld, ldc: ld)
                    }
                    forEachPlane(cin, tiles) { channels, scratch in
                        for c in channels {
                            tiles.addInputGradient(dv + c * ld, rowStride: cin * ld, images: chunk,
                                                   into: grads[p] + c * inChannelStride, imageStride: geometry.inputPlane,
                                                   scratch: scratch)
                        }
                    }
                }
            }
            afterChunk?()   // e.g. lets a gradient allreduce in flight progress
        }
        transformWeightGradient(du, w, into: weightGradient)
        sumRows(outputGradient, rows: outputChannels, rowLength: outChannelStride, into: biasGradient, threads: threads)
    }
}
