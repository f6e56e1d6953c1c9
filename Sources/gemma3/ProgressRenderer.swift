import Foundation
import Gemma3Infrastructure

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The tool's one progress display on stderr, fed with the libraries' `ProgressUpdate`s: a live bar
/// with throughput and ETA when stderr is a terminal, a plain line every few seconds otherwise
/// (logs, CI).
final class ProgressRenderer: @unchecked Sendable {
    private let isTerminal: Bool
    private let interval: TimeInterval
    private let lock = NSLock()
    private var lastDraw = Date.distantPast

    init(isTerminal: Bool = isatty(2) != 0) {
        self.isTerminal = isTerminal
        interval = isTerminal ? 0.1 : 5.0
    }

    /// A handler that draws into this renderer, or nil when `enabled` is false (`--quiet`).
    static func handler(enabled: Bool) -> ProgressHandler? {
        guard enabled else { return nil }
        let renderer = ProgressRenderer()
        return { renderer.draw($0) }
    }

    /// Draws `update` unless the previous line is more recent than the interval (final updates
    /// are always drawn, and end the bar's line).
    func draw(_ update: ProgressUpdate) {
        lock.lock()
        defer { lock.unlock() }
        let now = Date()
        guard update.isFinal || now.timeIntervalSince(lastDraw) >= interval else { return }
        lastDraw = now
        let t = max(1e-9, update.elapsed)
        var rate = String(format: "%.1f MB/s", Double(update.bytesDone) / 1e6 / t)
        if let tokens = update.tokens { rate += ", \(Self.compact(Double(tokens) / t)) tokens/s" }
        let percent = String(format: "%5.1f%%", update.fraction * 100)
        let sizes = "\(Self.megabytes(update.bytesDone))/\(Self.megabytes(update.totalBytes))"
        let eta = formatDuration(update.estimatedSecondsLeft)
        if isTerminal {
            let width = 28
            let filled = Int(update.fraction * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            var line = "\r\(update.label) \(bar) \(percent) \(sizes) \(rate) ETA \(eta)\u{1B}[K"
            if update.isFinal { line += "\n" }
            FileHandle.standardError.write(Data(line.utf8))
        } else {
            FileHandle.standardError.write(Data("\(update.label): \(percent) \(sizes) \(rate) ETA \(eta)\n".utf8))
        }
        if update.isFinal { lastDraw = .distantPast }
    }

    static func megabytes(_ b: Int64) -> String { String(format: "%.1f MB", Double(b) / 1e6) }

    static func compact(_ x: Double) -> String {
        if x >= 1e9 { return String(format: "%.2fG", x / 1e9) }
        if x >= 1e6 { return String(format: "%.2fM", x / 1e6) }
        if x >= 1e3 { return String(format: "%.1fk", x / 1e3) }
        return String(format: "%.0f", x)
    }
}
