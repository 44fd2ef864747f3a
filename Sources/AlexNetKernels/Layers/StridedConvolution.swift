// A direct convolution for strided layers with few input channels (conv1: 3 channels, 11 × 11, stride 4), forward
// and weight gradient side by side. im2col would expand each image 7× into a column buffer that an sgemm with few
// output rows then reads once (at small widths the layer is bound by that traffic); here each image is split once
// into its stride phases and every tap is a contiguous vector load.
//
// Phase planes: padded input row y = s·r + a and column x = s·q + b go to plane (c, a, b) at (r, q), so the tap
// (i, j) = (s·dy + a, s·dx + b) of output (oh, ow) reads plane (c, a, b) at (oh + dy, ow + dx): a contiguous run in ow.

struct PhasePlanes {
    let geometry: ConvGeometry
    let channels: Int
    let rows: Int, columns: Int          // of one phase plane, covering every tap of every output
    var planeSize: Int { rows * columns }
    var count: Int { channels * geometry.stride * geometry.stride * planeSize }   // (C, s, s, rows, columns)

    init(geometry g: ConvGeometry, channels: Int) {
        self.geometry = g
        self.channels = channels
        let taps = (g.kernel + g.stride - 1) / g.stride
        rows = max((g.inputHeight + 2 * g.pad + g.stride - 1) / g.stride, g.outputHeight + taps - 1)
        columns = max((g.inputWidth + 2 * g.pad + g.stride - 1) / g.stride, g.outputWidth + taps - 1)
    }

    /// Plane (c, a, b) of the tap (c, i, j), and the offset of its (dy, dx) shift inside the plane.
    @inline(__always)
    func tap(_ c: Int, _ i: Int, _ j: Int) -> Int {
        let s = geometry.stride
        return ((c * s + i % s) * s + j % s) * planeSize + (i / s) * columns + j / s
    }

    /// Splits one image (channels at `channelStride`, planes H × W) into `out`. Every image writes the same positions,
    /// so the padding stays zero after the first: `fresh` says `out` has not been zeroed yet.
    func split(_ image: UnsafePointer<Float>, channelStride: Int, into out: UnsafeMutablePointer<Float>, fresh: Bool) {
        let g = geometry, s = g.stride, p = g.pad
        if fresh { out.update(repeating: 0, count: count) }
        for c in 0..<channels {
            let plane = image + c * channelStride
            for y in 0..<g.inputHeight {
                let py = y + p, row = plane + y * g.inputWidth
                // Input column x goes to phase (x + p) % s at plane column (x + p) / s; phase b's row is b planes on.
                let rowOut = out + (c * s + py % s) * s * planeSize + (py / s) * columns
                // Stride 4 (conv1): 32 columns at a time, from the first of phase 0, dealt to the four phases by
                // vector shuffles (a scalar loop of strided stores was 8% of the default job).
                var vectorStart = 0, vectorEnd = 0
                if s == 4 {
                    vectorStart = (s - p % s) % s
                    vectorEnd = vectorStart
                    while vectorEnd + 32 <= g.inputWidth {
                        let v = UnsafeRawPointer(row + vectorEnd).loadUnaligned(as: SIMD32<Float>.self)
                        let even = v.evenHalf, odd = v.oddHalf, column = rowOut + (vectorEnd + p) / s
                        UnsafeMutableRawPointer(column).storeBytes(of: even.evenHalf, as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(column + planeSize).storeBytes(of: odd.evenHalf, as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(column + 2 * planeSize).storeBytes(of: even.oddHalf, as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(column + 3 * planeSize).storeBytes(of: odd.oddHalf, as: SIMD8<Float>.self)
                        vectorEnd += 32
                    }
                    if vectorEnd == vectorStart { vectorStart = 0; vectorEnd = 0 }
                }
                // The other columns one by one, phase and plane column stepped along (no division a column).
                @inline(__always) func oneByOne(_ columns: Range<Int>) {
                    var phase = (columns.lowerBound + p) % s, column = (columns.lowerBound + p) / s
                    for x in columns {
                        rowOut[phase * planeSize + column] = row[x]
                        phase += 1
                        if phase == s { phase = 0; column += 1 }
                    }
                }
                oneByOne(0..<vectorStart)
                oneByOne(vectorEnd..<g.inputWidth)
            }
        }
    }
}

extension Convolution {
    /// Whether this layer runs as a direct convolution: strided, outputs at least one vector wide, and few output
    /// channels a part (with many, sgemm's wider kernels win over the im2col they need: conv1 at W = 1 has 48).
    public var runsDirect: Bool {
        geometry.stride > 1 && geometry.outputWidth >= DirectKernel.lanes && outputChannelsPerPart <= Self.directChannelLimit
    }
    public static let directChannelLimit = 24

    /// Channel groups that see the same input: all parts together when the input is shared (conv1: both towers'
    /// filters run over one split of each image), else one group a part. Returns (groups, output channels a group).
    var directGroups: (count: Int, channels: Int) {
        sharedInput ? (1, parts * outputChannelsPerPart) : (parts, outputChannelsPerPart)
    }

    /// Forward of a strided layer without im2col: output (parts·M, N, outH, outW) = conv(input) + bias, ReLU if asked.
    func directForward(input: UnsafePointer<Float>, batch: Int, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                       output: UnsafeMutablePointer<Float>, relu: Bool) {
        let phases = PhasePlanes(geometry: geometry, channels: inputChannelsPerPart)
        let taps = DirectKernel.taps(phases)
        let (groups, M) = directGroups
        let K = patchSize, ldc = batch * geometry.outputPlane
        let inChannelStride = batch * geometry.inputPlane
        // Weights as (group, tap, paddedM) and biases as (group, paddedM): the channels of one tap side by side, for
        // broadcasting, padded with zeros to whole blocks of channels (padding channels are never stored).
        let paddedM = DirectKernel.paddedChannels(M)
        let byTap = UnsafeMutablePointer<Float>.allocate(capacity: groups * K * paddedM)
        let paddedBias = UnsafeMutablePointer<Float>.allocate(capacity: groups * paddedM)
        defer { byTap.deallocate(); paddedBias.deallocate() }
        byTap.initialize(repeating: 0, count: groups * K * paddedM)
        paddedBias.initialize(repeating: 0, count: groups * paddedM)
        for g in 0..<groups {
            for m in 0..<M {
                paddedBias[g * paddedM + m] = bias[g * M + m]
                for t in 0..<K { byTap[(g * K + t) * paddedM + m] = weight[(g * M + m) * K + t] }
            }
        }
        // Images split across threads; each thread has its own phase planes.
        Parallel.forEachChunk(batch, threads: threads) { images in
            let planes = UnsafeMutablePointer<Float>.allocate(capacity: phases.count)
            defer { planes.deallocate() }
            for n in images {
                for g in 0..<groups {
                    phases.split(input + g * inputChannelsPerPart * inChannelStride + n * geometry.inputPlane,
                                 channelStride: inChannelStride, into: planes, fresh: n == images.lowerBound && g == 0)
                    DirectKernel.forward(planes: planes, phases: phases, taps: taps, weights: byTap + g * K * paddedM, channels: M,
                                         bias: paddedBias + g * paddedM, output: output + g * M * ldc + n * geometry.outputPlane,
                                         channelStride: ldc, relu: relu)
                }
            }
        }
    }

    /// Weight and bias gradients (overwritten) of a strided layer without im2col (no input gradient: conv1 needs none).
    func directWeightGradient(input: UnsafePointer<Float>, batch: Int, outputGradient: UnsafePointer<Float>,
                              weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>) {
        let phases = PhasePlanes(geometry: geometry, channels: inputChannelsPerPart)
        let taps = DirectKernel.taps(phases)
        let M = directGroups.channels, K = patchSize, ldc = batch * geometry.outputPlane
        let inChannelStride = batch * geometry.inputPlane
        weightGradient.update(repeating: 0, count: weightCount)
        // Output channels split across threads (each thread sums its own rows over every image: the same order for
        // any thread count); every thread splits the images it needs into its own phase planes.
        Parallel.forEachChunk(outputChannels, minimumPerThread: DirectKernel.channelBlock, threads: threads) { range in
            let planes = UnsafeMutablePointer<Float>.allocate(capacity: phases.count)
            defer { planes.deallocate() }
            var splitFor = (image: -1, group: -1)
            for n in 0..<batch {
                var row = range.lowerBound
                while row < range.upperBound {
                    let g = row / M
                    if splitFor != (n, g) {
                        phases.split(input + g * inputChannelsPerPart * inChannelStride + n * geometry.inputPlane,
                                     channelStride: inChannelStride, into: planes, fresh: splitFor.image < 0)
                        splitFor = (n, g)
                    }
                    let end = min(range.upperBound, (g + 1) * M)
                    DirectKernel.weightGradient(planes: planes, phases: phases, taps: taps,
                                                outputGradient: outputGradient + row * ldc + n * geometry.outputPlane,
                                                channelStride: ldc, channels: end - row, weightGradient: weightGradient + row * K)
                    row = end
                }
            }
        }
        sumRows(outputGradient, rows: outputChannels, rowLength: ldc, into: biasGradient, threads: threads)
    }
}

/// The vector loops of the direct convolution: eight output columns a vector, six output channels at a time (a tower
/// has 6, 12 or 24 conv1 channels at W = 1/8, 1/4, 1/2: whole blocks), twelve independent sums a pass.
enum DirectKernel {
    typealias Vector = SIMD8<Float>
    static let lanes = 8
    static let channelBlock = 6
    /// Output rows of a weight-gradient band (six channels' dY rows of conv1: 21 KB, inside L1).
    static let rowBand = 16

    /// Offset of every tap (c, i, j) in the phase planes, in weight order.
    static func taps(_ phases: PhasePlanes) -> [Int] {
        let k = phases.geometry.kernel
        var out: [Int] = []
        for c in 0..<phases.channels { for i in 0..<k { for j in 0..<k { out.append(phases.tap(c, i, j)) } } }
        return out
    }

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
    static func forward(planes: UnsafePointer<Float>, phases: PhasePlanes, taps: [Int], weights: UnsafePointer<Float>,
                        channels M: Int, bias: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        channelStride: Int, relu: Bool) {
        let outH = phases.geometry.outputHeight, outW = phases.geometry.outputWidth, columns = phases.columns
        let blocks = (outW + lanes - 1) / lanes, vectors = outH * blocks
        let paddedM = paddedChannels(M)
        let floor: Vector = relu ? Vector(repeating: 0) : Vector(repeating: -.infinity)
        @inline(__always) func clamp(_ v: Vector) -> Vector { v.replacing(with: floor, where: v .< floor) }
        taps.withUnsafeBufferPointer { taps in
            for m0 in stride(from: 0, to: M, by: channelBlock) {
                let real = min(channelBlock, M - m0)
                var vector = 0
                while vector < vectors {
                    let (ohA, blockA) = vector.quotientAndRemainder(dividingBy: blocks)
                    let (ohB, blockB) = min(vector + 1, vectors - 1).quotientAndRemainder(dividingBy: blocks)
                    let owA = blockStart(blockA, width: outW), owB = blockStart(blockB, width: outW)
                    let a = planes + ohA * columns + owA, b = planes + ohB * columns + owB
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
                    let outA = output + m0 * channelStride + ohA * outW + owA
                    let outB = output + m0 * channelStride + ohB * outW + owB
                    @inline(__always) func put(_ m: Int, _ sumA: Vector, _ sumB: Vector) {
                        if m < real { store(clamp(sumA), outA + m * channelStride); store(clamp(sumB), outB + m * channelStride) }
                    }
                    put(0, a0, b0); put(1, a1, b1); put(2, a2, b2); put(3, a3, b3); put(4, a4, b4); put(5, a5, b5)
                    vector += 2
                }
            }
        }
    }

    /// Channels rounded up to whole blocks: the rows of the padded weight and bias copies.
    static func paddedChannels(_ channels: Int) -> Int { (channels + channelBlock - 1) / channelBlock * channelBlock }

    /// weightGradient[m, tap] += Σ_(oh, ow) dY[m](oh, ow) · plane(tap)(oh, ow) for m < channels (rows of K taps).
    /// Six channels × two taps a pass: twelve independent sums; each dY vector serves two taps, each input vector
    /// six channels. A last block of fewer channels repeats its first channel in the missing places (never stored).
    static func weightGradient(planes: UnsafePointer<Float>, phases: PhasePlanes, taps: [Int],
                               outputGradient dY: UnsafePointer<Float>, channelStride: Int, channels M: Int,
                               weightGradient: UnsafeMutablePointer<Float>) {
        let outH = phases.geometry.outputHeight, outW = phases.geometry.outputWidth, columns = phases.columns
        let K = taps.count, whole = outW / lanes, rest = outW - whole * lanes
        // A last, partial block is read as the full vector that ends at outW, with its already-counted lanes zeroed.
        var restMask = Vector(repeating: 0)
        for l in (lanes - rest)..<lanes { restMask[l] = 1 }
        taps.withUnsafeBufferPointer { taps in
            for m0 in stride(from: 0, to: M, by: channelBlock) {
                let real = min(channelBlock, M - m0)
                @inline(__always) func offset(_ m: Int) -> Int { m < real ? m * channelStride : 0 }
                let s1 = offset(1), s2 = offset(2), s3 = offset(3), s4 = offset(4), s5 = offset(5)
                // Bands of output rows: a band's dY rows stay in L1 while every tap pair passes over them (a pass over
                // the whole plane would stream all of dY from L2 once a tap pair).
                for bandStart in stride(from: 0, to: outH, by: rowBand) {
                    let bandEnd = min(outH, bandStart + rowBand)
                    var index = 0
                    while index < K {
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
                        let g = weightGradient + m0 * K + index, second = index + 1 < K
                        @inline(__always) func add(_ m: Int, _ sumA: Vector, _ sumB: Vector) {
                            guard m < real else { return }
                            g[m * K] += sumA.sum()
                            if second { g[m * K + 1] += sumB.sum() }
                        }
                        add(0, a0, b0); add(1, a1, b1); add(2, a2, b2); add(3, a3, b3); add(4, a4, b4); add(5, a5, b5)
                        index += 2
                    }
                }
            }
        }
    }
}
