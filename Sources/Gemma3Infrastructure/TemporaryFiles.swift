import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Temporary files (and freshly created output directories) that must disappear if the process is
/// interrupted before they are renamed into place, so that no partial output is left behind.
/// The library only keeps the list; the program's signal handler calls `removeAll()`.
public enum TemporaryFiles {
    private final class Registry: @unchecked Sendable {
        let lock = NSLock()
        var paths = Set<String>()
        var directories = Set<String>()
    }
    private static let registry = Registry()

    /// A temporary file to delete on interrupt.
    public static func register(_ path: String) {
        registry.lock.lock(); registry.paths.insert(path); registry.lock.unlock()
    }

    /// The file was renamed into place or deleted: no longer temporary.
    public static func unregister(_ path: String) {
        registry.lock.lock(); registry.paths.remove(path); registry.lock.unlock()
    }

    /// A directory created for outputs: removed on interrupt if it is empty by then.
    public static func registerDirectory(_ path: String) {
        registry.lock.lock(); registry.directories.insert(path); registry.lock.unlock()
    }

    /// The directory holds finished outputs now: keep it.
    public static func unregisterDirectory(_ path: String) {
        registry.lock.lock(); registry.directories.remove(path); registry.lock.unlock()
    }

    /// Deletes every registered file, then every registered directory that is empty. Safe to call
    /// from a signal-handling queue while other threads write.
    public static func removeAll() {
        registry.lock.lock()
        defer { registry.lock.unlock() }
        for p in registry.paths { unlink(p) }
        for d in registry.directories { rmdir(d) }  // fails, harmlessly, unless empty
        registry.paths.removeAll()
        registry.directories.removeAll()
    }
}
