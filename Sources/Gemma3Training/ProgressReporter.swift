import Foundation
import Gemma3Infrastructure

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Progress of a long job measured in bytes, written to stderr: a live bar with throughput and ETA
/// when stderr is a terminal, a plain line every few seconds otherwise (logs, CI).
/// Not thread-safe: call it from the thread that drives the job.
public final class ProgressReporter {
    public let label: String
    public let totalBytes: Int64
    public let isTerminal: Bool
    /// Off: report nothing (e.g. `--quiet`, tests).
    public let enabled: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var drewBar = false
    private let interval: TimeInterval

    public init(label: String, totalBytes: Int64, enabled: Bool = true, isTerminal: Bool = isatty(2) != 0) {
        self.label = label
        self.totalBytes = max(1, totalBytes)
        self.enabled = enabled
        self.isTerminal = isTerminal
        interval = isTerminal ? 0.1 : 5.0
    }

    /// Seconds since the reporter was created.
    public var elapsed: TimeInterval { Date().timeIntervalSince(start) }

    /// Reports `bytesDone` of `totalBytes` and, optionally, a count of produced items (tokens).
    public func update(bytesDone: Int64, tokens: Int64? = nil, force: Bool = false) {
        guard enabled else { return }
        let now = Date()
        guard force || now.timeIntervalSince(lastDraw) >= interval else { return }
        lastDraw = now
        let t = max(1e-9, now.timeIntervalSince(start))
        let fraction = min(1, Double(bytesDone) / Double(totalBytes))
        let mbps = Double(bytesDone) / 1e6 / t
        var rate = String(format: "%.1f MB/s", mbps)
        if let tokens { rate += ", \(Self.compact(Double(tokens) / t)) tokens/s" }
        let eta = bytesDone > 0 ? t * (Double(totalBytes - bytesDone) / Double(bytesDone)) : .nan
        let etaText = eta.isFinite ? formatDuration(eta) : "?"
        let sizes = "\(Self.megabytes(bytesDone))/\(Self.megabytes(totalBytes))"
        if isTerminal {
            let width = 28
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let line = "\r\(label) \(bar) \(String(format: "%5.1f%%", fraction * 100)) \(sizes) \(rate) ETA \(etaText)\u{1B}[K"
            FileHandle.standardError.write(line.data(using: .utf8)!)
            drewBar = true
        } else {
            let line = "\(label): \(String(format: "%5.1f%%", fraction * 100)) \(sizes) \(rate) ETA \(etaText)\n"
            FileHandle.standardError.write(line.data(using: .utf8)!)
        }
    }

    /// Ends the bar line on a terminal.
    public func finish() {
        guard enabled, isTerminal, drewBar else { return }
        FileHandle.standardError.write("\n".data(using: .utf8)!)
        drewBar = false
    }

    static func megabytes(_ b: Int64) -> String { String(format: "%.1f MB", Double(b) / 1e6) }

    static func compact(_ x: Double) -> String {
        if x >= 1e9 { return String(format: "%.2fG", x / 1e9) }
        if x >= 1e6 { return String(format: "%.2fM", x / 1e6) }
        if x >= 1e3 { return String(format: "%.1fk", x / 1e3) }
        return String(format: "%.0f", x)
    }
}
