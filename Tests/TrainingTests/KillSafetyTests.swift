import Foundation
import Gemma3TestSupport
import Testing
import Gemma3Plots
@testable import Gemma3Training

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// `gemma3 train` as a child process, killed with SIGKILL or interrupted with SIGINT at random
/// moments; resuming must always reproduce the uninterrupted run bit for bit.
@Suite(.serialized) struct KillSafetyTests {
    let recipeArguments = ["--recipe", "smoke", "--batch-size", "2", "--block-size", "16", "--max-iters", "16",
                           "--eval-interval", "5", "--checkpoint-interval", "1", "--quiet"]

    func launch(data: URL, out: URL, resume: Bool, dtype: TrainingDType = .f32) throws -> Process {
        let p = Process()
        p.executableURL = try gemma3Executable()
        p.arguments = ["train", "--data", data.path, "--config", SharedData.trainTiny.appendingPathComponent("config.json").path,
                       "--out", out.path, "--dtype", dtype.rawValue] + recipeArguments + (resume ? ["--resume"] : [])
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Makes the dataset and the uninterrupted reference run; returns its wall time too, so kill
    /// moments can be drawn inside a run's lifetime on fast and slow machines alike.
    func setUp(dtype: TrainingDType = .f32) throws -> (TemporaryDirectory, URL, URL, TimeInterval) {
        let tmp = try TemporaryDirectory()
        let data = tmp.url.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try makeDataset(in: data)
        let reference = tmp.url.appendingPathComponent("reference")
        let start = Date()
        let p = try launch(data: data, out: reference, resume: false, dtype: dtype)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        return (tmp, data, reference, Date().timeIntervalSince(start))
    }

    func expectSameRun(_ a: URL, _ b: URL) throws {
        for name in ["latest/model.safetensors", "latest/optimizer.safetensors", "best/model.safetensors"] {
            #expect(try Data(contentsOf: a.appendingPathComponent(name)) == Data(contentsOf: b.appendingPathComponent(name)), "\(name) differs")
        }
        let ra = try TrainingReport(runDirectory: a), rb = try TrainingReport(runDirectory: b)
        #expect(rb.steps.map(\.step) == Array(1...16))
        #expect(ra.steps.map(\.loss) == rb.steps.map(\.loss))
        #expect(ra.evals.map(\.step) == rb.evals.map(\.step) && ra.evals.map(\.valLoss) == rb.evals.map(\.valLoss))
    }

    /// In float32 and in bf16 mixed precision.
    @Test(arguments: TrainingDType.allCases)
    func sigkillAtRandomMomentsThenResumeEqualsAnUninterruptedRun(dtype: TrainingDType) throws {
        let (tmp, data, reference, duration) = try setUp(dtype: dtype)
        let run = tmp.url.appendingPathComponent("killed")
        // Each kill lands within the first 5–30% of a whole run's time, so several land before the
        // resumed runs together reach the end.
        let lo = UInt32(max(2_000, duration * 0.05 * 1e6)), hi = max(lo + 1, UInt32(duration * 0.30 * 1e6))
        var kills = 0
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<25 where kills < 6 {
            let p = try launch(data: data, out: run, resume: true, dtype: dtype)
            usleep(UInt32.random(in: lo...hi, using: &rng))
            if p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                kills += 1
            }
            p.waitUntilExit()
            if p.terminationReason == .exit {
                #expect(p.terminationStatus == 0)
                break
            }
        }
        #expect(kills >= 3, "only \(kills) kills landed while training")
        let finish = try launch(data: data, out: run, resume: true, dtype: dtype)
        finish.waitUntilExit()
        #expect(finish.terminationStatus == 0)
        try expectSameRun(reference, run)
        // Nothing half-written is left behind.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: run.path)
            .filter { ($0.hasPrefix(".") && $0 != ".lock") || $0.hasSuffix(".old") }  // .lock: the run directory's lock file
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    @Test func sigintSavesLatestAndExitsThenResumeEqualsAnUninterruptedRun() throws {
        let (tmp, data, reference, _) = try setUp()
        let run = tmp.url.appendingPathComponent("interrupted")
        let p = try launch(data: data, out: run, resume: false)
        // Interrupt once a few steps are logged.
        let metrics = run.appendingPathComponent("metrics.jsonl")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let steps = ((try? String(contentsOf: metrics, encoding: .utf8)) ?? "").components(separatedBy: "\"kind\":\"step\"").count - 1
            if steps >= 3 || !p.isRunning { break }
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(p.terminationReason == .exit && p.terminationStatus == 130, "status \(p.terminationStatus)")
        let state = try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: run.appendingPathComponent("latest/trainer_state.json")))
        #expect(state.step >= 3 && state.step < 16, "saved at step \(state.step)")
        let resume = try launch(data: data, out: run, resume: true)
        resume.waitUntilExit()
        #expect(resume.terminationStatus == 0)
        try expectSameRun(reference, run)
    }
}
