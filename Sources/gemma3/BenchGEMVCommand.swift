import ArgumentParser
import Dispatch
import Foundation
import Gemma3Formats
import Gemma3Kernels
import Gemma3Model

/// `gemma3 bench gemv`: the decode matrix-vector products of a GGUF model, per tensor type.
struct BenchGEMVCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemv",
        abstract: "Time the quantized matrix-vector products of a GGUF model, per tensor type (where decode time goes).",
        discussion: """
        For each weight type in the file, every matrix of that type is multiplied by a random vector \
        once (all cores, as in decoding), --runs times; the median time, its share of one decode \
        step's products and the weight bandwidth (GB/s of blocks read) are reported, for the fused \
        integer kernels (16-bit activations) and for dequantize-each-row-then-float-dot. The \
        token embedding counts once, as the LM head.
        """
    )

    @Option(help: ArgumentHelp("GGUF model file.", valueName: "file.gguf"))
    var model: String

    @Option(help: "Timed runs per measurement (median reported).")
    var runs = 7

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
    }

    func run() throws {
        let file = try GGUFFile(path: model)
        var groups: [(type: GGMLType, names: [String])] = [], widened: [(type: GGMLType, names: [String])] = []
        for t in file.tensors where t.dimensions.count == 2 {
            guard let type = t.type else { continue }
            if let i = groups.firstIndex(where: { $0.type == type }) { groups[i].names.append(t.name) } else { groups.append((type, [t.name])) }
        }
        // Also Q4_0/Q5_0 widened to Q8_0 (identical values; see QuantizedLinear.widenedToQ8_0).
        for (type, names) in groups where type == .q4_0 || type == .q5_0 { widened.append((type, names)) }
        var rows: [[String: Any]] = []
        var totals: [QuantizedLinear.ActivationPrecision: Double] = [:]
        for (index, (type, names)) in (groups + widened).enumerated() {
            let isWidened = index >= groups.count
            let mats = try names.map { isWidened ? try file.linear(named: $0).widenedToQ8_0() : try file.linear(named: $0) }
            let bytes = mats.reduce(0) { $0 + $1.storageBytes }
            let maxCols = mats.map(\.inFeatures).max() ?? 0, maxRows = mats.map(\.outFeatures).max() ?? 0
            let x = UnsafeMutablePointer<Float>.allocate(capacity: maxCols), y = UnsafeMutablePointer<Float>.allocate(capacity: maxRows)
            defer { x.deallocate(); y.deallocate() }
            var rng = SplitMix64(seed: 7)
            for i in 0..<maxCols { x[i] = Float(Double(rng.next() % 2001) / 1000 - 1) }
            var row: [String: Any] = ["type": isWidened ? "\(type.name)→Q8_0" : type.name, "tensors": names.count, "bytes": bytes]
            for precision in QuantizedLinear.ActivationPrecision.allCases {
                let variants = mats.map { $0.with(activations: precision) }
                var times: [Double] = []
                for r in 0...runs {
                    let start = DispatchTime.now().uptimeNanoseconds
                    for m in variants { Linear.gemv(m, x: x, y: y) }
                    if r > 0 { times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9) }  // run 0 warms up
                }
                let t = times.sorted()[times.count / 2]
                if !isWidened { totals[precision, default: 0] += t }
                row["\(precision.rawValue)_ms"] = t * 1e3
                row["\(precision.rawValue)_gb_per_second"] = Double(bytes) / t / 1e9
            }
            rows.append(row)
        }
        if json {
            let object: [String: Any] = [
                "model": model, "threads": Parallel.threadCount, "runs": runs, "types": rows,
                "int16_ms_per_token": (totals[.int16] ?? 0) * 1e3, "float_ms_per_token": (totals[.float] ?? 0) * 1e3,
            ]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("bench gemv: \(URL(fileURLWithPath: model).lastPathComponent), \(Parallel.threadCount) threads, median of \(runs)")
            print("  type       tensors       MB | int16 kernels: ms  GB/s  share | float: ms  GB/s")
            func f(_ v: Double, _ width: Int, _ digits: Int) -> String {
                let t = String(format: "%.\(digits)f", v)
                return String(repeating: " ", count: max(0, width - t.count)) + t
            }
            for row in rows {
                let name = row["type"] as! String
                let ms = row["int16_ms"] as! Double, fms = row["float_ms"] as! Double
                let share = name.contains("→") ? "    —" : f(100 * ms / 1e3 / (totals[.int16] ?? 1), 5, 1) + "%"
                print("  " + name.padding(toLength: 10, withPad: " ", startingAt: 0) + String(format: " %7d", row["tensors"] as! Int)
                      + f(Double(row["bytes"] as! Int) / 1e6, 9, 1) + " | " + f(ms, 16, 2) + f(row["int16_gb_per_second"] as! Double, 6, 1)
                      + " " + share + " | " + f(fms, 9, 2) + f(row["float_gb_per_second"] as! Double, 6, 1))
            }
            print(String(format: "  all products of one decode step: %.2f ms (int16 kernels), %.2f ms (float) → at most %.1f / %.1f tokens/s",
                         (totals[.int16] ?? 0) * 1e3, (totals[.float] ?? 0) * 1e3, 1 / (totals[.int16] ?? 1), 1 / (totals[.float] ?? 1)))
        }
    }
}
