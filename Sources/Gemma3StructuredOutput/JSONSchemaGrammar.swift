import Foundation
import Gemma3Infrastructure
import Gemma3Tokenizers

extension ByteGrammar {
    /// Any JSON object (`response_format: {"type": "json_object"}`), compact or with modest whitespace.
    public static func jsonObject() -> ByteGrammar {
        // A fixed schema: cannot fail.
        try! jsonSchema(#"{"type": "object"}"#)
    }

    /// Any JSON value.
    public static func jsonValue() -> ByteGrammar {
        try! jsonSchema("true")
    }

    /// The JSON texts valid under a JSON Schema (the subset below), as a grammar.
    ///
    /// Supported keywords: `type` (object, array, string, number, integer, boolean, null, or a list
    /// of them), `properties`, `required`, `additionalProperties`, `enum`, `const`, `items`,
    /// `minItems`/`maxItems`, `minLength`/`maxLength`, `pattern` (`RegexCompiler`'s subset),
    /// `anyOf`, `$ref` (JSON pointers into the document: `#`, `#/$defs/…`, `#/definitions/…`);
    /// annotations (`title`, `description`, `$schema`, `$id`, `$comment`, `default`, `examples`,
    /// …) are allowed and do not constrain. Any other keyword is an error naming it and where it is.
    ///
    /// What is generated is a subset of what the schema allows, chosen so that every output is
    /// valid: declared properties come in their declared order, each at most once, and no
    /// undeclared ones (also when `additionalProperties` would allow them; an object schema
    /// without `properties` takes any keys, with values of its `additionalProperties` schema);
    /// `pattern` strings are whole matches of the pattern and contain no character JSON must
    /// escape; whitespace is at most one space, or a newline and up to 16 spaces or tabs, between
    /// tokens, and none after the value.
    public static func jsonSchema(_ text: String) throws(GrammarError) -> ByteGrammar {
        let bytes = Array(text.utf8)
        let schema: JSONValue
        do {
            schema = try bytes.withUnsafeBufferPointer { (b) throws(JSONSyntaxError) in try JSONReader.parse(b) }
        } catch {
            throw GrammarError("the JSON schema is not valid JSON (byte \(error.offset): \(error.reason))")
        }
        return try jsonSchema(schema)
    }

    /// The grammar of a parsed JSON Schema (see `jsonSchema(_: String)`).
    public static func jsonSchema(_ schema: JSONValue) throws(GrammarError) -> ByteGrammar {
        var compiler = SchemaCompiler(root: schema)
        return try compiler.compile()
    }

    /// The strings `re.fullmatch(pattern, s)` accepts (see `RegexCompiler` for the syntax).
    public static func regex(_ pattern: String) throws(GrammarError) -> ByteGrammar {
        var builder = GrammarBuilder()
        let r = builder.reserveRule()
        builder.define(r, try RegexCompiler.expression(pattern))
        do {
            return try builder.build()
        } catch {
            throw GrammarError("regex \(pattern.debugDescription): \(error.message)")
        }
    }
}

/// JSON Schema → grammar rules. Objects, arrays, `$ref` targets and the generic value are rules
/// of their own (called through the stack); strings, numbers and literals are inlined.
struct SchemaCompiler {
    let root: JSONValue
    var builder = GrammarBuilder()
    var refRules: [String: Int] = [:]
    var anyValueRule: Int?

    init(root: JSONValue) { self.root = root }

    static let annotations: Set<String> = [
        "$schema", "$id", "$comment", "$anchor", "title", "description", "default", "examples", "deprecated",
        "readOnly", "writeOnly", "$defs", "definitions",
    ]
    static let supported: Set<String> = [
        "type", "properties", "required", "additionalProperties", "enum", "const", "items", "minItems", "maxItems",
        "minLength", "maxLength", "pattern", "anyOf", "$ref",
    ]

    mutating func compile() throws(GrammarError) -> ByteGrammar {
        let r = builder.reserveRule()
        refRules["#"] = r
        builder.define(r, try expression(root, path: "#"))
        return try builder.build()
    }

    // MARK: Pieces of JSON text

    /// Optional whitespace between tokens.
    static let whitespace = GrammarExpression.optional(.choice([
        .literal(" "),
        .sequence([.literal("\n"), .repetition(.bytes(ByteSet([0x20, 0x09])), min: 0, max: 16)]),
    ]))

    static let stringCharacter: GrammarExpression = {
        let hex = GrammarExpression.bytes(ByteSet([UInt8](Array("0123456789abcdefABCDEF".utf8))))
        // \uXXXX without surrogates (a lone one is not a character; Python would keep it, UTF-8 cannot).
        let notSurrogate = GrammarExpression.choice([
            .sequence([.bytes(ByteSet(Array("0123456789abcABC".utf8))), hex, hex, hex]),
            .sequence([.bytes(ByteSet(Array("dD".utf8))), .bytes(ByteSet(Array("01234567".utf8))), hex, hex]),
            .sequence([.bytes(ByteSet(Array("efEF".utf8))), hex, hex, hex]),
        ])
        let escape = GrammarExpression.sequence([
            .literal("\\"),
            .choice([.bytes(ByteSet(Array("\"\\/bfnrt".utf8))), .sequence([.literal("u"), notSurrogate])]),
        ])
        return .choice([ScalarSet.jsonUnescaped.utf8Expression, escape])
    }()

    static func string(minLength: Int, maxLength: Int?) -> GrammarExpression {
        .sequence([.literal("\""), .repetition(stringCharacter, min: minLength, max: maxLength), .literal("\"")])
    }

    static let digit = GrammarExpression.bytes(ByteSet(0x30...0x39))
    static let integerPart = GrammarExpression.sequence([
        .optional(.literal("-")),
        .choice([.literal("0"), .sequence([.bytes(ByteSet(0x31...0x39)), .repetition(digit, min: 0, max: nil)])]),
    ])
    static let number = GrammarExpression.sequence([
        integerPart,
        .optional(.sequence([.literal("."), .repetition(digit, min: 1, max: nil)])),
        .optional(.sequence([.bytes(ByteSet(Array("eE".utf8))), .optional(.bytes(ByteSet(Array("+-".utf8)))),
                             .repetition(digit, min: 1, max: nil)])),
    ])

    /// A JSON value's compact text (enum and const literals).
    static func literalText(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d):
            if d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
            return "\(d)"
        case .string(let s): return jsonStringLiteral(s)
        case .array(let items): return "[" + items.map(literalText).joined(separator: ",") + "]"
        case .object(let members): return "{" + members.map { jsonStringLiteral($0.key) + ":" + literalText($0.value) }.joined(separator: ",") + "}"
        }
    }

    // MARK: Schemas

    mutating func anyValue() -> GrammarExpression {
        if let r = anyValueRule { return .rule(r) }
        let r = builder.reserveRule()
        anyValueRule = r
        let object = builder.reserveRule(), array = builder.reserveRule()
        builder.define(r, .choice([.rule(object), .rule(array), Self.string(minLength: 0, maxLength: nil), Self.number,
                                   .literal("true"), .literal("false"), .literal("null")]))
        builder.define(object, Self.mapObject(values: .rule(r)))
        builder.define(array, Self.array(item: .rule(r), minItems: 0, maxItems: nil))
        return .rule(r)
    }

    /// `{ "key": value, … }` with any keys.
    static func mapObject(values: GrammarExpression) -> GrammarExpression {
        let ws = whitespace
        let member = GrammarExpression.sequence([string(minLength: 0, maxLength: nil), ws, .literal(":"), ws, values, ws])
        return .sequence([.literal("{"), ws, .optional(.sequence([member, .repetition(.sequence([.literal(","), ws, member]), min: 0, max: nil)])),
                          .literal("}")])
    }

    static func array(item: GrammarExpression, minItems: Int, maxItems: Int?) -> GrammarExpression {
        let ws = whitespace
        if maxItems == 0 { return .sequence([.literal("["), ws, .literal("]")]) }
        let more = GrammarExpression.repetition(.sequence([.literal(","), ws, item, ws]), min: max(0, minItems - 1), max: maxItems.map { $0 - 1 })
        let items = GrammarExpression.sequence([item, ws, more])
        return .sequence([.literal("["), ws, minItems == 0 ? .optional(items) : items, .literal("]")])
    }

    private func fail(_ why: String, _ path: String) -> GrammarError { GrammarError("JSON schema at \(path): \(why)") }

    private func nonNegativeInteger(_ v: JSONValue?, _ keyword: String, _ path: String) throws(GrammarError) -> Int? {
        guard let v else { return nil }
        guard case .number(let d) = v, d >= 0, d == d.rounded(), d < 1e9 else { throw fail("\(keyword) must be a non-negative integer", path) }
        return Int(d)
    }

    mutating func expression(_ schema: JSONValue, path: String) throws(GrammarError) -> GrammarExpression {
        let members: [JSONMember]
        switch schema {
        case .bool(true): return anyValue()
        case .bool(false): throw fail("the schema `false` admits no value", path)
        case .object(let m): members = m
        default: throw fail("a schema must be an object or a boolean", path)
        }
        for m in members where !Self.annotations.contains(m.key) && !Self.supported.contains(m.key) {
            throw fail("unsupported JSON Schema keyword \"\(m.key)\"", path)
        }
        let constraining = members.map(\.key).filter { Self.supported.contains($0) }
        if constraining.isEmpty { return anyValue() }

        if let ref = schema["$ref"] {
            guard constraining == ["$ref"] else { throw fail("keywords beside $ref are not supported (\(constraining.joined(separator: ", ")))", path) }
            guard case .string(let pointer) = ref else { throw fail("$ref must be a string", path) }
            return .rule(try rule(forReference: pointer, path: path))
        }
        if let anyOf = schema["anyOf"] {
            guard constraining == ["anyOf"] else { throw fail("keywords beside anyOf are not supported (\(constraining.joined(separator: ", ")))", path) }
            guard case .array(let alternatives) = anyOf, !alternatives.isEmpty else { throw fail("anyOf must be a non-empty array", path) }
            var out: [GrammarExpression] = []
            for (k, a) in alternatives.enumerated() { out.append(try expression(a, path: path + "/anyOf/\(k)")) }
            return .choice(out)
        }

        let types = try self.types(schema, path: path)
        if schema["enum"] != nil || schema["const"] != nil {
            let others = constraining.filter { $0 != "enum" && $0 != "const" && $0 != "type" }
            guard others.isEmpty else { throw fail("enum/const beside \(others.joined(separator: ", ")) is not supported", path) }
            var values: [JSONValue] = []
            if let c = schema["const"] { values = [c] }
            if let e = schema["enum"] {
                guard case .array(let list) = e, !list.isEmpty else { throw fail("enum must be a non-empty array", path) }
                if schema["const"] != nil {
                    let constText = Self.literalText(values[0])
                    values = list.filter { Self.literalText($0) == constText }
                } else {
                    values = list
                }
            }
            if schema["type"] != nil { values = values.filter { Self.hasType($0, in: types) } }
            guard !values.isEmpty else { throw fail("no value of enum/const fits the schema", path) }
            return .choice(values.map { .literal(Self.literalText($0)) })
        }

        var alternatives: [GrammarExpression] = []
        for t in types {
            switch t {
            case "null": alternatives.append(.literal("null"))
            case "boolean": alternatives.append(.choice([.literal("true"), .literal("false")]))
            case "integer": if !types.contains("number") { alternatives.append(Self.integerPart) }
            case "number": alternatives.append(Self.number)
            case "string": alternatives.append(try string(schema, path: path))
            case "array": alternatives.append(try array(schema, path: path))
            case "object": alternatives.append(try object(schema, path: path))
            default: throw fail("unknown type \"\(t)\"", path)
            }
        }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    /// The `type` list, or the type the keywords imply, or every type.
    private func types(_ schema: JSONValue, path: String) throws(GrammarError) -> [String] {
        if let t = schema["type"] {
            var list: [String] = []
            switch t {
            case .string(let s): list = [s]
            case .array(let items):
                for item in items {
                    guard case .string(let s) = item else { throw fail("type must be a string or an array of strings", path) }
                    list.append(s)
                }
            default: throw fail("type must be a string or an array of strings", path)
            }
            let known: Set<String> = ["null", "boolean", "integer", "number", "string", "array", "object"]
            for s in list where !known.contains(s) { throw fail("unknown type \"\(s)\"", path) }
            guard !list.isEmpty else { throw fail("type must not be empty", path) }
            return list
        }
        // Without `type`, keywords of one kind only constrain that kind; generating that kind is valid.
        if schema["properties"] != nil || schema["required"] != nil || schema["additionalProperties"] != nil { return ["object"] }
        if schema["items"] != nil || schema["minItems"] != nil || schema["maxItems"] != nil { return ["array"] }
        if schema["minLength"] != nil || schema["maxLength"] != nil || schema["pattern"] != nil { return ["string"] }
        return ["object", "array", "string", "number", "boolean", "null"]
    }

    static func hasType(_ v: JSONValue, in types: [String]) -> Bool {
        switch v {
        case .null: return types.contains("null")
        case .bool: return types.contains("boolean")
        case .number(let d): return types.contains("number") || (types.contains("integer") && d == d.rounded())
        case .string: return types.contains("string")
        case .array: return types.contains("array")
        case .object: return types.contains("object")
        }
    }

    private mutating func string(_ schema: JSONValue, path: String) throws(GrammarError) -> GrammarExpression {
        let minLength = try nonNegativeInteger(schema["minLength"], "minLength", path) ?? 0
        let maxLength = try nonNegativeInteger(schema["maxLength"], "maxLength", path)
        if let maxLength, maxLength < minLength { throw fail("maxLength \(maxLength) is below minLength \(minLength)", path) }
        if let p = schema["pattern"] {
            guard case .string(let pattern) = p else { throw fail("pattern must be a string", path) }
            guard schema["minLength"] == nil && schema["maxLength"] == nil else {
                throw fail("pattern together with minLength/maxLength is not supported (put the length in the pattern)", path)
            }
            let inner: GrammarExpression
            do { inner = try RegexCompiler.expression(pattern, universe: .jsonUnescaped) } catch { throw fail(error.message, path + "/pattern") }
            return .sequence([.literal("\""), inner, .literal("\"")])
        }
        return Self.string(minLength: minLength, maxLength: maxLength)
    }

    private mutating func array(_ schema: JSONValue, path: String) throws(GrammarError) -> GrammarExpression {
        let minItems = try nonNegativeInteger(schema["minItems"], "minItems", path) ?? 0
        let maxItems = try nonNegativeInteger(schema["maxItems"], "maxItems", path)
        if let maxItems, maxItems < minItems { throw fail("maxItems \(maxItems) is below minItems \(minItems)", path) }
        if let maxItems, maxItems > 1000 { throw fail("maxItems above 1000 is not supported", path) }
        if minItems > 1000 { throw fail("minItems above 1000 is not supported", path) }
        let item: GrammarExpression
        if let items = schema["items"] {
            if case .array = items { throw fail("items as an array (tuple validation) is not supported; use prefixItems-free schemas", path) }
            item = try expression(items, path: path + "/items")
        } else {
            item = anyValue()
        }
        let r = builder.reserveRule()
        let itemRule: GrammarExpression
        if case .rule = item { itemRule = item } else {
            let ir = builder.reserveRule()
            builder.define(ir, item)
            itemRule = .rule(ir)
        }
        builder.define(r, Self.array(item: itemRule, minItems: minItems, maxItems: maxItems))
        return .rule(r)
    }

    private mutating func object(_ schema: JSONValue, path: String) throws(GrammarError) -> GrammarExpression {
        var names: [String] = []
        var valueSchemas: [JSONValue] = []
        if let p = schema["properties"] {
            guard case .object(let members) = p else { throw fail("properties must be an object", path) }
            for m in members where !names.contains(m.key) {
                names.append(m.key)
                valueSchemas.append(m.value)
            }
        }
        var required = Set<String>()
        if let r = schema["required"] {
            guard case .array(let items) = r else { throw fail("required must be an array of strings", path) }
            for item in items {
                guard case .string(let name) = item else { throw fail("required must be an array of strings", path) }
                required.insert(name)
            }
        }
        var additional: JSONValue? = nil  // nil: none generated
        var additionalAllowed = true
        if let a = schema["additionalProperties"] {
            switch a {
            case .bool(let b): additionalAllowed = b
            case .object: additional = a
            default: throw fail("additionalProperties must be a boolean or a schema", path)
            }
        }
        for name in required.sorted() where !names.contains(name) {
            // Required but not declared: an additional property that must be there.
            guard additionalAllowed else { throw fail("\"\(name)\" is required but not in properties while additionalProperties is false", path) }
            names.append(name)
            valueSchemas.append(additional ?? .bool(true))
        }
        let r = builder.reserveRule()
        if names.isEmpty {
            if !additionalAllowed {
                builder.define(r, .sequence([.literal("{"), Self.whitespace, .literal("}")]))
            } else {
                let values = try additional.map { (a) throws(GrammarError) in try expression(a, path: path + "/additionalProperties") } ?? anyValue()
                builder.define(r, Self.mapObject(values: values))
            }
            return .rule(r)
        }
        var values: [GrammarExpression] = []
        for (k, v) in valueSchemas.enumerated() {
            values.append(try expression(v, path: path + "/properties/" + names[k].replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")))
        }
        let isRequired = names.map { required.contains($0) }
        builder.define(r, Self.objectAutomaton(keys: names.map { jsonStringLiteral($0) }, values: values, required: isRequired))
        return .rule(r)
    }

    /// An object whose members come in the given order, the required ones always, the others
    /// optionally. States: M_i expects a key from index i on (after `{` or a comma), K_j follows
    /// key j, E_i follows a member whose successor index is i.
    static func objectAutomaton(keys: [String], values: [GrammarExpression], required: [Bool]) -> RuleBuilder {
        let n = keys.count
        let ws = whitespace
        var a = RuleBuilder()
        let end = a.newState()
        a.accept(end)
        let m = (0...n).map { _ in a.newState() }
        let k = (0..<n).map { _ in a.newState() }
        let e = (0...n).map { _ in a.newState() }
        // firstRequired[i]: the first required index ≥ i (n if none).
        var firstRequired = [Int](repeating: n, count: n + 1)
        for i in stride(from: n - 1, through: 0, by: -1) { firstRequired[i] = required[i] ? i : firstRequired[i + 1] }
        a.add(.sequence([.literal("{"), ws]), from: a.start, to: m[0])
        if firstRequired[0] == n { a.add(.literal("}"), from: m[0], to: end) }
        for i in 0..<n {
            for j in i...min(firstRequired[i], n - 1) {
                a.add(.literal(keys[j]), from: m[i], to: k[j])
            }
        }
        for j in 0..<n {
            a.add(.sequence([ws, .literal(":"), ws, values[j], ws]), from: k[j], to: e[j + 1])
        }
        for i in 0...n {
            if i < n { a.add(.sequence([.literal(","), ws]), from: e[i], to: m[i]) }
            if firstRequired[i] == n { a.add(.literal("}"), from: e[i], to: end) }
        }
        return a
    }

    /// The rule of a `$ref` (a JSON pointer into the document), compiled once.
    private mutating func rule(forReference pointer: String, path: String) throws(GrammarError) -> Int {
        if let r = refRules[pointer] { return r }
        guard pointer.hasPrefix("#") else { throw fail("only local references (#/…) are supported, not \(pointer.debugDescription)", path) }
        var target = root
        let body = pointer.dropFirst()
        if !body.isEmpty {
            guard body.hasPrefix("/") else { throw fail("unsupported reference \(pointer.debugDescription) (anchors are not supported)", path) }
            for raw in body.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
                let segment = (raw.removingPercentEncoding ?? String(raw)).replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
                switch target {
                case .object:
                    guard let next = target[segment] else { throw fail("reference \(pointer.debugDescription) does not resolve", path) }
                    target = next
                case .array(let items):
                    guard let index = Int(segment), index >= 0, index < items.count else { throw fail("reference \(pointer.debugDescription) does not resolve", path) }
                    target = items[index]
                default:
                    throw fail("reference \(pointer.debugDescription) does not resolve", path)
                }
            }
        }
        let r = builder.reserveRule()
        refRules[pointer] = r
        builder.define(r, try expression(target, path: pointer))
        return r
    }
}
