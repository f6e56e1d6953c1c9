import Foundation
import Gemma3Formats
import Gemma3TestSupport
import Testing
@testable import Gemma3Training

#if canImport(Glibc)
import Glibc
#endif

/// `mpirun -np 2 gemma3 train …` over TCP (`--mca btl tcp,self`: the gradients really cross a socket)
/// against the single-process run of the same recipe and global batch.
@Suite(.serialized) struct DistributedTests {
    /// `mpirun`, or nil (the tests then print NOTICE): CI installs Open MPI.
    static let mpirun: String? = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Weights after 20 steps: 2 ranks sum each step's two micro-batch gradients in another order than
    /// one process (g0 + g1 on the wire vs accumulated in place), so they differ by float32 rounding.
    static let weightBound: Float = 1e-5

    let recipe = ["--recipe", "smoke", "--batch-size", "2", "--block-size", "16", "--gradient-accumulation-steps", "2",
                  "--max-iters", "20", "--eval-interval", "10", "--checkpoint-interval", "5", "--quiet", "--threads", "1"]

    func command(ranks: Int, data: URL, out: URL, extra: [String] = []) throws -> Process {
        let p = Process()
        let train = ["train", "--data", data.path, "--config", SharedData.trainTiny.appendingPathComponent("config.json").path,
                     "--out", out.path] + recipe + extra
        if ranks == 0 {
            p.executableURL = try gemma3Executable()
            p.arguments = train
        } else {
            p.executableURL = URL(fileURLWithPath: Self.mpirun!)
            p.arguments = ["--allow-run-as-root", "--oversubscribe", "-np", "\(ranks)", "--mca", "btl", "tcp,self",
                           "--mca", "btl_tcp_if_include", "lo", try gemma3Executable().path] + train
        }
        let pipe = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = pipe
        try p.run()
        return p
    }

    /// Runs to the end; the exit status and stderr.
    func run(ranks: Int, data: URL, out: URL, extra: [String] = []) throws -> (Int32, String) {
        let p = try command(ranks: ranks, data: data, out: out, extra: extra)
        let err = (p.standardError as! Pipe).fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: err, as: UTF8.self))
    }

    func weights(_ run: URL) throws -> [String: [Float]] {
        let file = try SafeTensorsFile(url: run.appendingPathComponent("latest/model.safetensors"))
        var out: [String: [Float]] = [:]
        for t in file.tensors { out[t.name] = try file.floats(t.name) }
        return out
    }

    func maxDifference(_ a: URL, _ b: URL) throws -> Float {
        let wa = try weights(a), wb = try weights(b)
        #expect(wa.keys.sorted() == wb.keys.sorted())
        var worst: Float = 0
        for (name, x) in wa { for (u, v) in zip(x, wb[name]!) { worst = max(worst, abs(u - v)) } }
        return worst
    }

    func setUp() throws -> (TemporaryDirectory, URL)? {
        guard Self.mpirun != nil else {
            print("NOTICE: mpirun not found (Debian: openmpi-bin libopenmpi-dev): the data-parallel tests did not run")
            return nil
        }
        let tmp = try TemporaryDirectory()
        let data = tmp.url.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try makeDataset(in: data)
        return (tmp, data)
    }

    @Test func twoRanksOverTCPTrainTheSameModelAsOneProcess() throws {
        guard let (tmp, data) = try setUp() else { return }
        let single = tmp.url.appendingPathComponent("single"), a = tmp.url.appendingPathComponent("a"), b = tmp.url.appendingPathComponent("b")
        let (s0, e0) = try run(ranks: 0, data: data, out: single)
        #expect(s0 == 0, "\(e0)")
        let (s1, e1) = try run(ranks: 2, data: data, out: a, extra: ["--overlap-all-reduce"])
        #expect(s1 == 0, "\(e1)")
        let (s2, e2) = try run(ranks: 2, data: data, out: b, extra: ["--overlap-all-reduce"])
        #expect(s2 == 0, "\(e2)")
        // Two 2-rank runs: bit for bit; and the sums after the backward (no overlap) give the same bits
        // as the per-layer sums overlapped with it (a bucket summed before it was final would not).
        let c = tmp.url.appendingPathComponent("c")
        let (s3, e3) = try run(ranks: 2, data: data, out: c, extra: ["--no-overlap-all-reduce"])
        #expect(s3 == 0, "\(e3)")
        for name in ["latest/model.safetensors", "latest/optimizer.safetensors"] {
            #expect(try Data(contentsOf: a.appendingPathComponent(name)) == Data(contentsOf: b.appendingPathComponent(name)), "\(name)")
            #expect(try Data(contentsOf: a.appendingPathComponent(name)) == Data(contentsOf: c.appendingPathComponent(name)), "\(name), no overlap")
        }
        let d = try maxDifference(single, a)
        print("data parallel: 2 ranks vs 1 process after 20 steps: max |Δw| = \(d)")
        #expect(d <= Self.weightBound)
        // The run says it had 2 ranks.
        let report = try RunMetrics(a)
        #expect(report.worldSizes == [2])
        let state = try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: a.appendingPathComponent("latest/trainer_state.json")))
        #expect(state.worldSize == 2 && state.step == 20)
        // Losses per step agree with the single process to rounding.
        let ls = try RunMetrics(single).losses, la = report.losses
        #expect(ls.count == 20 && la.count == 20)
        for (x, y) in zip(ls, la) { #expect(abs(x - y) < 1e-4) }
    }

    @Test func resumeWithAnotherNumberOfRanksContinuesTheTrajectory() throws {
        guard let (tmp, data) = try setUp() else { return }
        let single = tmp.url.appendingPathComponent("single")
        #expect(try run(ranks: 0, data: data, out: single).0 == 0)
        // 2 ranks to step 10, then 1 process to the end; and 1 process to 10, then 2 ranks.
        for (first, second) in [(2, 0), (0, 2)] {
            let out = tmp.url.appendingPathComponent("resume-\(first)-\(second)")
            let (s1, e1) = try run(ranks: first, data: data, out: out, extra: ["--stop-after-step", "10"])
            #expect(s1 == 0, "\(e1)")
            let (s2, e2) = try run(ranks: second, data: data, out: out, extra: ["--resume"])
            #expect(s2 == 0, "\(e2)")
            let d = try maxDifference(single, out)
            print("data parallel: \(max(1, first)) → \(max(1, second)) ranks at step 10 vs 1 process: max |Δw| = \(d)")
            #expect(d <= Self.weightBound)
        }
    }

    @Test func aKilledRankEndsTheJobAndTheRunResumes() throws {
        guard let (tmp, data) = try setUp() else { return }
        let out = tmp.url.appendingPathComponent("killed")
        let long = ["--max-iters", "400", "--eval-interval", "100", "--checkpoint-interval", "20"]
        let p = try command(ranks: 2, data: data, out: out, extra: long)
        // Wait for the first checkpoint, then SIGKILL one rank (a child of mpirun).
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: out.appendingPathComponent("latest/trainer_state.json").path) && Date() < deadline {
            usleep(100_000)
        }
        let children = try childProcesses(of: p.processIdentifier)
        #expect(children.count >= 1)
        guard let victim = children.last else { p.terminate(); return }
        let killedAt = Date()
        kill(victim, SIGKILL)
        p.waitUntilExit()
        let seconds = Date().timeIntervalSince(killedAt)
        print("data parallel: job ended \(seconds) s after a rank was killed, status \(p.terminationStatus)")
        #expect(p.terminationStatus != 0)
        #expect(seconds < 60)
        // latest/ is whole, and the run resumes (alone, to keep it short) from it.
        let state = try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: out.appendingPathComponent("latest/trainer_state.json")))
        #expect(state.step > 0 && state.step % 20 == 0)
        let (s, e) = try run(ranks: 0, data: data, out: out, extra: long + ["--resume", "--stop-after-step", "\(state.step + 2)"])
        #expect(s == 0, "\(e)")
    }

    @Test func sigtermToMpirunSavesLatestOnEveryRankAndTheRunResumes() throws {
        guard let (tmp, data) = try setUp() else { return }
        let out = tmp.url.appendingPathComponent("terminated")
        let long = ["--max-iters", "1000000", "--eval-interval", "1000000", "--checkpoint-interval", "1000000"]
        // mpirun started as from a shell: the test runner's threads block signals and Foundation's
        // Process passes that mask on, so an mpirun it starts would never see the SIGTERM.
        let train = ["train", "--data", data.path, "--config", SharedData.trainTiny.appendingPathComponent("config.json").path,
                     "--out", out.path] + recipe + long
        let mpirunPID = try spawnWithSignalsUnblocked(Self.mpirun!, ["--allow-run-as-root", "--oversubscribe", "-np", "2", "--mca", "btl", "tcp,self",
                                                                     "--mca", "btl_tcp_if_include", "lo", try gemma3Executable().path] + train)
        // Wait until training runs (steps in metrics.jsonl), then SIGTERM mpirun itself.
        let metrics = out.appendingPathComponent("metrics.jsonl")
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, ((try? String(contentsOf: metrics, encoding: .utf8)) ?? "").components(separatedBy: "\"step\"").count < 4 {
            usleep(100_000)
        }
        let children = try childProcesses(of: mpirunPID)
        #expect(children.count >= 1)
        let sentAt = Date()
        kill(mpirunPID, SIGTERM)
        // Bounded wait: SIGKILL everything after 60 s so a failure cannot hang the suite.
        var status: Int32 = 0
        while waitpid(mpirunPID, &status, WNOHANG) == 0 {
            if Date().timeIntervalSince(sentAt) > 60 { kill(mpirunPID, SIGKILL); children.forEach { kill($0, SIGKILL) } }
            usleep(50_000)
        }
        let seconds = Date().timeIntervalSince(sentAt)
        print("data parallel: mpirun ended \(seconds) s after SIGTERM, wait status \(status)")
        #expect(seconds < 60)
        // Every rank is gone (none left waiting in a sum).
        for child in children {
            // Gone, or a zombie its new parent has not reaped yet.
            let stat = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8)) ?? ""
            let state = stat.lastIndex(of: ")").map { stat[stat.index($0, offsetBy: 2)] }
            #expect(stat.isEmpty || state == "Z", "rank \(child) still runs")
        }
        // latest/ holds the step it stopped at (not a checkpoint interval), whole; the run resumes from it.
        let state = try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: out.appendingPathComponent("latest/trainer_state.json")))
        #expect(state.step > 0 && state.step < 1_000_000 && state.worldSize == 2)
        let (s, e) = try run(ranks: 2, data: data, out: out, extra: long + ["--resume", "--stop-after-step", "\(state.step + 2)"])
        #expect(s == 0, "\(e)")
        let resumed = try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: out.appendingPathComponent("latest/trainer_state.json")))
        #expect(resumed.step == state.step + 2)
    }

    /// Two "hosts": two network namespaces joined by a veth pair, mpirun's launch agent entering the
    /// other namespace instead of ssh; the ranks talk only over 10.x addresses on the veth.
    @Test func twoNetworkNamespacesTrainAsTwoHosts() throws {
        guard let (tmp, data) = try setUp() else { return }
        let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let ip, getuid() == 0 else {
            print("NOTICE: no `ip` or not root: the two-namespace (two-host) test did not run")
            return
        }
        let tag = "g3t\(getpid() % 10000)", net = "10.\(100 + Int(getpid()) % 100).0"
        let (ns1, ns2) = (tag + "a", tag + "b"), (host1, host2) = (net + ".1", net + ".2")
        func sh(_ args: [String]) -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: ip)
            p.arguments = args
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            guard (try? p.run()) != nil else { return -1 }
            p.waitUntilExit()
            return p.terminationStatus
        }
        defer { _ = sh(["netns", "del", ns1]); _ = sh(["netns", "del", ns2]) }
        let setup: [[String]] = [
            ["netns", "add", ns1], ["netns", "add", ns2],
            ["link", "add", tag + "x", "type", "veth", "peer", "name", tag + "y"],
            ["link", "set", tag + "x", "netns", ns1], ["link", "set", tag + "y", "netns", ns2],
            ["-n", ns1, "addr", "add", host1 + "/24", "dev", tag + "x"], ["-n", ns2, "addr", "add", host2 + "/24", "dev", tag + "y"],
            ["-n", ns1, "link", "set", tag + "x", "up"], ["-n", ns2, "link", "set", tag + "y", "up"],
            ["-n", ns1, "link", "set", "lo", "up"], ["-n", ns2, "link", "set", "lo", "up"],
        ]
        for args in setup where sh(args) != 0 {
            print("NOTICE: `ip \(args.joined(separator: " "))` failed (no network namespaces here): the two-host test did not run")
            return
        }
        let agent = tmp.url.appendingPathComponent("netns-agent.sh")
        try """
        #!/bin/sh
        # mpirun's launch agent in place of ssh: [options] HOST command… runs command in HOST's namespace.
        while [ "${1#-}" != "$1" ]; do shift; done
        host="$1"; shift
        case "$host" in \(host1)) ns=\(ns1) ;; \(host2)) ns=\(ns2) ;; *) echo "unknown host $host" >&2; exit 1 ;; esac
        exec \(ip) netns exec "$ns" /bin/sh -c "$*"
        """.write(to: agent, atomically: true, encoding: .utf8)
        chmod(agent.path, 0o755)
        let single = tmp.url.appendingPathComponent("single"), two = tmp.url.appendingPathComponent("two-hosts")
        #expect(try run(ranks: 0, data: data, out: single).0 == 0)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ip)
        p.arguments = ["netns", "exec", ns1, Self.mpirun!, "--allow-run-as-root", "--oversubscribe", "-np", "2",
                       "-H", "\(host1):1,\(host2):1", "--mca", "plm_rsh_agent", agent.path,
                       "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", net + ".0/24", "--mca", "oob_tcp_if_include", net + ".0/24",
                       try gemma3Executable().path, "train", "--data", data.path,
                       "--config", SharedData.trainTiny.appendingPathComponent("config.json").path, "--out", two.path] + recipe
        let pipe = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = pipe
        try p.run()
        let err = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(err)")
        let d = try maxDifference(single, two)
        print("data parallel: 2 ranks in 2 network namespaces vs 1 process after 20 steps: max |Δw| = \(d)")
        #expect(d <= Self.weightBound)
        #expect(try RunMetrics(two).worldSizes == [2])
    }

    @Test func aSecondRunOnTheSameDirectoryIsRefused() throws {
        let tmp = try TemporaryDirectory()
        let data = tmp.url.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try makeDataset(in: data)
        let out = tmp.url.appendingPathComponent("run")
        let long = ["--max-iters", "1000000", "--eval-interval", "500000"]
        let first = try command(ranks: 0, data: data, out: out, extra: long)
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: out.appendingPathComponent("metrics.jsonl").path) && Date() < deadline { usleep(50_000) }
        // (Bounded: were the lock not held, the second run would stop after one step.)
        let (status, err) = try run(ranks: 0, data: data, out: out, extra: long + ["--resume", "--stop-after-step", "1"])
        let firstWasRunning = first.isRunning
        first.terminate()
        let firstErr = String(decoding: (first.standardError as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        first.waitUntilExit()
        #expect(firstWasRunning, "the first run ended before the second started: \(firstErr)")
        #expect(status != 0)
        #expect(err.contains("is being written by another training run"), "\(err)")
        #expect(err.split(separator: "\n").count == 1, "\(err)")
    }

    /// Starts `path` with `arguments` (output discarded) with no signal blocked and SIGINT/SIGTERM at
    /// their default action, as a shell would; returns its pid.
    func spawnWithSignalsUnblocked(_ path: String, _ arguments: [String]) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), defaults = sigset_t()
        sigemptyset(&none)
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGTERM)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var files = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&files)
        defer { posix_spawn_file_actions_destroy(&files) }
        posix_spawn_file_actions_addopen(&files, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&files, 2, "/dev/null", O_WRONLY, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &files, &attributes, argv, environ)
        guard rc == 0 else { throw CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey: "posix_spawn \(path): \(rc)"]) }
        return pid
    }

    func childProcesses(of pid: Int32) throws -> [Int32] {
        var out: [Int32] = []
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let child = Int32(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 2, Int32(fields[1]) == pid { out.append(child) }
        }
        return out.sorted()
    }
}

/// The per-step losses and the world sizes recorded in a run's metrics.jsonl.
struct RunMetrics {
    var losses: [Double] = []
    var worldSizes: [Int] = []
    init(_ run: URL) throws {
        for r in try MetricsRecord.read(run.appendingPathComponent("metrics.jsonl")) {
            switch r {
            case .step(let s): losses.append(s.loss)
            case .run(let i): worldSizes.append(i.worldSize)
            case .eval: break
            }
        }
    }
}
