import Foundation
import Gemma3Infrastructure
import Gemma3TestSupport
import Testing
@testable import Gemma3Hub

/// The downloader against a local HTTP server on 127.0.0.1 (never the internet).
@Suite(.serialized) struct DownloadTests {
    /// A served directory with one pseudo-random 300 kB file; returns (server, workdir, file bytes).
    func makeServer() throws -> (LocalHTTPServer, URL, Data) {
        let work = try TestPaths.temporaryDirectory("download")
        let served = work.appendingPathComponent("served")
        try FileManager.default.createDirectory(at: served, withIntermediateDirectories: true)
        var rng = SystemRandomNumberGenerator()
        let bytes = Data((0..<300_000).map { _ in UInt8.random(in: 0...255, using: &rng) })
        try bytes.write(to: served.appendingPathComponent("data.txt"))
        return (try LocalHTTPServer(root: served), work, bytes)
    }

    @Test func downloadsWholeFileAndChecksSHA256() throws {
        let (server, work, bytes) = try makeServer()
        defer { server.stop(); try? FileManager.default.removeItem(at: work) }
        let dest = work.appendingPathComponent("out/data.txt")
        let sha = SHA256Hasher.hex(of: bytes)
        let r = try HTTPDownloader().download(
            DownloadRequest(url: server.url("files", "data.txt"), destination: dest, sha256: sha))
        #expect(r.kind == .downloaded)
        #expect(r.bytes == Int64(bytes.count))
        #expect(r.verifiedSHA256 == sha)
        #expect(try Data(contentsOf: dest) == bytes)
        #expect(!FileManager.default.fileExists(atPath: dest.path + ".part"))
        // A second call finds the verified file and does not fetch it again.
        let again = try HTTPDownloader().download(
            DownloadRequest(url: server.url("files", "data.txt"), destination: dest, sha256: sha))
        #expect(again.kind == .alreadyPresent)
        #expect(try server.requestLog().count == 1)
    }

    @Test func resumesFromPartialFileThroughRedirect() throws {
        let (server, work, bytes) = try makeServer()
        defer { server.stop(); try? FileManager.default.removeItem(at: work) }
        let dest = work.appendingPathComponent("data.txt")
        try bytes.prefix(123_457).write(to: URL(fileURLWithPath: dest.path + ".part"))
        // The redirect announces the SHA-256 (as the Hub's X-Linked-Etag does); no checksum is passed.
        let r = try HTTPDownloader().download(
            DownloadRequest(url: server.url("redirect", "data.txt"), destination: dest))
        #expect(r.kind == .resumed)
        #expect(r.resumedFrom == 123_457)
        #expect(r.verifiedSHA256 == SHA256Hasher.hex(of: bytes))
        #expect(try Data(contentsOf: dest) == bytes)
        let log = try server.requestLog()
        #expect(log.map(\.path) == ["/redirect/data.txt", "/files/data.txt"])
        #expect(log.last?.range == "bytes=123457-", "the Range header must survive the redirect")
    }

    @Test func interruptedTransferKeepsPartAndResumes() throws {
        let (server, work, bytes) = try makeServer()
        defer { server.stop(); try? FileManager.default.removeItem(at: work) }
        let dest = work.appendingPathComponent("data.txt")
        let part = URL(fileURLWithPath: dest.path + ".part")
        #expect(throws: DownloadError.self) {
            try HTTPDownloader().download(
                DownloadRequest(url: server.url("truncate", "data.txt"), destination: dest))
        }
        #expect(!FileManager.default.fileExists(atPath: dest.path))
        let partial = try Data(contentsOf: part)
        #expect(partial.count > 0 && partial.count < bytes.count)
        #expect(partial == bytes.prefix(partial.count))
        let r = try HTTPDownloader().download(
            DownloadRequest(url: server.url("files", "data.txt"), destination: dest, sha256: SHA256Hasher.hex(of: bytes)))
        #expect(r.kind == .resumed)
        #expect(r.resumedFrom == Int64(partial.count))
        #expect(try Data(contentsOf: dest) == bytes)
        #expect(try server.requestLog().last?.range == "bytes=\(partial.count)-")
    }

    @Test func completePartFileIsAcceptedOn416() throws {
        let (server, work, bytes) = try makeServer()
        defer { server.stop(); try? FileManager.default.removeItem(at: work) }
        let dest = work.appendingPathComponent("data.txt")
        try bytes.write(to: URL(fileURLWithPath: dest.path + ".part"))
        let r = try HTTPDownloader().download(
            DownloadRequest(url: server.url("files", "data.txt"), destination: dest, sha256: SHA256Hasher.hex(of: bytes)))
        #expect(try Data(contentsOf: dest) == bytes)
        #expect(r.bytes == Int64(bytes.count))
    }

    @Test func serverIgnoringRangeRestartsFromZero() throws {
        let (server, work, bytes) = try makeServer()
        defer { server.stop(); try? FileManager.default.removeItem(at: work) }
        let dest = work.appendingPathComponent("data.txt")
        // A stale partial file with wrong bytes: must be replaced, not appended to.
        try Data(repeating: 0xAB, count: 5000).write(to: URL(fileURLWithPath: dest.path + ".part"))
        let r = try HTTPDownloader().download(
            DownloadRequest(url: server.url("norange", "data.txt"), destination: dest))
        #expect(r.kind == .downloaded)
        #expect(try Data(contentsOf: dest) == bytes)
    }

    @Test func checksumMismatchDeletesDownload() throws {
        let (server, work, _) = try makeServer()
        defer { server.stop(); try? FileManager.default.removeItem(at: work) }
        let dest = work.appendingPathComponent("data.txt")
        do {
            _ = try HTTPDownloader().download(
                DownloadRequest(url: server.url("files", "data.txt"), destination: dest, sha256: String(repeating: "1", count: 64)))
            Issue.record("a wrong checksum must fail")
        } catch let e as DownloadError {
            guard case .checksumMismatch = e else { Issue.record("wrong error: \(e)"); return }
            #expect(!e.description.contains("\n"))
        }
        #expect(!FileManager.default.fileExists(atPath: dest.path))
        #expect(!FileManager.default.fileExists(atPath: dest.path + ".part"))
        // Same with a wrong checksum announced by the redirect.
        #expect(throws: DownloadError.self) {
            try HTTPDownloader().download(
                DownloadRequest(url: server.url("badetag", "data.txt"), destination: dest))
        }
        #expect(directoryEntries(work).filter { $0.hasPrefix("data.txt") }.isEmpty)
    }

    @Test func httpErrorAndUnreachableServerGiveOneLineErrors() throws {
        let (server, work, _) = try makeServer()
        defer { server.stop(); try? FileManager.default.removeItem(at: work) }
        let dest = work.appendingPathComponent("missing.txt")
        do {
            _ = try HTTPDownloader().download(
                DownloadRequest(url: server.url("files", "missing.txt"), destination: dest))
            Issue.record("404 must fail")
        } catch let e as DownloadError {
            #expect(e.description.contains("HTTP 404"))
        }
        // Nothing listens on port 1.
        do {
            _ = try HTTPDownloader().download(
                DownloadRequest(url: URL(string: "http://127.0.0.1:1/x.txt")!, destination: dest))
            Issue.record("an unreachable server must fail")
        } catch let e as DownloadError {
            #expect(e.isUnreachable, "\(e)")
            #expect(e.description.hasPrefix("cannot reach 127.0.0.1"))
            #expect(!e.description.contains("\n"))
        }
        #expect(!FileManager.default.fileExists(atPath: dest.path))
    }

    /// `gemma3 download gpt2-tokenizer` logic against a local "hub" holding the files from ../shared.
    @Test func gpt2TokenizerFromLocalHub() throws {
        let work = try TestPaths.temporaryDirectory("gpt2dl")
        defer { try? FileManager.default.removeItem(at: work) }
        let served = work.appendingPathComponent("hub")
        try FileManager.default.createDirectory(at: served, withIntermediateDirectories: true)
        for name in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: TestPaths.gpt2.appendingPathComponent(name),
                                             to: served.appendingPathComponent(name))
        }
        let server = try LocalHTTPServer(root: served)
        defer { server.stop() }
        let target = work.appendingPathComponent("cache/gpt2")
        let hub = server.base.appendingPathComponent("files/")
        let first = try GPT2TokenizerDownload.fetch(into: target, source: .hub, hubURL: hub)
        #expect(first.source == "hub")
        #expect(first.files.map(\.verifiedSHA256) == GPT2TokenizerDownload.files.map(\.sha256))
        for name in ["vocab.json", "merges.txt"] {
            #expect(try Data(contentsOf: target.appendingPathComponent(name))
                    == Data(contentsOf: TestPaths.gpt2.appendingPathComponent(name)))
        }
        let second = try GPT2TokenizerDownload.fetch(into: target, source: .hub, hubURL: hub)
        #expect(second.source == "cache")

        // A hub serving a corrupted merges.txt: checksum error, nothing installed.
        var corrupted = try Data(contentsOf: served.appendingPathComponent("merges.txt"))
        corrupted[100] ^= 0x20
        try corrupted.write(to: served.appendingPathComponent("merges.txt"))
        let other = work.appendingPathComponent("cache2")
        #expect(throws: DownloadError.self) {
            try GPT2TokenizerDownload.fetch(into: other, source: .hub, hubURL: hub)
        }
        #expect(!directoryEntries(other).contains("merges.txt"))
        #expect(!directoryEntries(other).contains("merges.txt.part"))
    }
}
