// swift-tools-version:6.0
// alexnet-mpi: the 2012 two-tower AlexNet, trained across MPI processes on OpenBLAS.
import PackageDescription

// The Swift loops (LRN, pooling, im2col, ...) vectorise with AVX2 and FMA when the target CPU has them; every
// x86-64 made since 2013 does (Haswell: x86-64-v3). Elsewhere the compiler's default is kept.
#if arch(x86_64)
let vectorFlags = ["-Ounchecked", "-target-cpu", "haswell"]
#else
let vectorFlags = ["-Ounchecked"]
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
        .target(
            name: "AlexNet",
            dependencies: ["COpenBLAS"],
            swiftSettings: [.unsafeFlags(vectorFlags, .when(configuration: .release))]
        ),
        // The MPI transport and layouts: the only Swift code that imports MPI.
        .target(
            name: "AlexNetMPI",
            dependencies: ["AlexNet", "CMPI"],
            swiftSettings: [.unsafeFlags(vectorFlags, .when(configuration: .release))]
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
    // Numeric code over unsafe buffers shared by a few worker threads: Swift 5 mode keeps the concurrency checker
    // from demanding Sendable wrappers around every pointer.
    swiftLanguageModes: [.v5]
)
