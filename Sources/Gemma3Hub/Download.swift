import Dispatch
import Foundation
import Gemma3Infrastructure
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One file to fetch.
public struct DownloadRequest: Sendable {
    public var url: URL
    public var destination: URL
    /// Expected SHA-256 (hex). When nil, a Hugging Face `X-Linked-Etag` that is a SHA-256 is used.
    public var sha256: String?
    /// Expected size in bytes, when known beforehand.
    public var expectedBytes: Int64?

    public init(url: URL, destination: URL, sha256: String? = nil, expectedBytes: Int64? = nil) {
        self.url = url
        self.destination = destination
        self.sha256 = sha256?.lowercased()
        self.expectedBytes = expectedBytes
    }
}

/// What a download did.
public struct DownloadOutcome: Sendable, Equatable {
    public enum Kind: String, Sendable { case alreadyPresent = "already present", downloaded, resumed }
    public var kind: Kind
    public var path: String
    public var bytes: Int64
    /// Bytes taken from an earlier partial download (`.part` file).
    public var resumedFrom: Int64
    /// SHA-256 checked against (nil: no checksum was known).
    public var verifiedSHA256: String?
}

/// Download failures, each one line.
public enum DownloadError: Error, CustomStringConvertible, LocalizedError {
    case unreachable(host: String, reason: String)
    case http(url: String, status: Int)
    case incomplete(url: String, got: Int64, expected: Int64, partPath: String)
    case checksumMismatch(path: String, expected: String, actual: String)
    case sizeMismatch(path: String, expected: Int64, actual: Int64)
    case transfer(url: String, reason: String)
    case fallbackFailed(String)

    public var description: String {
        switch self {
        case .unreachable(let host, let reason):
            return "cannot reach \(host) (\(reason)); check the network connection or use a local copy of the files"
        case .http(let url, let status):
            return "\(url): HTTP \(status) \(HTTPURLResponse.localizedString(forStatusCode: status))"
        case .incomplete(let url, let got, let expected, let part):
            return "\(url): transfer stopped after \(got) of \(expected) bytes; run the command again to resume from \(part)"
        case .checksumMismatch(let path, let expected, let actual):
            return "\(path): SHA-256 mismatch (expected \(expected), got \(actual)); the corrupt download was deleted"
        case .sizeMismatch(let path, let expected, let actual):
            return "\(path): expected \(expected) bytes, got \(actual); the download was deleted"
        case .transfer(let url, let reason):
            return "\(url): download failed: \(reason)"
        case .fallbackFailed(let message):
            return message
        }
    }
    public var errorDescription: String? { description }

    /// True when the failure means "no connection to the server" (a fallback source may work).
    public var isUnreachable: Bool { if case .unreachable = self { return true }; return false }
}

/// HTTP(S) downloads with resume: bytes go to `<destination>.part`; a rerun continues from its size
/// with a `Range` request; the size is checked against `Content-Length`/`Content-Range` and the
/// SHA-256 against the expected value; only then is the file renamed to its destination.
/// Uses URLSession (FoundationNetworking/libcurl on Linux).
public struct HTTPDownloader: Sendable {
    /// Seconds without any data before giving up.
    public var idleTimeout: TimeInterval = 60
    /// Receives the transfer's progress (nil: none reported).
    public var progress: ProgressHandler?
    /// Download again even when the destination exists and matches its checksum.
    public var force = false

    public init(progress: ProgressHandler? = nil, force: Bool = false) {
        self.progress = progress
        self.force = force
    }

    /// Fetches `request.url` to `request.destination` (resuming a `.part` file), checks size and
    /// SHA-256, then renames it into place.

    public func download(_ request: DownloadRequest) throws -> DownloadOutcome {
        let fm = FileManager.default
        let dest = request.destination
        try fm.createDirectory(at: dest.deletingLastPathComponent(), withIntermediateDirectories: true)
        if !force, fm.fileExists(atPath: dest.path) {
            let size = fileSize(dest)
            let sizeOK = request.expectedBytes.map { $0 == size } ?? true
            if sizeOK, let expected = request.sha256 {
                if try SHA256Hasher.hex(ofFile: dest) == expected {
                    return DownloadOutcome(kind: .alreadyPresent, path: dest.path, bytes: size, resumedFrom: 0,
                                           verifiedSHA256: expected)
                }
            } else if sizeOK {
                // Files are renamed into place only after a complete, checked transfer.
                return DownloadOutcome(kind: .alreadyPresent, path: dest.path, bytes: size, resumedFrom: 0,
                                       verifiedSHA256: nil)
            }
        }
        let part = URL(fileURLWithPath: dest.path + ".part")
        var attempt = 0
        while true {
            attempt += 1
            let have = fm.fileExists(atPath: part.path) ? fileSize(part) : 0
            let result = try transfer(request.url, to: part, resumeFrom: have)
            switch result.action {
            case .restart where attempt < 3:
                unlink(part.path)
                continue
            case .restart:
                throw DownloadError.transfer(url: request.url.absoluteString, reason: "server does not honour byte ranges consistently")
            case .done:
                break
            }
            let size = fileSize(part)
            let expectedSize = result.totalBytes ?? request.expectedBytes
            if let expectedSize, size != expectedSize {
                if size < expectedSize {
                    throw DownloadError.incomplete(url: request.url.absoluteString, got: size, expected: expectedSize, partPath: part.path)
                }
                unlink(part.path)
                throw DownloadError.sizeMismatch(path: dest.path, expected: expectedSize, actual: size)
            }
            if let expected = request.expectedBytes, size != expected {
                unlink(part.path)
                throw DownloadError.sizeMismatch(path: dest.path, expected: expected, actual: size)
            }
            let expectedHash = request.sha256 ?? result.linkedSHA256
            if let expectedHash {
                let actual = try SHA256Hasher.hex(ofFile: part)
                if actual != expectedHash {
                    unlink(part.path)
                    throw DownloadError.checksumMismatch(path: dest.path, expected: expectedHash, actual: actual)
                }
            }
            if rename(part.path, dest.path) != 0 {
                throw FileIOError.renameFailed(part.path, dest.path, errno)
            }
            syncDirectory(dest.deletingLastPathComponent())
            return DownloadOutcome(kind: have > 0 && result.resumed ? .resumed : .downloaded, path: dest.path,
                                   bytes: size, resumedFrom: result.resumed ? have : 0, verifiedSHA256: expectedHash)
        }
    }

    // MARK: One HTTP exchange

    struct TransferResult {
        enum Action { case done, restart }
        var action: Action
        /// Full size of the remote file when the server said so.
        var totalBytes: Int64?
        /// Whether the bytes were appended to an existing partial file.
        var resumed: Bool
        /// SHA-256 announced by a Hugging Face redirect (`X-Linked-Etag`).
        var linkedSHA256: String?
    }

    private func transfer(_ url: URL, to part: URL, resumeFrom: Int64) throws -> TransferResult {
        let delegate = StreamingDelegate(partPath: part.path, resumeFrom: resumeFrom, progress: progress,
                                         label: url.lastPathComponent)
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = idleTimeout
        config.timeoutIntervalForResource = 7 * 24 * 3600
        config.requestCachePolicy = .reloadIgnoringLocalCacheData
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        let session = URLSession(configuration: config, delegate: delegate, delegateQueue: queue)
        defer { session.finishTasksAndInvalidate() }
        var req = URLRequest(url: url)
        req.setValue("identity", forHTTPHeaderField: "Accept-Encoding")  // byte ranges of the raw file
        req.setValue("gemma3-swift", forHTTPHeaderField: "User-Agent")
        if resumeFrom > 0 { req.setValue("bytes=\(resumeFrom)-", forHTTPHeaderField: "Range") }
        delegate.rangeHeader = req.value(forHTTPHeaderField: "Range")
        let task = session.dataTask(with: req)
        task.resume()
        delegate.finished.wait()

        if let e = delegate.failure { throw e }
        if let error = delegate.transportError {
            let host = url.host ?? url.absoluteString
            if let u = error as? URLError, Self.unreachableCodes.contains(u.code) {
                throw DownloadError.unreachable(host: host, reason: Self.describe(u))
            }
            if delegate.status == nil {
                throw DownloadError.unreachable(host: host, reason: error.localizedDescription)
            }
            // The connection broke mid-transfer: what arrived stays in .part for the next run.
            if let total = delegate.totalBytes {
                throw DownloadError.incomplete(url: url.absoluteString, got: fileSize(part), expected: total, partPath: part.path)
            }
            throw DownloadError.transfer(url: url.absoluteString, reason: error.localizedDescription)
        }
        switch delegate.decision {
        case .restart:
            return TransferResult(action: .restart, totalBytes: nil, resumed: false, linkedSHA256: delegate.linkedSHA256)
        case .alreadyComplete:
            return TransferResult(action: .done, totalBytes: delegate.totalBytes, resumed: true, linkedSHA256: delegate.linkedSHA256)
        case .append, .fromStart:
            if let e = delegate.writeError { throw e }
            return TransferResult(action: .done, totalBytes: delegate.totalBytes, resumed: delegate.decision == .append,
                                  linkedSHA256: delegate.linkedSHA256)
        case .undecided:
            throw DownloadError.transfer(url: url.absoluteString, reason: "no response")
        }
    }

    static let unreachableCodes: Set<URLError.Code> = [
        .notConnectedToInternet, .cannotFindHost, .cannotConnectToHost, .dnsLookupFailed,
        .timedOut, .networkConnectionLost, .internationalRoamingOff, .secureConnectionFailed,
    ]

    static func describe(_ e: URLError) -> String {
        switch e.code {
        case .cannotFindHost, .dnsLookupFailed: return "host name could not be resolved"
        case .cannotConnectToHost: return "connection refused"
        case .notConnectedToInternet: return "no network connection"
        case .timedOut: return "timed out"
        case .networkConnectionLost: return "connection lost"
        case .secureConnectionFailed: return "TLS connection failed"
        default: return e.localizedDescription
        }
    }
}

func fileSize(_ url: URL) -> Int64 {
    var st = stat()
    return stat(url.path, &st) == 0 ? Int64(st.st_size) : 0
}

/// Receives one HTTP response and streams its body into the `.part` file.
private final class StreamingDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    enum Decision { case undecided, append, fromStart, alreadyComplete, restart }

    let partPath: String
    let resumeFrom: Int64
    let progress: ProgressHandler?
    let label: String
    let start = Date()
    var rangeHeader: String?
    let finished = DispatchSemaphore(value: 0)

    // Written on the delegate queue, read after `finished` is signalled.
    var decision = Decision.undecided
    var status: Int?
    var totalBytes: Int64?
    var linkedSHA256: String?
    var transportError: Error?
    var failure: DownloadError?
    var writeError: Error?
    var fd: Int32 = -1
    var received: Int64 = 0

    init(partPath: String, resumeFrom: Int64, progress: ProgressHandler?, label: String) {
        self.partPath = partPath
        self.resumeFrom = resumeFrom
        self.progress = progress
        self.label = label
    }

    private func report(isFinal: Bool) {
        guard let progress, let total = totalBytes else { return }
        progress(ProgressUpdate(label: label, bytesDone: received, totalBytes: total,
                                elapsed: Date().timeIntervalSince(start), isFinal: isFinal))
    }

    /// Keeps the Range header across redirects (the Hub redirects to a CDN) and remembers the
    /// size and SHA-256 the Hub announces for large files.
    func urlSession(
        _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void
    ) {
        if let etag = header(response, "X-Linked-Etag") {
            let hex = etag.trimmingCharacters(in: CharacterSet(charactersIn: "\"W/ ")).lowercased()
            if hex.count == 64, hex.allSatisfy({ $0.isHexDigit }) { linkedSHA256 = hex }
        }
        var next = request
        if let rangeHeader { next.setValue(rangeHeader, forHTTPHeaderField: "Range") }
        next.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
        completionHandler(next)
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
    ) {
        guard let http = response as? HTTPURLResponse else {
            decision = .fromStart
            openPart(truncate: true)
            completionHandler(.allow)
            return
        }
        status = http.statusCode
        let length = header(http, "Content-Length").flatMap { Int64($0) }
        switch http.statusCode {
        case 200:
            // Full body (also when the server ignored our Range): start the part file over.
            decision = .fromStart
            totalBytes = length
            openPart(truncate: true)
        case 206:
            // "bytes start-end/total"
            let range = header(http, "Content-Range") ?? ""
            let parsed = Self.parseContentRange(range)
            guard let start = parsed.start, start == resumeFrom else {
                decision = .restart
                completionHandler(.cancel)
                return
            }
            decision = .append
            totalBytes = parsed.total ?? length.map { $0 + resumeFrom }
            received = resumeFrom
            openPart(truncate: false)
        case 416:
            // Nothing left to send: complete if the part already has the whole file.
            let parsed = Self.parseContentRange(header(http, "Content-Range") ?? "")
            if let total = parsed.total, total == resumeFrom {
                decision = .alreadyComplete
                totalBytes = total
            } else {
                decision = .restart
            }
            completionHandler(.cancel)
            return
        default:
            failure = .http(url: http.url?.absoluteString ?? "", status: http.statusCode)
            completionHandler(.cancel)
            return
        }
        completionHandler(writeError == nil ? .allow : .cancel)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard fd >= 0, writeError == nil else { return }
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var p = raw.baseAddress!
            var left = raw.count
            while left > 0 {
                let n = write(fd, p, left)
                if n < 0 {
                    if errno == EINTR { continue }
                    writeError = FileIOError.writeFailed(partPath, errno)
                    dataTask.cancel()
                    return
                }
                p += n
                left -= n
            }
        }
        received += Int64(data.count)
        report(isFinal: false)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if let error, decision != .restart, decision != .alreadyComplete, failure == nil, writeError == nil {
            transportError = error
        }
        if fd >= 0 {
            if fsync(fd) != 0, writeError == nil { writeError = FileIOError.syncFailed(partPath, errno) }
            close(fd)
            fd = -1
            report(isFinal: true)
        }
        finished.signal()
    }

    private func openPart(truncate: Bool) {
        fd = open(partPath, O_WRONLY | O_CREAT | O_APPEND | (truncate ? O_TRUNC : 0), 0o644)
        if fd < 0 { writeError = FileIOError.cannotCreate(partPath, errno) }
    }

    private func header(_ r: HTTPURLResponse, _ name: String) -> String? {
        for (k, v) in r.allHeaderFields {
            if let k = k as? String, k.caseInsensitiveCompare(name) == .orderedSame { return v as? String }
        }
        return nil
    }

    /// Parses `bytes start-end/total` or `bytes */total`.
    static func parseContentRange(_ s: String) -> (start: Int64?, total: Int64?) {
        let t = s.trimmingCharacters(in: .whitespaces)
        guard t.lowercased().hasPrefix("bytes") else { return (nil, nil) }
        let rest = t.dropFirst(5).trimmingCharacters(in: .whitespaces)
        let halves = rest.split(separator: "/", maxSplits: 1).map(String.init)
        let total = halves.count == 2 ? Int64(halves[1]) : nil
        let start = halves.first.flatMap { $0.split(separator: "-").first.flatMap { Int64($0) } }
        return (start, total)
    }
}
