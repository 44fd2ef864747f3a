// A direct convolution for strided layers with few input channels (conv1: 3 channels, 11 × 11, stride 4), forward
// and weight gradient side by side. im2col would expand each image 7× into a column buffer that an sgemm with few
// output rows then reads once (at small widths the layer is bound by that traffic); here each image is split once
// into its stride phases and every tap is a contiguous vector load.
//
// Phase planes: padded input row y = s·r + a and column x = s·q + b go to plane (c, a, b) at (r, q), so the tap
// (i, j) = (s·dy + a, s·dx + b) of output (oh, ow) reads plane (c, a, b) at (oh + dy, ow + dx): a contiguous run in ow.
// The vector loops are in DirectKernel.swift (eight lanes) and AlexNetKernelsWide (sixteen, AVX-512).
import AlexNetKernelsWide

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

    /// Offset of every tap (c, i, j) in the phase planes, in weight order.
    var tapOffsets: [Int] {
        let k = geometry.kernel
        var out: [Int] = []
        for c in 0..<channels { for i in 0..<k { for j in 0..<k { out.append(tap(c, i, j)) } } }
        return out
    }

    /// What the kernel loops need of the layer.
    var shape: DirectShape {
        DirectShape(outputHeight: geometry.outputHeight, outputWidth: geometry.outputWidth, planeColumns: columns)
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
    /// Whether this layer runs as a direct convolution: strided, outputs at least one vector wide, and few enough
    /// output channels a part for the kernel it gets (with many, sgemm's wider kernels win over the im2col they need).
    public var runsDirect: Bool {
        geometry.stride > 1 && directLanesUsed > 0 && outputChannelsPerPart <= Self.directChannelLimit(lanes: directLanesUsed)
    }

    /// Output channels a part up to which the direct kernel beats im2col + sgemm (`bench-convolutions`, one thread, the
    /// Emerald Rapids VM): with eight lanes 24 (at 48, conv1 at W = 1 took 1.05–1.15× im2col's time), with sixteen 48
    /// (0.84×: forward 95–101 against 132–133 ms, backward 143–145 against 150–158 ms, batch 128).
    public static func directChannelLimit(lanes: Int) -> Int { lanes >= WideDirectKernel.lanes ? 48 : 24 }

    /// Lanes of the direct kernel this layer runs: sixteen (AVX-512, AlexNetKernelsWide) where `directKernelLanes`
    /// allows them, the CPU has AVX-512 and the output is at least that wide; else eight (AVX2) where it allows them
    /// and the output is that wide; else 0 (im2col + sgemm).
    public var directLanesUsed: Int {
        let wide = WideDirectKernel.lanes, narrow = DirectKernel.lanes
        if directKernelLanes >= wide && CPUFeatures.hasAVX512 && geometry.outputWidth >= wide { return wide }
        return directKernelLanes >= narrow && geometry.outputWidth >= narrow ? narrow : 0
    }
    /// The widest direct kernel this CPU runs, and the narrow (AVX2) one.
    public static var bestDirectLanes: Int { CPUFeatures.hasAVX512 ? WideDirectKernel.lanes : DirectKernel.lanes }
    public static var narrowDirectLanes: Int { DirectKernel.lanes }

    /// The start-up line on the direct kernel in use.
    public static var directKernelReport: String {
        bestDirectLanes == WideDirectKernel.lanes
            ? "\(WideDirectKernel.lanes)-lane AVX-512 loops (up to \(directChannelLimit(lanes: WideDirectKernel.lanes)) output channels a tower)"
            : "\(DirectKernel.lanes)-lane AVX2 loops (up to \(directChannelLimit(lanes: DirectKernel.lanes)) output channels a tower; this CPU has no AVX-512)"
    }

    /// Channel groups that see the same input: all parts together when the input is shared (conv1: both towers'
    /// filters run over one split of each image), else one group a part. Returns (groups, output channels a group).
    var directGroups: (count: Int, channels: Int) {
        sharedInput ? (1, parts * outputChannelsPerPart) : (parts, outputChannelsPerPart)
    }

    /// Forward of a strided layer without im2col: output (parts·M, N, outH, outW) = conv(input) + bias, ReLU if asked.
    func directForward(input: UnsafePointer<Float>, batch: Int, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                       output: UnsafeMutablePointer<Float>, relu: Bool) {
        let phases = PhasePlanes(geometry: geometry, channels: inputChannelsPerPart)
        let taps = phases.tapOffsets, shape = phases.shape, wide = directLanesUsed == WideDirectKernel.lanes
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
                    let out = output + g * M * ldc + n * geometry.outputPlane
                    if wide {
                        WideDirectKernel.forward(planes: planes, outputHeight: shape.outputHeight, outputWidth: shape.outputWidth,
                                                 planeColumns: shape.planeColumns, taps: taps, weights: byTap + g * K * paddedM,
                                                 channels: M, bias: paddedBias + g * paddedM, output: out, channelStride: ldc, relu: relu)
                    } else {
                        DirectKernel.forward(planes: planes, shape: shape, taps: taps, weights: byTap + g * K * paddedM, channels: M,
                                             bias: paddedBias + g * paddedM, output: out, channelStride: ldc, relu: relu)
                    }
                }
            }
        }
    }

    /// Weight and bias gradients (overwritten) of a strided layer without im2col (no input gradient: conv1 needs none).
    func directWeightGradient(input: UnsafePointer<Float>, batch: Int, outputGradient: UnsafePointer<Float>,
                              weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>) {
        let phases = PhasePlanes(geometry: geometry, channels: inputChannelsPerPart)
        let taps = phases.tapOffsets, shape = phases.shape, wide = directLanesUsed == WideDirectKernel.lanes
        let M = directGroups.channels, K = patchSize, ldc = batch * geometry.outputPlane
        let inChannelStride = batch * geometry.inputPlane, lanes = directLanesUsed
        // Output channels split across threads (each thread sums its own rows over every image: the same order for
        // any thread count); every thread splits the images it needs into its own phase planes, and keeps a vector
        // of sums a weight (laneSums (rows, K, lanes)) whose lanes it adds at the end.
        Parallel.forEachChunk(outputChannels, minimumPerThread: DirectKernel.channelBlock, threads: threads) { range in
            let planes = UnsafeMutablePointer<Float>.allocate(capacity: phases.count)
            let laneSums = UnsafeMutablePointer<Float>.allocate(capacity: range.count * K * lanes)
            laneSums.initialize(repeating: 0, count: range.count * K * lanes)
            defer { planes.deallocate(); laneSums.deallocate() }
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
                    let dY = outputGradient + row * ldc + n * geometry.outputPlane
                    let sums = laneSums + (row - range.lowerBound) * K * lanes
                    if wide {
                        WideDirectKernel.weightGradient(planes: planes, outputHeight: shape.outputHeight, outputWidth: shape.outputWidth,
                                                        planeColumns: shape.planeColumns, taps: taps, outputGradient: dY,
                                                        channelStride: ldc, channels: end - row, laneSums: sums)
                    } else {
                        DirectKernel.weightGradient(planes: planes, shape: shape, taps: taps, outputGradient: dY,
                                                    channelStride: ldc, channels: end - row, laneSums: sums)
                    }
                    row = end
                }
            }
            let out = weightGradient + range.lowerBound * K
            if wide { WideDirectKernel.sumLanes(laneSums, count: range.count * K, into: out) }
            else { DirectKernel.sumLanes(laneSums, count: range.count * K, into: out) }
        }
        sumRows(outputGradient, rows: outputChannels, rowLength: ldc, into: biasGradient, threads: threads)
    }
}
