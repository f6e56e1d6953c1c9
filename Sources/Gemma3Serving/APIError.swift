/// An error answered to the client in OpenAI's shape:
/// `{"error": {"message": …, "type": …, "param": …, "code": …}}`.
public struct APIError: Error, Sendable, CustomStringConvertible {
    /// The HTTP status (400, 401, 404, 413, 429, 500, 503).
    public var status: Int
    public var message: String
    /// OpenAI's error type: `invalid_request_error` for the client's mistakes, `server_error` otherwise.
    public var type: String
    /// The request field at fault, when there is one.
    public var param: String?
    /// A short machine-readable code (`invalid_api_key`, `context_length_exceeded`, …).
    public var code: String?
    /// Seconds for the `Retry-After` header (429 and 503).
    public var retryAfter: Int?

    public init(status: Int, _ message: String, type: String? = nil, param: String? = nil, code: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type ?? (status >= 500 ? "server_error" : "invalid_request_error")
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }

    /// A 400 for a request field.
    public static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: 400, message, param: param, code: code)
    }

    /// The JSON body.
    public var body: JSONOutput {
        ["error": ["message": .string(message), "type": .string(type), "param": .string(param), "code": .string(code)]]
    }

    public var description: String { "\(status): \(message)" }
}
