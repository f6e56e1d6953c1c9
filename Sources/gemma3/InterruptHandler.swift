import Dispatch
import Foundation
import Gemma3Infrastructure
import Gemma3Training

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The tool's one SIGINT/SIGTERM handler, installed once by the commands that write files.
/// Without a stop flag (prepare) an interrupt deletes the registered temporary files and exits
/// with 128+signal. With one (train) the first interrupt asks the trainer to finish its step and
/// save `latest/`; a second deletes the temporary files and exits at once (checkpoint writes are
/// atomic, so the previous `latest/` stays intact). Reference programs the benches start are
/// killed before the tool exits, so an interrupted bench leaves nothing running.
enum InterruptHandler {
    private final class State: @unchecked Sendable {
        let lock = NSLock()
        var sources: [DispatchSourceSignal] = []
        var children: Set<Int32> = []
    }
    private static let state = State()

    /// A child process to kill if the tool is interrupted while it runs.
    static func register(child pid: Int32) {
        install()
        state.lock.lock(); state.children.insert(pid); state.lock.unlock()
    }

    static func unregister(child pid: Int32) {
        state.lock.lock(); state.children.remove(pid); state.lock.unlock()
    }

    private static func terminateChildren() {
        state.lock.lock()
        // SIGKILL: a reference program has nothing to save, and it may have inherited SIGTERM ignored.
        for pid in state.children { kill(pid, SIGKILL) }
        state.lock.unlock()
    }

    /// Routes SIGINT and SIGTERM to this handler; later calls do nothing.
    static func install(stopping stop: StopFlag? = nil) {
        state.lock.lock()
        defer { state.lock.unlock() }
        guard state.sources.isEmpty else { return }
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { handle(sig, stop: stop) }
            source.resume()
            state.sources.append(source)
        }
    }

    private static func handle(_ sig: Int32, stop: StopFlag?) {
        guard let stop else {
            terminateChildren()
            TemporaryFiles.removeAll()
            FileHandle.standardError.write(Data("\ninterrupted; temporary files removed\n".utf8))
            exit(128 + sig)
        }
        if stop.requested != nil {
            terminateChildren()
            TemporaryFiles.removeAll()
            FileHandle.standardError.write(Data("\nsecond interrupt: exiting now (latest/ is intact)\n".utf8))
            exit(128 + sig)
        }
        stop.request(signal: sig)
        FileHandle.standardError.write(Data("\ninterrupt: finishing this step, then saving latest/ (interrupt again to quit at once)\n".utf8))
    }
}
