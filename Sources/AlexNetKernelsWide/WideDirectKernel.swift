// The AVX-512 build of the direct convolution's loops: DirectKernel.swift (a link to AlexNetKernels' file) compiled
// with sixteen lanes a vector and -target-cpu skylake-avx512. Run it only where the CPU has AVX-512
// (`CPUFeatures.hasAVX512` in AlexNetKernels): elsewhere its instructions fault.

public enum WideDirectKernel {
    public static let lanes = DirectKernel.lanes

    /// DirectKernel.forward with sixteen lanes; outputWidth ≥ `lanes`.
    public static func forward(planes: UnsafePointer<Float>, outputHeight: Int, outputWidth: Int, planeColumns: Int,
                               taps: [Int], weights: UnsafePointer<Float>, channels: Int, bias: UnsafePointer<Float>,
                               output: UnsafeMutablePointer<Float>, channelStride: Int, relu: Bool) {
        DirectKernel.forward(planes: planes, shape: DirectShape(outputHeight: outputHeight, outputWidth: outputWidth,
                                                                planeColumns: planeColumns),
                             taps: taps, weights: weights, channels: channels, bias: bias, output: output,
                             channelStride: channelStride, relu: relu)
    }

    /// DirectKernel.weightGradient with sixteen lanes; outputWidth ≥ `lanes`.
    public static func weightGradient(planes: UnsafePointer<Float>, outputHeight: Int, outputWidth: Int, planeColumns: Int,
                                      taps: [Int], outputGradient: UnsafePointer<Float>, channelStride: Int, channels: Int,
                                      laneSums: UnsafeMutablePointer<Float>) {
        DirectKernel.weightGradient(planes: planes, shape: DirectShape(outputHeight: outputHeight, outputWidth: outputWidth,
                                                                       planeColumns: planeColumns),
                                    taps: taps, outputGradient: outputGradient, channelStride: channelStride,
                                    channels: channels, laneSums: laneSums)
    }

    /// DirectKernel.sumLanes with sixteen lanes.
    public static func sumLanes(_ sums: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        DirectKernel.sumLanes(sums, count: count, into: out)
    }
}
