import Foundation
import Gemma3Infrastructure
import Gemma3TestSupport
import Gemma3Tokenizers
import Testing
@testable import Gemma3Training

private struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Starts `gemma3 args…` with its own GEMMA3_CACHE (so no user cache is touched).
private func startGemma3(_ args: [String], cache: URL) throws -> (Process, Pipe, Pipe) {
    let p = Process()
    p.executableURL = try gemma3Executable()
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env["GEMMA3_CACHE"] = cache.path
    p.environment = env
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    return (p, out, err)
}

private func runGemma3(_ args: [String], cache: URL) throws -> RunResult {
    let (p, out, err) = try startGemma3(args, cache: cache)
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return RunResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                     stderr: String(decoding: e, as: UTF8.self))
}

@Suite(.serialized) struct DataCommandLineTests {
    @Test func prepareJSONAndOneLineErrors() throws {
        let work = try TestPaths.temporaryDirectory("cli-prepare")
        defer { try? FileManager.default.removeItem(at: work) }
        let valid = TestPaths.tinyStories.appendingPathComponent("valid.txt").path
        let out = work.appendingPathComponent("out").path
        let ok = try runGemma3(["prepare", "--train", valid, "--val-fraction", "0.1", "--out", out,
                                "--tokenizer", TestPaths.gpt2.path, "--json", "--quiet"], cache: work)
        #expect(ok.status == 0, "\(ok.stderr)")
        // Exactly one JSON object on stdout.
        let lines = ok.stdout.split(separator: "\n")
        #expect(lines.count == 1)
        let object = try JSONSerialization.jsonObject(with: Data(ok.stdout.utf8)) as? [String: Any]
        let meta = object?["meta"] as? [String: Any]
        let train = meta?["train"] as? [String: Any], val = meta?["val"] as? [String: Any]
        #expect((train?["documents"] as? Int ?? 0) + (val?["documents"] as? Int ?? 0) == 400)
        #expect(object?["mb_per_s"] is Double)

        // Existing outputs: refused, non-zero exit, one line on stderr.
        let again = try runGemma3(["prepare", "--train", valid, "--val-fraction", "0.1", "--out", out,
                                   "--tokenizer", TestPaths.gpt2.path, "--quiet"], cache: work)
        #expect(again.status != 0)
        #expect(again.stderr.contains("already exists; pass --force"), "\(again.stderr)")
        #expect(again.stderr.trimmingCharacters(in: .newlines).split(separator: "\n").count == 1, "\(again.stderr)")

        let missing = try runGemma3(["prepare", "--train", work.appendingPathComponent("nope.txt").path,
                                     "--val", valid, "--out", work.appendingPathComponent("out2").path,
                                     "--tokenizer", TestPaths.gpt2.path], cache: work)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("nope.txt: no such file"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: work.appendingPathComponent("out2").path))

        let both = try runGemma3(["prepare", "--train", valid, "--val", valid, "--val-fraction", "0.1",
                                  "--out", out], cache: work)
        #expect(both.status != 0)
        #expect(both.stderr.contains("either --val FILE or --val-fraction F"), "\(both.stderr)")
    }

    /// Ctrl-C during a run removes the temporary files and the output directory it created.
    @Test func interruptLeavesNoPartialOutput() throws {
        let work = try TestPaths.temporaryDirectory("cli-sigint")
        defer { try? FileManager.default.removeItem(at: work) }
        // ~100 MB of stories: far longer to tokenize than the moment it takes to interrupt it.
        let big = work.appendingPathComponent("big.txt")
        let story = try Data(contentsOf: TestPaths.tinyStories.appendingPathComponent("train.txt"))
        FileManager.default.createFile(atPath: big.path, contents: nil)
        let h = try FileHandle(forWritingTo: big)
        for _ in 0..<30 { h.write(story) }
        try h.close()
        let out = work.appendingPathComponent("out")
        let (p, _, err) = try startGemma3(["prepare", "--train", big.path, "--val-fraction", "0.05", "--out", out.path,
                                           "--tokenizer", TestPaths.gpt2.path], cache: work)
        // Wait until the temporary outputs exist, then interrupt.
        let deadline = Date().addingTimeInterval(60)
        while directoryEntries(out).filter({ $0.contains(".tmp-") }).count < 2 && Date() < deadline && p.isRunning {
            usleep(20_000)
        }
        #expect(p.isRunning, "prepare finished before it could be interrupted")
        kill(p.processIdentifier, SIGINT)
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 128 + SIGINT, "\(String(decoding: e, as: UTF8.self))")
        #expect(!FileManager.default.fileExists(atPath: out.path), "left: \(directoryEntries(out))")
    }

    /// `gemma3 download tinystories` against a local mirror (never the internet), resuming a .part file.
    @Test func downloadTinyStoriesFromLocalMirror() throws {
        let work = try TestPaths.temporaryDirectory("cli-download")
        defer { try? FileManager.default.removeItem(at: work) }
        let served = work.appendingPathComponent("mirror")
        try FileManager.default.createDirectory(at: served, withIntermediateDirectories: true)
        let valid = try Data(contentsOf: TestPaths.tinyStories.appendingPathComponent("valid.txt"))
        try valid.write(to: served.appendingPathComponent("TinyStories-valid.txt"))
        let server = try LocalHTTPServer(root: served)
        defer { server.stop() }
        let dest = work.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: dest, withIntermediateDirectories: true)
        try valid.prefix(100_000).write(to: dest.appendingPathComponent("TinyStories-valid.txt.part"))
        let r = try runGemma3(["download", "tinystories", "--split", "valid", "--dir", dest.path,
                               "--base-url", server.base.appendingPathComponent("redirect").absoluteString, "--json"],
                              cache: work)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Data(contentsOf: dest.appendingPathComponent("TinyStories-valid.txt")) == valid)
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let file = (object?["files"] as? [[String: Any]])?.first
        #expect(file?["status"] as? String == "resumed")
        #expect(file?["resumed_from"] as? Int == 100_000)
        #expect(file?["sha256"] as? String == SHA256Hasher.hex(of: valid))

        // No server: one line, non-zero exit.
        let offline = try runGemma3(["download", "tinystories", "--split", "train", "--dir", dest.path,
                                     "--base-url", "http://127.0.0.1:1/"], cache: work)
        #expect(offline.status != 0)
        #expect(offline.stderr.contains("cannot reach 127.0.0.1"), "\(offline.stderr)")
        #expect(offline.stderr.trimmingCharacters(in: .newlines).split(separator: "\n").count == 1, "\(offline.stderr)")
    }
}
