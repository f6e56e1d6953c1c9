// swift-tools-version:5.4
// libFuzzer targets for every parser of user-supplied bytes (docs/fuzzing.md). A package of its own,
// so that the main package's `swift build` / `swift test` never see it. Build and run through
// `scripts/fuzz.sh`, which passes `-sanitize=fuzzer,address` and `-parse-as-library`.
// Tools version 5.4 on purpose: from 5.5 on, SwiftPM links Linux executables with
// `--defsym main=<target>_main` (testable executables), and with `-parse-as-library` there is no such
// symbol; libFuzzer's own `main` is the entry point here.
import PackageDescription

/// Fuzz target name → the main package's products it needs.
let targets: [(name: String, products: [String])] = [
    ("FuzzGGUF", ["Gemma3Formats", "Gemma3Model", "Gemma3Tokenizers"]),
    ("FuzzSafeTensors", ["Gemma3Formats"]),
    ("FuzzConfig", ["Gemma3Model"]),
    ("FuzzGemmaTokenizer", ["Gemma3Tokenizers"]),
    ("FuzzGPT2Tokenizer", ["Gemma3Tokenizers"]),
    ("FuzzRecipe", ["Gemma3Training"]),
    ("FuzzJSONL", ["Gemma3Training"]),
    ("FuzzFineTuneData", ["Gemma3Training", "Gemma3Tokenizers"]),
    ("FuzzTokenFiles", ["Gemma3Training"]),
    ("FuzzServerRequest", ["Gemma3Serving", "Gemma3Tokenizers"]),
    ("FuzzJSONSchema", ["Gemma3StructuredOutput"]),
    ("FuzzRegex", ["Gemma3StructuredOutput"]),
]

let package = Package(
    name: "Gemma3Fuzz",
    dependencies: [.package(name: "Gemma3Swift", path: "..")],
    targets: [
        // The input size bound and the multi-file input layout the targets share.
        .target(name: "FuzzSupport"),
    ] + targets.map { t in
        .executableTarget(
            name: t.name,
            dependencies: ["FuzzSupport"] + t.products.map { .product(name: $0, package: "Gemma3Swift") },
            path: "Sources/\(t.name)")
    }
)
