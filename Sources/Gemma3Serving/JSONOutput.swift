import Gemma3Infrastructure

/// A JSON value to write (responses, chunks, errors); objects keep the order given.
public indirect enum JSONOutput: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByNilLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONOutput])
    case object([(String, JSONOutput)])

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSONOutput...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONOutput)...) { self = .object(elements) }

    /// A string, or null.
    public static func string(_ s: String?) -> JSONOutput { s.map { .string($0) } ?? .null }

    /// The compact JSON text.
    public var serialized: String {
        var out = ""
        write(into: &out)
        return out
    }

    private func write(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            // JSON has no infinities or NaN; OpenAI writes -9999 for an impossible token's log-probability.
            if d.isFinite { out += "\(d)" } else { out += d.isNaN ? "null" : (d > 0 ? "1e308" : "-9999.0") }
        case .string(let s): out += jsonStringLiteral(s)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out += "," }
                out += jsonStringLiteral(key)
                out += ":"
                value.write(into: &out)
            }
            out += "}"
        }
    }
}
