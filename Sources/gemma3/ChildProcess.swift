import Dispatch
import Foundation
import Gemma3Kernels

/// Runs `executable arguments…` to completion; its exit status, standard output and standard error.
///
/// Both pipes are drained at the same time: reading one to its end before the other deadlocks as
/// soon as the child writes more than a pipe buffer (64 KiB) to the other one — e.g. a reference
/// script whose warnings fill stderr while we wait for its stdout.
func runChildProcess(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, stdout: Data, stderr: Data) {
    let p = Process()
    p.executableURL = executable
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    InterruptHandler.register(child: p.processIdentifier)
    defer { InterruptHandler.unregister(child: p.processIdentifier) }
    let errors = CapturedData()
    let done = DispatchSemaphore(value: 0)
    let errorReader = UncheckedSendable(err.fileHandleForReading)
    DispatchQueue.global().async {
        errors.data = errorReader.value.readDataToEndOfFile()
        done.signal()
    }
    let output = out.fileHandleForReading.readDataToEndOfFile()
    done.wait()
    p.waitUntilExit()
    return (p.terminationStatus, output, errors.data)
}

/// Bytes filled in by the stderr reader and read after it signalled.
private final class CapturedData: @unchecked Sendable { var data = Data() }

/// Runs a reference script (`python script arguments…`, through `/usr/bin/env`) that prints one JSON
/// object as its last line of stdout: that object, or why not (missing script, failed start,
/// non-zero exit or no JSON: the last line of its stderr).
func runReferenceScript(python: String, script: String, optionName: String, _ arguments: [String]) -> Result<[String: Any], ReferenceError> {
    guard FileManager.default.fileExists(atPath: script) else {
        return .failure(ReferenceError("\(script) not found (run from the repository root or pass \(optionName))"))
    }
    let child: (status: Int32, stdout: Data, stderr: Data)
    do { child = try runChildProcess(URL(fileURLWithPath: "/usr/bin/env"), [python, script] + arguments) } catch {
        return .failure(ReferenceError("cannot run \(python): \(error.localizedDescription)"))
    }
    guard child.status == 0,
          let line = String(decoding: child.stdout, as: UTF8.self).split(separator: "\n").last,
          let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
        let last = String(decoding: child.stderr, as: UTF8.self).split(separator: "\n").last.map(String.init)
        return .failure(ReferenceError("\(python) \(script) failed: \(last ?? "exit status \(child.status)")"))
    }
    return .success(object)
}

/// Why a reference program was not measured (one line).
struct ReferenceError: Error { let message: String; init(_ message: String) { self.message = message } }
