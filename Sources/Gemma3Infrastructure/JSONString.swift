/// `s` as a JSON string literal, quotes included (RFC 8259 escapes: `"`, `\`, control
/// characters; everything else as UTF-8), for JSON written by hand one line at a time.
public func jsonStringLiteral(_ s: String) -> String {
    var o = "\""
    o.reserveCapacity(s.utf8.count + 2)
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": o += "\\\""
        case "\\": o += "\\\\"
        case "\n": o += "\\n"
        case "\r": o += "\\r"
        case "\t": o += "\\t"
        case "\u{08}": o += "\\b"
        case "\u{0C}": o += "\\f"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            o += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: o.unicodeScalars.append(scalar)
        }
    }
    return o + "\""
}
