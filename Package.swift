// swift-tools-version:6.0
// alexnet-mpi: the 2012 two-tower AlexNet, trained across MPI processes on OpenBLAS.
import Foundation
import PackageDescription

// The numeric loops (im2col, LRN, pooling, ...) vectorise with AVX2 and FMA when the target CPU has them; every x86-64
// made since 2013 does (Haswell: x86-64-v3). ALEXNET_TARGET_CPU overrides it when building: a CPU name LLVM knows
// (e.g. `x86-64` for a CPU without AVX2, `native`, `sapphirerapids`), or `default` for the compiler's own choice.
let environment = ProcessInfo.processInfo.environment
#if arch(x86_64)
let defaultTargetCPU = "haswell"
#else
let defaultTargetCPU = "default"
#endif
let targetCPU = environment["ALEXNET_TARGET_CPU"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultTargetCPU
let cpuFlags = targetCPU == "default" ? [] : ["-target-cpu", targetCPU]
// -Ounchecked (no overflow traps) only where a benchmark shows it pays: the kernels and layers (about 10% of the step at
// W = 0.25 on Sapphire Rapids; no measurable effect at W = 1). File parsing, MPI, training control and the command line
// keep Swift's checks.
// -fno-math-errno: on Linux, Float.squareRoot() is a C shim calling sqrtf, which may set errno and so stays a scalar call
// in every loop; without errno it is LLVM's sqrt, which vectorises (LRN's loops are 3–4× faster for it).
let kernelFlags = ["-Ounchecked", "-Xcc", "-fno-math-errno"] + cpuFlags
// The direct convolution's loops again, with sixteen lanes and AVX-512 code: the convolution runs them only where the
// CPU has AVX-512 (conv1's forward 1.4–1.5× faster than the eight-lane AVX2 loops on the Emerald Rapids VM).
#if arch(x86_64)
let wideKernelFlags = ["-Ounchecked", "-Xcc", "-fno-math-errno", "-target-cpu", "skylake-avx512"]
#else
let wideKernelFlags = ["-Ounchecked", "-Xcc", "-fno-math-errno"]
#endif

let package = Package(
    name: "alexnet-mpi",
    products: [
        .executable(name: "alexnet-mpi", targets: ["alexnet-mpi"]),
        .library(name: "AlexNet", targets: ["AlexNet"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // OpenBLAS found through pkg-config: no hard-coded paths.
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Open MPI through pkg-config ("mpi" is Debian's alias of ompi-c), with a header of static inline wrappers.
        .systemLibrary(
            name: "CMPI",
            pkgConfig: "mpi",
            providers: [.apt(["libopenmpi-dev"])]
        ),
        // JPEG and PNG decoding of the image folders (libjpeg-turbo's TurboJPEG API and libpng), through pkg-config.
        .systemLibrary(
            name: "CTurboJPEG",
            pkgConfig: "libturbojpeg",
            providers: [.apt(["libturbojpeg0-dev"])]
        ),
        .systemLibrary(
            name: "CPNG",
            pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"])]
        ),
        // The direct convolution's loops built for AVX-512 (DirectKernel.swift is a link to AlexNetKernels' file).
        .target(
            name: "AlexNetKernelsWide",
            swiftSettings: [.define("DIRECT_KERNEL_SIXTEEN_LANES"),
                            .unsafeFlags(wideKernelFlags, .when(configuration: .release))]
        ),
        // The arithmetic: sgemm wrapper, im2col, the layers' forward and backward, counter-based randomness.
        .target(
            name: "AlexNetKernels",
            dependencies: ["COpenBLAS", "AlexNetKernelsWide"],
            swiftSettings: [.unsafeFlags(kernelFlags, .when(configuration: .release))]
        ),
        // Everything else that is not MPI: model, data, files, training, benchmark (checked arithmetic).
        .target(
            name: "AlexNet",
            dependencies: ["AlexNetKernels", "CTurboJPEG", "CPNG"],
            swiftSettings: [.unsafeFlags(cpuFlags, .when(configuration: .release))]
        ),
        // The MPI transport and layouts: the only Swift code that imports MPI.
        .target(
            name: "AlexNetMPI",
            dependencies: ["AlexNet", "CMPI"]
        ),
        .executableTarget(
            name: "alexnet-mpi",
            dependencies: [
                "AlexNet",
                "AlexNetMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "AlexNetTests",
            dependencies: ["AlexNet"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
