// A small strict JSON reader for tokenizer files (vocab.json, encoder.json, tokenizer.json).
// Foundation's JSONSerialization would do, but this is faster on a 1 MB vocabulary, keeps object
// order, and reports the byte offset of a syntax error. Public for the other modules that read JSON
// whose member order matters (Gemma3StructuredOutput: a JSON Schema's `properties`).

/// A parsed JSON document; objects keep their members in file order.
public enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([JSONMember])

    /// The value of member `key` of an object (the first one), nil for other values.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self {
            for member in members where member.key == key { return member.value }
        }
        return nil
    }
}

/// One member of a JSON object.
public struct JSONMember: Sendable {
    public let key: String
    public let value: JSONValue
}

/// Where and why a JSON document failed to parse.
public struct JSONSyntaxError: Error, Sendable {
    public let offset: Int
    public let reason: String
}

/// The reader: `JSONReader.parse(bytes)`.
public struct JSONReader {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var position = 0
    private var depth = 0

    /// Parses one JSON document from `bytes` (trailing whitespace allowed, nothing else).
    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONSyntaxError) -> JSONValue {
        var reader = JSONReader(bytes: bytes)
        if bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF { reader.position = 3 }  // BOM
        let value = try reader.parseValue()
        reader.skipWhitespace()
        if reader.position != bytes.count { throw reader.error("unexpected data after the JSON value") }
        return value
    }

    private init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    private func error(_ reason: String) -> JSONSyntaxError { JSONSyntaxError(offset: position, reason: reason) }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            let b = bytes[position]
            if b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { position += 1 } else { break }
        }
    }

    private mutating func expect(_ literal: StaticString) throws(JSONSyntaxError) {
        let n = literal.utf8CodeUnitCount
        let p = literal.utf8Start
        guard position + n <= bytes.count else { throw error("truncated literal") }
        for k in 0 ..< n where bytes[position + k] != p[k] { throw error("invalid literal") }
        position += n
    }

    private mutating func parseValue() throws(JSONSyntaxError) -> JSONValue {
        skipWhitespace()
        guard position < bytes.count else { throw error("unexpected end of JSON") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        default: return .number(try parseNumber())
        }
    }

    private mutating func parseObject() throws(JSONSyntaxError) -> JSONValue {
        depth += 1
        if depth > 512 { throw error("JSON nested too deeply") }
        defer { depth -= 1 }
        position += 1
        var members: [JSONMember] = []
        skipWhitespace()
        if position < bytes.count && bytes[position] == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let key = try parseString()
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw error("expected ':'") }
            position += 1
            members.append(JSONMember(key: key, value: try parseValue()))
            skipWhitespace()
            guard position < bytes.count else { throw error("unexpected end of JSON in an object") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            if bytes[position] == UInt8(ascii: "}") { position += 1; return .object(members) }
            throw error("expected ',' or '}'")
        }
    }

    private mutating func parseArray() throws(JSONSyntaxError) -> JSONValue {
        depth += 1
        if depth > 512 { throw error("JSON nested too deeply") }
        defer { depth -= 1 }
        position += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if position < bytes.count && bytes[position] == UInt8(ascii: "]") {
            position += 1
            return .array(items)
        }
        while true {
            items.append(try parseValue())
            skipWhitespace()
            guard position < bytes.count else { throw error("unexpected end of JSON in an array") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            if bytes[position] == UInt8(ascii: "]") { position += 1; return .array(items) }
            throw error("expected ',' or ']'")
        }
    }

    private mutating func parseHex4() throws(JSONSyntaxError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0 ..< 4 {
            let b = bytes[position]
            let digit: UInt32
            switch b {
            case UInt8(ascii: "0") ... UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a") ... UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A") ... UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
            default: throw error("invalid \\u escape")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    private mutating func parseString() throws(JSONSyntaxError) -> String {
        // Fast path: no escapes, the String is made straight from the input bytes.
        let start = position + 1
        var k = start
        while k < bytes.count {
            let b = bytes[k]
            if b == UInt8(ascii: "\"") {
                position = k + 1
                return String(decoding: UnsafeBufferPointer(rebasing: bytes[start ..< k]), as: UTF8.self)
            }
            if b == UInt8(ascii: "\\") || b < 0x20 { break }
            k += 1
        }
        var utf8: [UInt8] = []
        try parseString(appendingTo: &utf8)
        return String(decoding: utf8, as: UTF8.self)
    }

    /// Parses the string at `position` (its opening quote) and appends its UTF-8 bytes to `utf8`.
    private mutating func parseString(appendingTo utf8: inout [UInt8]) throws(JSONSyntaxError) {
        position += 1  // opening quote
        while position < bytes.count {
            let b = bytes[position]
            if b == UInt8(ascii: "\"") {
                position += 1
                return
            }
            if b < 0x20 { throw error("control character in a string") }
            if b != UInt8(ascii: "\\") {
                utf8.append(b)
                position += 1
                continue
            }
            position += 1
            guard position < bytes.count else { break }
            let e = bytes[position]
            position += 1
            switch e {
            case UInt8(ascii: "\""): utf8.append(0x22)
            case UInt8(ascii: "\\"): utf8.append(0x5C)
            case UInt8(ascii: "/"): utf8.append(0x2F)
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try parseHex4()
                if scalar >= 0xD800 && scalar < 0xDC00,
                   position + 6 <= bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") {
                    let save = position
                    position += 2
                    let low = try parseHex4()
                    if low >= 0xDC00 && low < 0xE000 {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        position = save
                    }
                }
                // Lone surrogates become U+FFFD, as in most JSON readers.
                appendUTF8(Unicode.Scalar(scalar) ?? "\u{FFFD}", to: &utf8)
            default:
                throw error("invalid escape")
            }
        }
        throw error("unterminated string")
    }

    /// Reads a flat JSON object of integers (`{"key": 1, ...}`, as vocab.json), calling
    /// `body(keyUTF8, value)` for each member without building the whole document.
    static func forEachIntegerMember(_ bytes: UnsafeBufferPointer<UInt8>,
                                     _ body: (UnsafeBufferPointer<UInt8>, Int) throws(JSONSyntaxError) -> Void) throws(JSONSyntaxError) {
        var reader = JSONReader(bytes: bytes)
        if bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF { reader.position = 3 }
        reader.skipWhitespace()
        guard reader.position < bytes.count, bytes[reader.position] == UInt8(ascii: "{") else {
            throw reader.error("expected a JSON object")
        }
        reader.position += 1
        reader.skipWhitespace()
        var key: [UInt8] = []
        if reader.position < bytes.count && bytes[reader.position] == UInt8(ascii: "}") {
            reader.position += 1
        } else {
            while true {
                reader.skipWhitespace()
                guard reader.position < bytes.count, bytes[reader.position] == UInt8(ascii: "\"") else {
                    throw reader.error("expected a string key")
                }
                key.removeAll(keepingCapacity: true)
                try reader.parseString(appendingTo: &key)
                reader.skipWhitespace()
                guard reader.position < bytes.count, bytes[reader.position] == UInt8(ascii: ":") else { throw reader.error("expected ':'") }
                reader.position += 1
                reader.skipWhitespace()
                let numberStart = reader.position
                let number = try reader.parseNumber()
                guard let value = Int(exactly: number) else {
                    reader.position = numberStart
                    throw reader.error("expected an integer")
                }
                try key.withUnsafeBufferPointer { (k) throws(JSONSyntaxError) in try body(k, value) }
                reader.skipWhitespace()
                guard reader.position < bytes.count else { throw reader.error("unexpected end of JSON in an object") }
                if bytes[reader.position] == UInt8(ascii: ",") { reader.position += 1; continue }
                if bytes[reader.position] == UInt8(ascii: "}") { reader.position += 1; break }
                throw reader.error("expected ',' or '}'")
            }
        }
        reader.skipWhitespace()
        if reader.position != bytes.count { throw reader.error("unexpected data after the JSON value") }
    }

    private mutating func parseNumber() throws(JSONSyntaxError) -> Double {
        let start = position
        while position < bytes.count {
            let b = bytes[position]
            if (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "-") || b == UInt8(ascii: "+")
                || b == UInt8(ascii: ".") || b == UInt8(ascii: "e") || b == UInt8(ascii: "E") {
                position += 1
            } else {
                break
            }
        }
        guard position > start else { throw error("unexpected character") }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start ..< position]), as: UTF8.self)
        guard let value = Double(text) else {
            position = start
            throw error("invalid number")
        }
        return value
    }
}

/// Appends the UTF-8 encoding of `scalar`.
func appendUTF8(_ scalar: Unicode.Scalar, to out: inout [UInt8]) {
    let v = scalar.value
    switch v {
    case 0 ..< 0x80:
        out.append(UInt8(v))
    case 0x80 ..< 0x800:
        out.append(UInt8(0xC0 | (v >> 6)))
        out.append(UInt8(0x80 | (v & 0x3F)))
    case 0x800 ..< 0x10000:
        out.append(UInt8(0xE0 | (v >> 12)))
        out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (v & 0x3F)))
    default:
        out.append(UInt8(0xF0 | (v >> 18)))
        out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (v & 0x3F)))
    }
}
