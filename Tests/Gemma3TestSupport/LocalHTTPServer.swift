import Foundation

/// A small HTTP/1.1 file server on 127.0.0.1 (Python's http.server), started per test, that knows
/// byte ranges and a few misbehaviours to exercise the downloader:
///   /files/NAME      the file, honouring `Range: bytes=N-` (206, or 416 past the end)
///   /redirect/NAME   302 to /files/NAME with the Hub's X-Linked-Etag (SHA-256) and X-Linked-Size
///   /badetag/NAME    302 to /files/NAME announcing a wrong SHA-256
///   /norange/NAME    the whole file with 200, ignoring Range
///   /truncate/NAME   announces the full length, sends the first half, then drops the connection
public final class LocalHTTPServer {
    let process = Process()
    public let port: Int
    public let root: URL
    let logFile: URL

    static let script = #"""
import hashlib, http.server, json, os, signal, sys, threading
signal.pthread_sigmask(signal.SIG_SETMASK, [])
root = sys.argv[1]
log = []
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        with lock:
            log.append([self.path, self.headers.get("Range")])
            with open(sys.argv[2] + ".tmp", "w") as f: json.dump(log, f)
            os.replace(sys.argv[2] + ".tmp", sys.argv[2])
        parts = self.path.strip("/").split("/", 1)
        if len(parts) != 2: return self.fail(404)
        kind, name = parts
        path = os.path.join(root, name)
        if not os.path.isfile(path): return self.fail(404)
        data = open(path, "rb").read()
        if kind in ("redirect", "badetag"):
            sha = hashlib.sha256(data).hexdigest() if kind == "redirect" else "0" * 64
            self.send_response(302)
            self.send_header("Location", "/files/" + name)
            self.send_header("X-Linked-Etag", '"%s"' % sha)
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Content-Length", "0")
            self.end_headers(); return
        rng = self.headers.get("Range")
        if kind == "files" and rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416); self.send_header("Content-Range", "bytes */%d" % len(data))
                self.send_header("Content-Length", "0"); self.end_headers(); return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body); return
        if kind in ("files", "norange"):
            self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
            self.wfile.write(data); return
        if kind == "truncate":
            self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
            self.wfile.write(data[: len(data) // 2]); self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2); return
        self.fail(404)
    def fail(self, code):
        self.send_response(code); self.send_header("Content-Length", "0"); self.end_headers()
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""#

    /// Serves the files of `root`.
    public init(root: URL) throws {
        self.root = root
        logFile = root.deletingLastPathComponent().appendingPathComponent("server-log-\(UInt32.random(in: 0...UInt32.max)).json")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", Self.script, root.path, logFile.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        // First line of output: the port.
        var line = Data()
        while !line.contains(0x0A) {
            let d = pipe.fileHandleForReading.availableData
            if d.isEmpty { break }
            line.append(d)
        }
        guard let p = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw NSError(domain: "LocalHTTPServer", code: 1,
                          userInfo: [NSLocalizedDescriptionKey: "python3 http server did not start"])
        }
        port = p
    }

    public func url(_ kind: String, _ name: String) -> URL {
        URL(string: "http://127.0.0.1:\(port)/\(kind)/\(name)")!
    }

    public var base: URL { URL(string: "http://127.0.0.1:\(port)/")! }

    /// The requests seen so far: (path, Range header).
    public func requestLog() throws -> [(path: String, range: String?)] {
        guard let data = FileManager.default.contents(atPath: logFile.path) else { return [] }
        let list = try JSONSerialization.jsonObject(with: data) as? [[Any]] ?? []
        return list.map { ($0[0] as? String ?? "", $0[1] as? String) }
    }

    public func stop() {
        // SIGKILL: Foundation's Process on Linux starts children with the spawning thread's signal
        // mask, in which SIGTERM may be blocked, so `terminate()` can be ignored.
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: logFile)
    }

    deinit { stop() }
}
