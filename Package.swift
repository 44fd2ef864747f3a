// swift-tools-version:6.0
// alexnet-mpi: the 2012 two-tower AlexNet, trained across MPI processes on OpenBLAS.
import PackageDescription

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
        .target(
            name: "AlexNet",
            dependencies: ["COpenBLAS"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "alexnet-mpi",
            dependencies: [
                "AlexNet",
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
