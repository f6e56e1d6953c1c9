import ArgumentParser
import Dispatch
import Foundation
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Tokenizers

/// `gemma3 bench tokenizer FILE`: GPT-2 encoding speed, single-threaded and on all cores, beside
/// tiktoken measured in the same run (a python3 subprocess) when it is installed.
struct BenchTokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Measure GPT-2 encoding speed (MB/s, tokens/s) against tiktoken.",
        discussion: """
        Reports medians over --runs runs (after one warm-up) of encoding the whole file: on one \
        thread, and on all cores (GEMMA3_THREADS or every core). When python3 with tiktoken is \
        available it measures tiktoken's encode_ordinary and encode_ordinary_batch (2 threads) on \
        the same text in the same run, and checks that the ids are identical.
        """
    )

    @Argument(help: "UTF-8 text file to encode.")
    var file: String

    @Option(help: ArgumentHelp("Directory with the GPT-2 tokenizer files (default: \(CLIEnvironment.gpt2TokenizerDirectory.path)).", valueName: "dir"))
    var tokenizer: String?

    @Option(help: "Timed runs per measurement (the median is reported).")
    var runs = 5

    @Option(help: "Threads for the all-cores measurement (default: GEMMA3_THREADS or all cores).")
    var threads: Int?

    @Option(help: "Threads of tiktoken's encode_ordinary_batch.")
    var tiktokenThreads = 2

    @Flag(help: "Do not run tiktoken.")
    var noTiktoken = false

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if tiktokenThreads < 1 { throw ValidationError("--tiktoken-threads must be at least 1") }
    }

    func run() throws {
        let loadStart = DispatchTime.now().uptimeNanoseconds
        let gpt2 = try loadGPT2Tokenizer(tokenizer)
        let loadSeconds = seconds(since: loadStart)
        let bytes = try readTextFile(file)
        if bytes.isEmpty { throw TokenizerCommandError("\(file) is empty") }
        let threadCount = threads ?? Parallel.threadCount

        var singleIDs: [Int32] = []
        var parallelIDs: [Int32] = []
        let (singleTimes, parallelTimes) = bytes.withUnsafeBufferPointer { utf8 -> ([Double], [Double]) in
            var single: [Double] = []
            for run in 0 ... runs {
                var ids: [Int32] = []
                let start = DispatchTime.now().uptimeNanoseconds
                gpt2.encodeOrdinary(utf8: utf8, into: &ids)
                if run > 0 { single.append(seconds(since: start)) }
                singleIDs = ids
            }
            var parallel: [Double] = []
            for run in 0 ... runs {
                let start = DispatchTime.now().uptimeNanoseconds
                let ids = gpt2.encodeOrdinary(utf8: utf8, threads: threadCount)
                if run > 0 { parallel.append(seconds(since: start)) }
                parallelIDs = ids
            }
            return (single, parallel)
        }
        if singleIDs != parallelIDs {
            throw TokenizerCommandError("internal error: the parallel encoding differs from the single-threaded one")
        }

        let reference = noTiktoken ? TiktokenResult(error: "not run (--no-tiktoken)") : runTiktoken(expected: singleIDs)
        let report = BenchReport(
            file: file, bytes: bytes.count, tokens: singleIDs.count, runs: runs, threads: threadCount,
            loadSeconds: loadSeconds, single: median(singleTimes), parallel: median(parallelTimes),
            tiktoken: reference, tiktokenThreads: tiktokenThreads)
        print(json ? report.json() : report.text())
    }

    /// Runs tiktoken on the same file in a python3 subprocess.
    private func runTiktoken(expected: [Int32]) -> TiktokenResult {
        let directory = (tokenizer.map { URL(fileURLWithPath: $0) } ?? CLIEnvironment.gpt2TokenizerDirectory).path
        let idsFile = FileManager.default.temporaryDirectory
            .appendingPathComponent("gemma3-bench-tiktoken-\(ProcessInfo.processInfo.processIdentifier).u32")
        defer { try? FileManager.default.removeItem(at: idsFile) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", tiktokenBenchScript, directory, file, String(runs), String(tiktokenThreads), idsFile.path]
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return TiktokenResult(error: "cannot run python3: \(error.localizedDescription)")
        }
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let object = (try? JSONSerialization.jsonObject(with: output)) as? [String: Any] else {
            return TiktokenResult(error: "python3 tiktoken benchmark failed (exit \(process.terminationStatus))")
        }
        if let error = object["error"] as? String { return TiktokenResult(error: error) }
        var result = TiktokenResult()
        result.version = object["version"] as? String
        result.single = object["single"] as? Double
        result.batch = object["batch"] as? Double
        result.batchIdentical = object["batch_identical"] as? Bool
        if let data = try? Data(contentsOf: idsFile) {
            let ids = data.withUnsafeBytes { raw in raw.bindMemory(to: UInt32.self).map { Int32(bitPattern: UInt32(littleEndian: $0)) } }
            result.identical = ids == expected
        }
        return result
    }
}

private func seconds(since start: UInt64) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

private struct TiktokenResult {
    var error: String?
    var version: String?
    /// Median seconds of `encode_ordinary` and of `encode_ordinary_batch`.
    var single: Double?
    var batch: Double?
    /// tiktoken's ids equal ours; its batch ids equal its single-call ids.
    var identical: Bool?
    var batchIdentical: Bool?
}

private struct BenchReport {
    let file: String
    let bytes: Int
    let tokens: Int
    let runs: Int
    let threads: Int
    let loadSeconds: Double
    let single: Double
    let parallel: Double
    let tiktoken: TiktokenResult
    let tiktokenThreads: Int

    func megabytesPerSecond(_ seconds: Double) -> Double { Double(bytes) / seconds / 1e6 }
    func tokensPerSecond(_ seconds: Double) -> Double { Double(tokens) / seconds }

    func measurement(_ seconds: Double) -> String {
        "{\"seconds\":\(fmt(seconds, 6)),\"mb_per_s\":\(fmt(megabytesPerSecond(seconds), 3)),\"tokens_per_s\":\(fmt(tokensPerSecond(seconds), 0))}"
    }

    func json() -> String {
        var reference = "null"
        var ratios = "null"
        if let s = tiktoken.single, let b = tiktoken.batch {
            reference = "{\"version\":\(jsonStringLiteral(tiktoken.version ?? "unknown")),\"single\":\(measurement(s)),\"batch\":\(measurement(b)),"
                + "\"batch_threads\":\(tiktokenThreads),\"identical\":\(tiktoken.identical.map { "\($0)" } ?? "null"),"
                + "\"batch_identical\":\(tiktoken.batchIdentical.map { "\($0)" } ?? "null")}"
            ratios = "{\"single_thread\":\(fmt(s / single, 3)),\"all_cores_vs_batch\":\(fmt(b / parallel, 3)),"
                + "\"all_cores_vs_single\":\(fmt(s / parallel, 3))}"
        }
        let error = tiktoken.error.map { ",\"tiktoken_error\":\(jsonStringLiteral($0))" } ?? ""
        return "{\"benchmark\":\"tokenizer\",\"file\":\(jsonStringLiteral(file)),\"bytes\":\(bytes),\"tokens\":\(tokens),\"runs\":\(runs),"
            + "\"threads\":\(threads),\"load_seconds\":\(fmt(loadSeconds, 4)),"
            + "\"swift\":{\"single\":\(measurement(single)),\"all_cores\":\(measurement(parallel))},"
            + "\"tiktoken\":\(reference),\"speedup_vs_tiktoken\":\(ratios)\(error)}"
    }

    func text() -> String {
        func line(_ name: String, _ seconds: Double) -> String {
            "  \(name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(fmt(megabytesPerSecond(seconds), 1)) MB/s  \(fmt(tokensPerSecond(seconds) / 1e6, 2))M tokens/s"
        }
        var lines = [
            "GPT-2 tokenizer on \(file): \(bytes) bytes, \(tokens) tokens; median of \(runs) runs (load \(fmt(loadSeconds * 1000, 0)) ms)",
            line("swift, 1 thread", single),
            line("swift, \(threads) threads", parallel),
        ]
        if let s = tiktoken.single, let b = tiktoken.batch {
            lines.append(line("tiktoken \(tiktoken.version ?? ""), 1 thread", s))
            lines.append(line("tiktoken batch, \(tiktokenThreads) threads", b))
            lines.append("  speed-up: \(fmt(s / single, 2))x single-threaded, \(fmt(b / parallel, 2))x on \(threads) threads vs tiktoken batch (\(fmt(s / parallel, 2))x vs its single call)")
            lines.append("  ids identical to tiktoken: \(tiktoken.identical.map { $0 ? "yes" : "NO" } ?? "unknown")")
        } else {
            lines.append("  tiktoken: \(tiktoken.error ?? "unavailable")")
        }
        return lines.joined(separator: "\n")
    }
}

private func fmt(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "null" }
    return String(format: "%.\(decimals)f", value)
}

/// argv: tokenizer dir, text file, runs, batch threads, output path for the ids (uint32 LE).
/// Prints one JSON object: median seconds of encode_ordinary and encode_ordinary_batch.
private let tiktokenBenchScript = #"""
import json, os, sys, time, statistics
directory, path, runs, threads, ids_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
try:
    import tiktoken, tiktoken.load
except Exception as e:
    print(json.dumps({"error": "tiktoken is not installed (%s)" % e})); sys.exit(0)
files = None
for encoder, bpe in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
    if os.path.exists(os.path.join(directory, encoder)) and os.path.exists(os.path.join(directory, bpe)):
        files = (os.path.join(directory, encoder), os.path.join(directory, bpe))
        break
if files is None:
    print(json.dumps({"error": "no encoder.json + vocab.bpe or vocab.json + merges.txt in " + directory})); sys.exit(0)
ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=files[1], encoder_json_file=files[0])
try:
    from tiktoken_ext.openai_public import r50k_pat_str as pattern
except Exception:
    pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
enc = tiktoken.Encoding(name="gpt2-local", pat_str=pattern, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
text = open(path, encoding="utf-8").read()
# Batch input: the text cut where GPT-2's pieces cannot change (as gemma3 does), ~8 pieces per thread.
target = max(65536, len(text) // (threads * 8))
pieces, pos = [], 0
while pos < len(text):
    cut = pos + target
    if cut >= len(text):
        cut = len(text)
    else:
        while cut < len(text) and not (text[cut] in " \n" and "!" <= text[cut - 1] <= "~"):
            cut += 1
    pieces.append(text[pos:cut])
    pos = cut
def timed(f):
    f()
    times = []
    for _ in range(runs):
        t = time.perf_counter(); r = f(); times.append(time.perf_counter() - t)
    return statistics.median(times), r
single, ids = timed(lambda: enc.encode_ordinary(text))
batch, parts = timed(lambda: enc.encode_ordinary_batch(pieces, num_threads=threads))
import array
array.array("I", ids).tofile(open(ids_path, "wb"))
print(json.dumps({"version": tiktoken.__version__, "single": single, "batch": batch,
                  "batch_identical": [i for p in parts for i in p] == ids}))
"""#
