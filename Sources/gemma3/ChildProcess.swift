import Dispatch
import Foundation

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
    let errors = CapturedData()
    let done = DispatchSemaphore(value: 0)
    let errorReader = UncheckedBox(value: err.fileHandleForReading)
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
private struct UncheckedBox<T>: @unchecked Sendable { let value: T }
