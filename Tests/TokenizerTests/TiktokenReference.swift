import Foundation
import Testing

/// Paths of the read-only data beside the repository (`../shared`), found from this file's path.
enum SharedData {
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let root = packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    static let gpt2 = root.appendingPathComponent("data/gpt2")
    static let tinyStories = root.appendingPathComponent("data/tinystories")
}

/// One text for tiktoken: encoded with `encode_ordinary`, or with `encode(allowed_special="all")`.
struct TiktokenJob {
    enum Mode: String { case ordinary, special }
    var mode: Mode = .ordinary
    var text: String? = nil
    /// A UTF-8 file to encode whole, instead of `text`.
    var path: String? = nil
}

/// Runs tiktoken live in a python3 subprocess. Its `gpt2` encoding is built offline from
/// `../shared/data/gpt2` (encoder.json + vocab.bpe) with the split pattern from tiktoken's own
/// source (`tiktoken_ext.openai_public.r50k_pat_str`); OpenAI's original spelling of the pattern
/// can be used instead. Custom mergeable ranks (bytes -> rank) replace the GPT-2 vocabulary when given.
enum Tiktoken {
    enum Pattern: String { case tiktoken, original }

    struct Unavailable: Error, CustomStringConvertible {
        let description: String
    }

    static let script = #"""
    import sys, json, array
    spec = json.load(open(sys.argv[1], encoding="utf-8"))
    try:
        import tiktoken, tiktoken.load
    except Exception as e:
        sys.stderr.write("python3 cannot import tiktoken: %s\n" % e); sys.exit(3)
    try:
        from tiktoken_ext.openai_public import r50k_pat_str
    except Exception:
        r50k_pat_str = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
    original = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    pattern = original if spec["pattern"] == "original" else r50k_pat_str
    if spec.get("ranks") is not None:
        ranks = {bytes.fromhex(k): v for k, v in spec["ranks"].items()}
        specials = {}
    else:
        d = spec["gpt2"]
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=d + "/vocab.bpe", encoder_json_file=d + "/encoder.json")
        specials = {"<|endoftext|>": 50256}
    enc = tiktoken.Encoding(name="gpt2-reference", pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
    out = array.array("i")
    for job in spec["jobs"]:
        text = job["text"] if "text" in job else open(job["path"], encoding="utf-8").read()
        ids = enc.encode_ordinary(text) if job["mode"] == "ordinary" else enc.encode(text, allowed_special="all")
        out.append(len(ids)); out.extend(ids)
    with open(sys.argv[2], "wb") as f:
        out.tofile(f)
    """#

    /// The ids tiktoken gives for each job. Throws `Unavailable` (with the reason) when python3 or
    /// tiktoken is missing: the calling test then fails, it does not skip.
    static func encode(_ jobs: [TiktokenJob], pattern: Pattern = .tiktoken, ranks: [[UInt8]: Int]? = nil) throws -> [[Int32]] {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("tiktoken-ref-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var jobObjects: [[String: String]] = []
        for job in jobs {
            var object = ["mode": job.mode.rawValue]
            if let text = job.text { object["text"] = text }
            if let path = job.path { object["path"] = path }
            jobObjects.append(object)
        }
        var spec: [String: Any] = ["pattern": pattern.rawValue, "gpt2": SharedData.gpt2.path, "jobs": jobObjects]
        if let ranks {
            var hexRanks: [String: Int] = [:]
            for (bytes, rank) in ranks { hexRanks[bytes.map { String(format: "%02x", $0) }.joined()] = rank }
            spec["ranks"] = hexRanks
        }
        let specURL = directory.appendingPathComponent("spec.json")
        let outURL = directory.appendingPathComponent("ids.i32")
        try JSONSerialization.data(withJSONObject: spec).write(to: specURL)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, specURL.path, outURL.path]
        let stderr = Pipe()
        process.standardError = stderr
        do {
            try process.run()
        } catch {
            throw Unavailable(description: "cannot run python3 (needed to compare with tiktoken; install python3 and `pip install tiktoken`): \(error)")
        }
        let errorOutput = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Unavailable(description: "tiktoken reference failed (exit \(process.terminationStatus)); `pip install tiktoken` is required for these tests: \(errorOutput)")
        }
        let data = try Data(contentsOf: outURL)
        let values: [Int32] = data.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
        var results: [[Int32]] = []
        var k = 0
        while k < values.count {
            let n = Int(values[k])
            results.append(Array(values[k + 1 ..< k + 1 + n]))
            k += 1 + n
        }
        #expect(results.count == jobs.count)
        return results
    }
}

/// A small deterministic generator (SplitMix64) for reproducible random tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The stories of a TinyStories `.txt` file: the text between `<|endoftext|>` lines, with leading
/// and trailing whitespace removed, empty ones skipped.
func tinyStoriesDocuments(_ url: URL) throws -> [String] {
    let text = try String(contentsOf: url, encoding: .utf8)
    return text.components(separatedBy: "<|endoftext|>")
        .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        .filter { !$0.isEmpty }
}
