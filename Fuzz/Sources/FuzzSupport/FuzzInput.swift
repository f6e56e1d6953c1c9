// What every fuzz target shares: the size bound and cutting one input into several files.

/// Inputs above this many bytes are ignored: every parser's work grows with its input, and the
/// bugs worth finding show up in small inputs (libFuzzer's `-max_len` keeps most inputs far smaller).
public let maximumInputBytes = 1 << 20

/// The input as an array, or nil when it is above `maximumInputBytes`.
public func fuzzInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8]? {
    guard size <= maximumInputBytes else { return nil }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// Splits an input into the files of a multi-file format at the first `separator` line (a line
/// that is exactly the separator text): what comes before, and what comes after (empty when the
/// separator is missing). The seed generator writes multi-file seeds the same way.
public func splitInput(_ bytes: [UInt8], separator: String) -> ([UInt8], [UInt8]) {
    let marker = Array(("\n" + separator + "\n").utf8)
    guard bytes.count >= marker.count else { return (bytes, []) }
    for i in 0...(bytes.count - marker.count) where bytes[i] == marker[0] && bytes[i..<(i + marker.count)].elementsEqual(marker) {
        return (Array(bytes[..<i]), Array(bytes[(i + marker.count)...]))
    }
    return (bytes, [])
}

/// The separator between the files of a multi-file seed.
public let fileSeparator = "=====FUZZ-NEXT-FILE====="
