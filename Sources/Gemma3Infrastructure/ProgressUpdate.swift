import Foundation

/// How far a long job measured in bytes (a download, a tokenization pass) has come. Libraries
/// report these values through a `ProgressHandler`; drawing them is the program's business.
public struct ProgressUpdate: Sendable, Equatable {
    /// What is being done, e.g. a file name or "prepare".
    public var label: String
    public var bytesDone: Int64
    /// At least 1.
    public var totalBytes: Int64
    /// Items produced so far (tokens), when the job counts them.
    public var tokens: Int64?
    /// Seconds since the job started.
    public var elapsed: TimeInterval
    /// The job's last update: a renderer draws it whatever its interval, then ends its line.
    public var isFinal: Bool

    public init(label: String, bytesDone: Int64, totalBytes: Int64, tokens: Int64? = nil, elapsed: TimeInterval, isFinal: Bool = false) {
        self.label = label
        self.bytesDone = bytesDone
        self.totalBytes = max(1, totalBytes)
        self.tokens = tokens
        self.elapsed = elapsed
        self.isFinal = isFinal
    }

    /// Done so far, 0…1.
    public var fraction: Double { min(1, Double(bytesDone) / Double(totalBytes)) }

    /// Seconds left at the average rate so far; NaN before any byte is done.
    public var estimatedSecondsLeft: Double {
        bytesDone > 0 ? max(1e-9, elapsed) * Double(totalBytes - bytesDone) / Double(bytesDone) : .nan
    }
}

/// Receives progress values; may be called often (every network read), and from any one thread
/// at a time.
public typealias ProgressHandler = @Sendable (ProgressUpdate) -> Void
