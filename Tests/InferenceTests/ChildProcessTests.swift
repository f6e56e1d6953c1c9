import Foundation
import Gemma3TestSupport
import Testing

/// Reference programs run by the benches may write a lot to stderr (warnings) before their JSON:
/// the bench must drain both pipes together or it hangs once stderr fills the pipe buffer.
@Suite struct ChildProcessTests {
    @Test("bench train --pytorch: a reference writing 256 KiB to stderr neither hangs the bench nor loses its JSON")
    func benchTrainReferenceWithLargeStderr() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-child-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // Run as `env sh fake.sh --hidden …` in place of `env python torch_train_bench.py --hidden …`.
        let script = dir.appendingPathComponent("fake_reference.sh")
        try """
        head -c 262144 /dev/zero | tr '\\0' 'w' >&2
        echo '{"tokens_per_second": 123.5, "peak_rss_bytes": 1024}'
        """.write(to: script, atomically: true, encoding: .utf8)

        let p = Process()
        p.executableURL = try gemma3Executable()
        p.arguments = ["bench", "train", "--preset", "tinystories-5m", "--batch", "1", "--seq", "8", "--steps", "1",
                       "--warmup", "0", "--pytorch", "sh", "--pytorch-script", script.path, "--json"]
        let out = dir.appendingPathComponent("stdout"), err = dir.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        try p.run()
        let deadline = Date().addingTimeInterval(120)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        let hung = p.isRunning
        if hung { p.terminate(); p.waitUntilExit() }
        #expect(!hung, "bench train did not finish within 120 s (deadlocked on the reference's stderr?)")
        if hung { return }
        let stderr = String(decoding: try Data(contentsOf: err), as: UTF8.self)
        #expect(p.terminationStatus == 0, "\(stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out)) as? [String: Any])
        let references = try #require(object["pytorch"] as? [String: [String: Double]])
        #expect(references["eager"]?["tokens_per_second"] == 123.5)
        #expect(references["compile"]?["tokens_per_second"] == 123.5)
    }

    @Test("an interrupted bench terminates its reference program and exits with 128 + signal")
    func interruptedBenchLeavesNoChildRunning() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemma3-child-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // A reference that writes its pid, then sleeps far longer than the test waits.
        let pidFile = dir.appendingPathComponent("child.pid")
        let script = dir.appendingPathComponent("slow_reference.sh")
        try "echo $$ > \(pidFile.path); exec sleep 300\n".write(to: script, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = try gemma3Executable()
        p.arguments = ["bench", "train", "--preset", "tinystories-5m", "--batch", "1", "--seq", "8", "--steps", "1",
                       "--warmup", "0", "--pytorch", "sh", "--pytorch-script", script.path, "--json"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        var deadline = Date().addingTimeInterval(120)
        var child: Int32?
        while child == nil && p.isRunning && Date() < deadline {
            child = (try? String(contentsOf: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let pid = try #require(child, "the reference never started")
        p.terminate()  // SIGTERM, as `timeout` sends
        deadline = Date().addingTimeInterval(20)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!p.isRunning)
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        #expect(p.terminationStatus == 128 + SIGTERM)
        // The child is gone (kill with signal 0 fails once it has exited and been reaped or is a zombie of init).
        deadline = Date().addingTimeInterval(10)
        var alive = true
        while alive && Date() < deadline {
            alive = kill(pid, 0) == 0 && !isZombie(pid)
            if alive { Thread.sleep(forTimeInterval: 0.05) }
        }
        if alive { kill(pid, SIGKILL) }
        #expect(!alive, "the reference program (pid \(pid)) was still running after the bench exited")
    }
}

/// Whether `pid` has exited but is not yet reaped (state Z in /proc/PID/stat).
private func isZombie(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
}
