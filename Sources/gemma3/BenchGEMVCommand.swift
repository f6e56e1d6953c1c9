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
        integer kernels (16-bit activations), for the 8-bit AVX-512 VNNI kernels where the CPU has \
        them (packed blocks copied to huge pages: the form decoding uses there), and for \
        dequantize-each-row-then-float-dot. Each quantized type is also measured unpacked to bytes \
        with float scales ("→i8", the form decoding uses on CPUs without VNNI; its integer kernels \
        take 14-bit activations, reported under "int16"). \
        The token embedding counts once, as the LM head.
        """
    )

    @Option(help: ArgumentHelp("GGUF model file.", valueName: "file.gguf"))
    var model: String

    @Option(help: "Timed runs per measurement (median reported).")
    var runs = 7

    @Flag(help: "Multiply at most 4 MB of one matrix of each type, 32 times per run, so its blocks stay in cache: the kernels' compute speed, without DRAM.")
    var cacheResident = false

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
    }

    func run() throws {
        let file = try GGUFFile(path: model)
        var groups: [(type: GGMLType, names: [String])] = []
        for t in file.tensors where t.dimensions.count == 2 {
            guard let type = t.type else { continue }
            if let i = groups.firstIndex(where: { $0.type == type }) { groups[i].names.append(t.name) } else { groups.append((type, [t.name])) }
        }
        // Each type as stored, then the quantized ones unpacked as decoding uses them
        // (identical values; see UnpackedBlockLinear).
        let unpackable = groups.filter { [.q8_0, .q5_0, .q4_0, .q4_K, .q6_K].contains($0.type) }
        var rows: [[String: Any]] = []
        var totals: [String: Double] = [:]   // "packed"/"decode" × precision
        for (index, (type, names)) in (groups + unpackable).enumerated() {
            let isUnpacked = index >= groups.count
            let repeats = cacheResident ? 32 : 1
            var mats = try names.map { try file.linear(named: $0) }
            if cacheResident, let largest = mats.max(by: { $0.storageBytes < $1.storageBytes }) {
                // Its first rows, at most 4 MB packed or unpacked (≤ 40 bytes per 32 values): stays in L2 + L3.
                let unpackedRowBytes = largest.inFeatures / 32 * 40
                let rows = max(1, min(largest.outFeatures, (4 << 20) / max(largest.rowBytes, unpackedRowBytes)))
                mats = [try QuantizedLinear(type: largest.type, borrowing: largest.data, outFeatures: rows,
                                            inFeatures: largest.inFeatures, owner: largest)]
            }
            var row: [String: Any] = ["type": isUnpacked ? "\(type.name)→i8" : type.name, "tensors": mats.count]
            let maxCols = mats.map(\.inFeatures).max() ?? 0, maxRows = mats.map(\.outFeatures).max() ?? 0
            let x = UnsafeMutablePointer<Float>.allocate(capacity: maxCols), y = UnsafeMutablePointer<Float>.allocate(capacity: maxRows)
            defer { x.deallocate(); y.deallocate() }
            var rng = SplitMix64(seed: 7)
            for i in 0..<maxCols { x[i] = Float(Double(rng.next() % 2001) / 1000 - 1) }
            // 8-bit activations (AVX-512 VNNI) run on the packed blocks, copied to huge pages as decoding does.
            let int8: [QuantizedLinear.ActivationPrecision] = !isUnpacked && QuantizedLinear.int8Supported ? [.int8] : []
            for precision in [.int16, .float] + int8 {
                let variants: [any LinearWeight] = mats.map { m in
                    let m = m.with(activations: precision)
                    if precision == .int8 { return type.blockSize > 1 ? m.copiedToLargePages() : m }
                    return isUnpacked ? UnpackedBlockLinear(m)! : m
                }
                row["bytes"] = variants.reduce(0) { $0 + $1.storageBytes }
                var times: [Double] = []
                for r in 0...runs {
                    let start = DispatchTime.now().uptimeNanoseconds
                    for _ in 0..<repeats { for m in variants { Linear.gemv(m, x: x, y: y) } }
                    if r > 0 { times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(repeats)) }  // run 0 warms up
                }
                let t = times.sorted()[times.count / 2]
                if !isUnpacked { totals["packed_\(precision.rawValue)", default: 0] += t }
                if isUnpacked || !unpackable.contains(where: { $0.type == type }) { totals["decode_\(precision.rawValue)", default: 0] += t }
                row["\(precision.rawValue)_ms"] = t * 1e3
                row["\(precision.rawValue)_gb_per_second"] = Double(row["bytes"] as! Int) / t / 1e9
            }
            rows.append(row)
        }
        if json {
            var object: [String: Any] = [
                "model": model, "threads": Parallel.threadCount, "runs": runs, "types": rows,
                "int16_ms_per_token": (totals["packed_int16"] ?? 0) * 1e3, "float_ms_per_token": (totals["packed_float"] ?? 0) * 1e3,
                "decode_form_int16_ms_per_token": (totals["decode_int16"] ?? 0) * 1e3,
            ]
            if let t = totals["packed_int8"] { object["int8_ms_per_token"] = t * 1e3 }
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("bench gemv: \(URL(fileURLWithPath: model).lastPathComponent), \(Parallel.threadCount) threads, median of \(runs)")
            print("  type       tensors       MB | int16 kernels: ms  GB/s  share | int8 (VNNI): ms  GB/s | float: ms  GB/s")
            func f(_ v: Double, _ width: Int, _ digits: Int) -> String {
                let t = String(format: "%.\(digits)f", v)
                return String(repeating: " ", count: max(0, width - t.count)) + t
            }
            for row in rows {
                let name = row["type"] as! String
                let ms = row["int16_ms"] as! Double, fms = row["float_ms"] as! Double
                let share = name.contains("→") ? "    —" : f(100 * ms / 1e3 / (totals["packed_int16"] ?? 1), 5, 1) + "%"
                print("  " + name.padding(toLength: 10, withPad: " ", startingAt: 0) + String(format: " %7d", row["tensors"] as! Int)
                      + f(Double(row["bytes"] as! Int) / 1e6, 9, 1) + " | " + f(ms, 16, 2) + f(row["int16_gb_per_second"] as! Double, 6, 1)
                      + " " + share + " | "
                      + ((row["int8_ms"] as? Double).map { f($0, 15, 2) + f(row["int8_gb_per_second"] as! Double, 6, 1) } ?? String(repeating: " ", count: 14) + "—" + String(repeating: " ", count: 6))
                      + " | " + f(fms, 9, 2) + f(row["float_gb_per_second"] as! Double, 6, 1))
            }
            let packed = totals["packed_int16"] ?? 1, float = totals["packed_float"] ?? 1, decode = totals["decode_int16"] ?? 1
            print(String(format: "  all products of one decode step: %.2f ms (packed, int16 kernels), %.2f ms (float), %.2f ms (unpacked, as decoding runs them)",
                         packed * 1e3, float * 1e3, decode * 1e3)
                  + String(format: " → at most %.1f / %.1f / %.1f tokens/s", 1 / packed, 1 / float, 1 / decode))
            if let int8 = totals["packed_int8"] {
                print(String(format: "  with 8-bit activations on the packed blocks (AVX-512 VNNI, as decoding runs them here): %.2f ms → at most %.1f tokens/s",
                             int8 * 1e3, 1 / int8))
            }
        }
    }
}
