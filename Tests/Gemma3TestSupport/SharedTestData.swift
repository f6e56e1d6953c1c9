import Foundation

/// Paths shared by the test targets: the repository and the read-only data beside it.
public enum TestPaths {
    /// Repository root (this file is Tests/Gemma3TestSupport/SharedTestData.swift).
    public static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// The read-only data beside the repository.
    public static let shared = repoRoot.deletingLastPathComponent().appendingPathComponent("shared")
    public static let tinyStories = shared.appendingPathComponent("data/tinystories")
    public static let gpt2 = shared.appendingPathComponent("data/gpt2")

    /// A fresh temporary directory, removed by the caller.
    public static func temporaryDirectory(_ tag: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("gemma3-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Result of running an external program.
public struct ProcessResult {
    public var status: Int32
    public var output: String
    public init(status: Int32, output: String) {
        self.status = status
        self.output = output
    }
}

/// Runs `python3 -c script args…` and returns its exit status and combined stdout + stderr.
public func runPython(script: String, arguments: [String] = []) throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", script] + arguments
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return ProcessResult(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// The sorted names in a directory ([] when it does not exist).
public func directoryEntries(_ url: URL) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted()
}

/// Ten JSON Schemas covering every supported structured-output keyword (the structured-output
/// and serving tests constrain generations with them and validate the outputs with `jsonschema`).
public let testSchemas: [String] = [
    // 1. required, optional, pattern, additionalProperties false, lengths
    #"{"type":"object","properties":{"name":{"type":"string","minLength":1,"maxLength":12},"age":{"type":"integer"},"email":{"type":"string","pattern":"^[a-z]{1,6}@[a-z]{1,5}\\.(com|org)$"}},"required":["name","age"],"additionalProperties":false}"#,
    // 2. enum and const
    #"{"type":"object","properties":{"color":{"enum":["red","green","blue"]},"version":{"const":2},"flag":{"enum":[true,null,1.5,"x"]}},"required":["color","version"]}"#,
    // 3. array of numbers with bounds
    #"{"type":"array","items":{"type":"number"},"minItems":1,"maxItems":4}"#,
    // 4. nested object, array of bounded strings, all-optional members
    #"{"type":"object","properties":{"address":{"type":"object","properties":{"street":{"type":"string","maxLength":10},"zip":{"type":"string","pattern":"\\d{5}"}},"required":["zip"]},"tags":{"type":"array","items":{"type":"string","minLength":1,"maxLength":6},"maxItems":3},"note":{"type":"string","maxLength":5}}}"#,
    // 5. anyOf of different types
    #"{"anyOf":[{"type":"string","maxLength":5},{"type":"integer"},{"type":"null"},{"type":"object","properties":{"a":{"type":"boolean"}},"required":["a"]}]}"#,
    // 6. recursive $ref through $defs
    ##"{"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},"children":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["value"],"additionalProperties":false}},"$ref":"#/$defs/node"}"##,
    // 7. a list of types
    #"{"type":["string","null","boolean"],"maxLength":8}"#,
    // 8. any JSON object (json_object)
    #"{"type":"object"}"#,
    // 9. any JSON value
    #"{"title":"anything"}"#,
    // 10. anyOf of objects that start alike (several configurations alive until the key differs)
    #"{"anyOf":[{"type":"object","properties":{"kind":{"const":"cat"},"lives":{"type":"integer"}},"required":["kind","lives"],"additionalProperties":false},{"type":"object","properties":{"kind":{"const":"dog"},"good":{"type":"boolean"}},"required":["kind","good"],"additionalProperties":false}]}"#,
]
