// The vector loops of the direct strided convolution (StridedConvolution.swift), forward and weight gradient side by
// side. This file is compiled twice: in AlexNetKernels with eight lanes a vector (AVX2), and in AlexNetKernelsWide (a
// link to this file) with sixteen lanes and AVX-512 code, which the convolution runs where the CPU has AVX-512.

/// What the loops need of the layer: the output plane and the length of a phase plane's rows.
struct DirectShape {
    let outputHeight: Int, outputWidth: Int, planeColumns: Int
}

/// The vector loops of the direct convolution: a vector of output columns, six output channels at a time (a tower
/// has 6, 12 or 24 conv1 channels at W = 1/8, 1/4, 1/2: whole blocks), twelve independent sums a pass.
enum DirectKernel {
#if DIRECT_KERNEL_SIXTEEN_LANES
    typealias Vector = SIMD16<Float>
#else
    typealias Vector = SIMD8<Float>
#endif
    static let lanes = Vector.scalarCount
    static let channelBlock = 6
    /// Output rows of a weight-gradient band (six channels' dY rows of conv1: 21 KB, inside L1).
    static let rowBand = 16

    /// Column blocks of an output row: vectors at 0, 8, …, the last one moved back to end at outW (it overlaps).
    @inline(__always)
    static func blockStart(_ block: Int, width: Int) -> Int { min(block * lanes, width - lanes) }

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> Vector { UnsafeRawPointer(p).loadUnaligned(as: Vector.self) }
    @inline(__always)
    static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self) }

    /// output[m] (outH, outW) at `channelStride` apart = bias[m] + Σ_taps weights[tap, m] · plane(tap), for m < channels.
    /// `weights` (taps, paddedM) and `bias` (paddedM) are padded to whole blocks of six channels. A pass computes six channels of
    /// two output vectors: the vectors of a plane, numbered row by row, are taken two at a time (the pair may span two
    /// rows), so an odd number of vectors a row wastes nothing but the plane's last. Each weight broadcast serves two
    /// vectors, each input vector six channels.
    static func forward(planes: UnsafePointer<Float>, shape: DirectShape, taps: [Int], weights: UnsafePointer<Float>,
                        channels M: Int, bias: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        channelStride: Int, relu: Bool) {
#if DIRECT_KERNEL_SIXTEEN_LANES
        forwardFourVectors(planes: planes, shape: shape, taps: taps, weights: weights, channels: M, bias: bias,
                           output: output, channelStride: channelStride, relu: relu)
#else
        forwardTwoVectors(planes: planes, shape: shape, taps: taps, weights: weights, channels: M, bias: bias,
                          output: output, channelStride: channelStride, relu: relu)
#endif
    }

    /// `forward` two output vectors a pass (AVX2's sixteen registers hold its twelve sums).
    static func forwardTwoVectors(planes: UnsafePointer<Float>, shape: DirectShape, taps: [Int], weights: UnsafePointer<Float>,
                                  channels M: Int, bias: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                  channelStride: Int, relu: Bool) {
        let paddedM = paddedChannels(M), floor = clampFloor(relu: relu)
        @inline(__always) func clamp(_ v: Vector) -> Vector { v.replacing(with: floor, where: v .< floor) }
        taps.withUnsafeBufferPointer { taps in
            forEachForwardPass(shape: shape, channels: M, vectorsPerPass: 2) { m0, real, vector in
                @inline(__always) func place(_ k: Int) -> (input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) {
                    vectorPlace(vector + k, shape: shape, planes: planes, output: output + m0 * channelStride)
                }
                let pa = place(0), pb = place(1), a = pa.input, b = pb.input
                var a0 = Vector(repeating: bias[m0]), a1 = Vector(repeating: bias[m0 + 1])
                var a2 = Vector(repeating: bias[m0 + 2]), a3 = Vector(repeating: bias[m0 + 3])
                var a4 = Vector(repeating: bias[m0 + 4]), a5 = Vector(repeating: bias[m0 + 5])
                var b0 = a0, b1 = a1, b2 = a2, b3 = a3, b4 = a4, b5 = a5
                var w = weights + m0
                for t in taps {
                    let x = load(a + t), y = load(b + t)
                    let w0 = Vector(repeating: w[0]), w1 = Vector(repeating: w[1]), w2 = Vector(repeating: w[2])
                    a0 = a0.addingProduct(x, w0); b0 = b0.addingProduct(y, w0)
                    a1 = a1.addingProduct(x, w1); b1 = b1.addingProduct(y, w1)
                    a2 = a2.addingProduct(x, w2); b2 = b2.addingProduct(y, w2)
                    let w3 = Vector(repeating: w[3]), w4 = Vector(repeating: w[4]), w5 = Vector(repeating: w[5])
                    a3 = a3.addingProduct(x, w3); b3 = b3.addingProduct(y, w3)
                    a4 = a4.addingProduct(x, w4); b4 = b4.addingProduct(y, w4)
                    a5 = a5.addingProduct(x, w5); b5 = b5.addingProduct(y, w5)
                    w += paddedM
                }
                @inline(__always) func put(_ m: Int, _ sumA: Vector, _ sumB: Vector) {
                    if m < real { store(clamp(sumA), pa.output + m * channelStride); store(clamp(sumB), pb.output + m * channelStride) }
                }
                put(0, a0, b0); put(1, a1, b1); put(2, a2, b2); put(3, a3, b3); put(4, a4, b4); put(5, a5, b5)
            }
        }
    }

    /// The forward's walk, whatever vectors a pass: every block of six channels (`real` of them stored) and every pass
    /// of `vectorsPerPass` output vectors, numbered row by row over the plane (a pass may span two rows):
    /// body(m0, real, first vector of the pass).
    @inline(__always)
    static func forEachForwardPass(shape: DirectShape, channels M: Int, vectorsPerPass: Int, _ body: (Int, Int, Int) -> Void) {
        let vectors = shape.outputHeight * ((shape.outputWidth + lanes - 1) / lanes)
        for m0 in stride(from: 0, to: M, by: channelBlock) {
            for vector in stride(from: 0, to: vectors, by: vectorsPerPass) { body(m0, min(channelBlock, M - m0), vector) }
        }
    }

    /// Where output vector `v` (numbered row by row; past the plane's last, the last: a pass's spare vectors repeat
    /// it and store the same values) reads its taps and writes its first channel.
    @inline(__always)
    static func vectorPlace(_ v: Int, shape: DirectShape, planes: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>)
        -> (input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) {
        let outW = shape.outputWidth, blocks = (outW + lanes - 1) / lanes
        let (oh, block) = min(v, shape.outputHeight * blocks - 1).quotientAndRemainder(dividingBy: blocks)
        let ow = blockStart(block, width: outW)
        return (planes + oh * shape.planeColumns + ow, output + oh * outW + ow)
    }

    /// The lower bound of the outputs: 0 after ReLU, else none.
    static func clampFloor(relu: Bool) -> Vector { relu ? Vector(repeating: 0) : Vector(repeating: -.infinity) }

#if DIRECT_KERNEL_SIXTEEN_LANES
    /// `forward` four output vectors a pass (24 sums in AVX-512's 32 registers): each weight broadcast serves four
    /// vectors. The last pass of a plane repeats its last vector where fewer than four are left (stored twice, the same).
    static func forwardFourVectors(planes: UnsafePointer<Float>, shape: DirectShape, taps: [Int], weights: UnsafePointer<Float>,
                                   channels M: Int, bias: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                   channelStride: Int, relu: Bool) {
        let paddedM = paddedChannels(M), floor = clampFloor(relu: relu)
        @inline(__always) func clamp(_ v: Vector) -> Vector { v.replacing(with: floor, where: v .< floor) }
        taps.withUnsafeBufferPointer { taps in
            forEachForwardPass(shape: shape, channels: M, vectorsPerPass: 4) { m0, real, vector in
                @inline(__always) func place(_ k: Int) -> (input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) {
                    vectorPlace(vector + k, shape: shape, planes: planes, output: output + m0 * channelStride)
                }
                let pa = place(0), pb = place(1), pc = place(2), pd = place(3)
                let a = pa.input, b = pb.input, c = pc.input, e = pd.input
                var a0 = Vector(repeating: bias[m0]), a1 = Vector(repeating: bias[m0 + 1])
                var a2 = Vector(repeating: bias[m0 + 2]), a3 = Vector(repeating: bias[m0 + 3])
                var a4 = Vector(repeating: bias[m0 + 4]), a5 = Vector(repeating: bias[m0 + 5])
                var b0 = a0, b1 = a1, b2 = a2, b3 = a3, b4 = a4, b5 = a5
                var c0 = a0, c1 = a1, c2 = a2, c3 = a3, c4 = a4, c5 = a5
                var e0 = a0, e1 = a1, e2 = a2, e3 = a3, e4 = a4, e5 = a5
                var w = weights + m0
                for t in taps {
                    let x = load(a + t), y = load(b + t), z = load(c + t), u = load(e + t)
                    let w0 = Vector(repeating: w[0])
                    a0 = a0.addingProduct(x, w0); b0 = b0.addingProduct(y, w0); c0 = c0.addingProduct(z, w0); e0 = e0.addingProduct(u, w0)
                    let w1 = Vector(repeating: w[1])
                    a1 = a1.addingProduct(x, w1); b1 = b1.addingProduct(y, w1); c1 = c1.addingProduct(z, w1); e1 = e1.addingProduct(u, w1)
                    let w2 = Vector(repeating: w[2])
                    a2 = a2.addingProduct(x, w2); b2 = b2.addingProduct(y, w2); c2 = c2.addingProduct(z, w2); e2 = e2.addingProduct(u, w2)
                    let w3 = Vector(repeating: w[3])
                    a3 = a3.addingProduct(x, w3); b3 = b3.addingProduct(y, w3); c3 = c3.addingProduct(z, w3); e3 = e3.addingProduct(u, w3)
                    let w4 = Vector(repeating: w[4])
                    a4 = a4.addingProduct(x, w4); b4 = b4.addingProduct(y, w4); c4 = c4.addingProduct(z, w4); e4 = e4.addingProduct(u, w4)
                    let w5 = Vector(repeating: w[5])
                    a5 = a5.addingProduct(x, w5); b5 = b5.addingProduct(y, w5); c5 = c5.addingProduct(z, w5); e5 = e5.addingProduct(u, w5)
                    w += paddedM
                }
                @inline(__always) func put(_ m: Int, _ sa: Vector, _ sb: Vector, _ sc: Vector, _ se: Vector) {
                    guard m < real else { return }
                    let offset = m * channelStride
                    store(clamp(sa), pa.output + offset); store(clamp(sb), pb.output + offset)
                    store(clamp(sc), pc.output + offset); store(clamp(se), pd.output + offset)
                }
                put(0, a0, b0, c0, e0); put(1, a1, b1, c1, e1); put(2, a2, b2, c2, e2)
                put(3, a3, b3, c3, e3); put(4, a4, b4, c4, e4); put(5, a5, b5, c5, e5)
            }
        }
    }
#endif

    /// Channels rounded up to whole blocks: the rows of the padded weight and bias copies.
    static func paddedChannels(_ channels: Int) -> Int { (channels + channelBlock - 1) / channelBlock * channelBlock }

    /// laneSums[m, tap] (a vector each) += Σ_(oh, ow) dY[m](oh, ow) · plane(tap)(oh, ow), lane by lane, for
    /// m < channels (rows of K taps); `sumLanes` then adds each vector's lanes. Summing the lanes once at the end
    /// instead of once a band keeps the horizontal sums (a quarter of the sixteen-lane loop's instructions) out of
    /// the loop. Six channels × two taps a pass with eight lanes (twelve sums), × four with sixteen (24 sums: AVX-512's
    /// 32 registers hold them; `bench-convolutions`, W = 1, batch 128, one thread on the Emerald Rapids VM: conv1's
    /// backward 138–141 → 107–110 ms). Each dY vector serves every tap of the pass, each input vector six channels. A
    /// last block of fewer channels repeats its first channel in the missing places (never stored).
    static func weightGradient(planes: UnsafePointer<Float>, shape: DirectShape, taps: [Int],
                               outputGradient dY: UnsafePointer<Float>, channelStride: Int, channels M: Int,
                               laneSums: UnsafeMutablePointer<Float>) {
#if DIRECT_KERNEL_SIXTEEN_LANES
        weightGradientFourTaps(planes: planes, shape: shape, taps: taps, outputGradient: dY, channelStride: channelStride,
                               channels: M, laneSums: laneSums)
#else
        weightGradientTwoTaps(planes: planes, shape: shape, taps: taps, outputGradient: dY, channelStride: channelStride,
                              channels: M, laneSums: laneSums)
#endif
    }

    /// `weightGradient` with two taps a pass (AVX2's sixteen vector registers hold its twelve sums).
    static func weightGradientTwoTaps(planes: UnsafePointer<Float>, shape: DirectShape, taps: [Int],
                                      outputGradient dY: UnsafePointer<Float>, channelStride: Int, channels M: Int,
                                      laneSums: UnsafeMutablePointer<Float>) {
        let outW = shape.outputWidth, columns = shape.planeColumns, K = taps.count, rest = outW % lanes
        let restMask = Self.restMask(width: outW)
        taps.withUnsafeBufferPointer { taps in
            forEachWeightGradientPass(channels: M, outputHeight: shape.outputHeight, channelStride: channelStride, taps: K,
                                      tapsPerPass: 2) { m0, real, strides, band, index in
                let (s1, s2, s3, s4, s5) = strides, bandStart = band.lowerBound, bandEnd = band.upperBound
                let tA = taps[index], tB = taps[min(index + 1, K - 1)]
                let d = dY + m0 * channelStride
                var a0 = Vector(), a1 = Vector(), a2 = Vector(), a3 = Vector(), a4 = Vector(), a5 = Vector()
                var b0 = Vector(), b1 = Vector(), b2 = Vector(), b3 = Vector(), b4 = Vector(), b5 = Vector()
                @inline(__always) func accumulate(_ x: Vector, _ y: Vector, _ row: UnsafePointer<Float>) {
                    let d0 = load(row), d1 = load(row + s1), d2 = load(row + s2)
                    a0 = a0.addingProduct(x, d0); b0 = b0.addingProduct(y, d0)
                    a1 = a1.addingProduct(x, d1); b1 = b1.addingProduct(y, d1)
                    a2 = a2.addingProduct(x, d2); b2 = b2.addingProduct(y, d2)
                    let d3 = load(row + s3), d4 = load(row + s4), d5 = load(row + s5)
                    a3 = a3.addingProduct(x, d3); b3 = b3.addingProduct(y, d3)
                    a4 = a4.addingProduct(x, d4); b4 = b4.addingProduct(y, d4)
                    a5 = a5.addingProduct(x, d5); b5 = b5.addingProduct(y, d5)
                }
                for oh in bandStart..<bandEnd {
                    let xa = planes + tA + oh * columns, xb = planes + tB + oh * columns, row = d + oh * outW
                    var ow = 0
                    while ow + lanes <= outW {
                        accumulate(load(xa + ow), load(xb + ow), row + ow)
                        ow += lanes
                    }
                }
                // The rows' last, partial vectors in a loop of their own (the mask then stays in a register).
                if rest > 0 {
                    let ow = outW - lanes
                    for oh in bandStart..<bandEnd {
                        let xa = planes + tA + oh * columns + ow, xb = planes + tB + oh * columns + ow
                        accumulate(load(xa) * restMask, load(xb) * restMask, d + oh * outW + ow)
                    }
                }
                let g = laneSums + (m0 * K + index) * lanes, second = index + 1 < K
                @inline(__always) func add(_ m: Int, _ sumA: Vector, _ sumB: Vector) {
                    guard m < real else { return }
                    let p = g + m * K * lanes
                    store(load(p) + sumA, p)
                    if second { store(load(p + lanes) + sumB, p + lanes) }
                }
                add(0, a0, b0); add(1, a1, b1); add(2, a2, b2); add(3, a3, b3); add(4, a4, b4); add(5, a5, b5)
            }
        }
    }

    /// The weight gradient's walk, whatever taps a pass: every block of six channels (`real` of them stored; their dY
    /// rows `strides` apart, a missing channel reading the first's), every band of `rowBand` output rows (a band's dY
    /// rows stay in L1 while every pass goes over them; a pass over the whole plane would stream all of dY from L2
    /// once a pass), every pass of `tapsPerPass` taps from `index`: body(m0, real, strides, band, index).
    @inline(__always)
    static func forEachWeightGradientPass(channels M: Int, outputHeight outH: Int, channelStride: Int, taps K: Int, tapsPerPass: Int,
                                          _ body: (Int, Int, (Int, Int, Int, Int, Int), Range<Int>, Int) -> Void) {
        for m0 in stride(from: 0, to: M, by: channelBlock) {
            let real = min(channelBlock, M - m0)
            @inline(__always) func offset(_ m: Int) -> Int { m < real ? m * channelStride : 0 }
            let strides = (offset(1), offset(2), offset(3), offset(4), offset(5))
            for bandStart in stride(from: 0, to: outH, by: rowBand) {
                let band = bandStart..<min(outH, bandStart + rowBand)
                for index in stride(from: 0, to: K, by: tapsPerPass) { body(m0, real, strides, band, index) }
            }
        }
    }

    /// A row's last, partial vector is read as the full vector that ends at outW: this mask zeroes its lanes that the
    /// vectors before it already counted.
    static func restMask(width outW: Int) -> Vector {
        var mask = Vector(repeating: 0)
        for l in (lanes - outW % lanes)..<lanes { mask[l] = 1 }
        return mask
    }

#if DIRECT_KERNEL_SIXTEEN_LANES
    /// `weightGradient` with four taps a pass (AVX-512 has 32 vector registers): 24 sums, each dY vector loaded once
    /// for four taps and each input vector serving six channels.
    static func weightGradientFourTaps(planes: UnsafePointer<Float>, shape: DirectShape, taps: [Int],
                                       outputGradient dY: UnsafePointer<Float>, channelStride: Int, channels M: Int,
                                       laneSums: UnsafeMutablePointer<Float>) {
        let outW = shape.outputWidth, columns = shape.planeColumns, K = taps.count, rest = outW % lanes
        let restMask = Self.restMask(width: outW)
        taps.withUnsafeBufferPointer { taps in
            forEachWeightGradientPass(channels: M, outputHeight: shape.outputHeight, channelStride: channelStride, taps: K,
                                      tapsPerPass: 4) { m0, real, strides, band, index in
                let (s1, s2, s3, s4, s5) = strides, bandStart = band.lowerBound, bandEnd = band.upperBound
                let tA = taps[index], tB = taps[min(index + 1, K - 1)]
                let tC = taps[min(index + 2, K - 1)], tD = taps[min(index + 3, K - 1)]
                let d = dY + m0 * channelStride
                var a0 = Vector(), a1 = Vector(), a2 = Vector(), a3 = Vector(), a4 = Vector(), a5 = Vector()
                var b0 = Vector(), b1 = Vector(), b2 = Vector(), b3 = Vector(), b4 = Vector(), b5 = Vector()
                var c0 = Vector(), c1 = Vector(), c2 = Vector(), c3 = Vector(), c4 = Vector(), c5 = Vector()
                var e0 = Vector(), e1 = Vector(), e2 = Vector(), e3 = Vector(), e4 = Vector(), e5 = Vector()
                @inline(__always) func accumulate(_ x: Vector, _ y: Vector, _ z: Vector, _ w: Vector, _ row: UnsafePointer<Float>) {
                    let d0 = load(row)
                    a0 = a0.addingProduct(x, d0); b0 = b0.addingProduct(y, d0); c0 = c0.addingProduct(z, d0); e0 = e0.addingProduct(w, d0)
                    let d1 = load(row + s1)
                    a1 = a1.addingProduct(x, d1); b1 = b1.addingProduct(y, d1); c1 = c1.addingProduct(z, d1); e1 = e1.addingProduct(w, d1)
                    let d2 = load(row + s2)
                    a2 = a2.addingProduct(x, d2); b2 = b2.addingProduct(y, d2); c2 = c2.addingProduct(z, d2); e2 = e2.addingProduct(w, d2)
                    let d3 = load(row + s3)
                    a3 = a3.addingProduct(x, d3); b3 = b3.addingProduct(y, d3); c3 = c3.addingProduct(z, d3); e3 = e3.addingProduct(w, d3)
                    let d4 = load(row + s4)
                    a4 = a4.addingProduct(x, d4); b4 = b4.addingProduct(y, d4); c4 = c4.addingProduct(z, d4); e4 = e4.addingProduct(w, d4)
                    let d5 = load(row + s5)
                    a5 = a5.addingProduct(x, d5); b5 = b5.addingProduct(y, d5); c5 = c5.addingProduct(z, d5); e5 = e5.addingProduct(w, d5)
                }
                for oh in bandStart..<bandEnd {
                    let p = planes + oh * columns, row = d + oh * outW
                    var ow = 0
                    while ow + lanes <= outW {
                        accumulate(load(p + tA + ow), load(p + tB + ow), load(p + tC + ow), load(p + tD + ow), row + ow)
                        ow += lanes
                    }
                }
                if rest > 0 {
                    let ow = outW - lanes
                    for oh in bandStart..<bandEnd {
                        let p = planes + oh * columns + ow
                        accumulate(load(p + tA) * restMask, load(p + tB) * restMask, load(p + tC) * restMask,
                                   load(p + tD) * restMask, d + oh * outW + ow)
                    }
                }
                let g = laneSums + (m0 * K + index) * lanes, count = min(4, K - index)
                @inline(__always) func add(_ m: Int, _ s0: Vector, _ s1: Vector, _ s2: Vector, _ s3: Vector) {
                    guard m < real else { return }
                    let p = g + m * K * lanes
                    store(load(p) + s0, p)
                    if count > 1 { store(load(p + lanes) + s1, p + lanes) }
                    if count > 2 { store(load(p + 2 * lanes) + s2, p + 2 * lanes) }
                    if count > 3 { store(load(p + 3 * lanes) + s3, p + 3 * lanes) }
                }
                add(0, a0, b0, c0, e0); add(1, a1, b1, c1, e1); add(2, a2, b2, c2, e2)
                add(3, a3, b3, c3, e3); add(4, a4, b4, c4, e4); add(5, a5, b5, c5, e5)
            }
        }
    }
#endif

    /// out[i] = the sum of the lanes of sums[i] (vectors of `lanes`), for i < count.
    static func sumLanes(_ sums: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        for i in 0..<count { out[i] = load(sums + i * lanes).sum() }
    }
}
