import Foundation
import Gemma3Model
import Gemma3Tokenizers
import Hummingbird
import NIOCore

/// Calls a request's cancel function once it is known, when the client's connection closes first.
final class CancelBox: @unchecked Sendable {
    private let lock = NSLock()
    private var cancel: (@Sendable () -> Void)?
    private var fired = false
    private var armed = true

    func set(_ f: @escaping @Sendable () -> Void) {
        lock.lock()
        let fireNow = fired && armed
        cancel = f
        lock.unlock()
        if fireNow { f() }
    }

    /// From now on the inbound side's end means nothing (a streamed response watches its writes instead).
    func disarm() {
        lock.lock(); armed = false; lock.unlock()
    }

    func fire() {
        lock.lock()
        fired = true
        let f = armed ? cancel : nil
        lock.unlock()
        f?()
    }
}

/// The routes.
struct Endpoints: Sendable {
    let server: GemmaServer
    var state: ServingState { server.state }
    var maxBody: Int { server.configuration.maxBodyBytes }

    func register(on router: Router<BasicRequestContext>) {
        router.get("/health") { _, _ -> Response in
            switch state.current {
            case .ready: return jsonResponse(["status": "ok"])
            case .loading: return jsonResponse(["status": "loading"], status: .serviceUnavailable)
            case .failed(let why): return jsonResponse(["status": "error", "message": .string(why)], status: .serviceUnavailable)
            }
        }
        router.get("/metrics") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: server.metrics.exposition())))
        }
        for path in ["/v1/models", "/models"] {
            router.get(RouterPath(path)) { _, _ -> Response in
                let (model, _) = try state.ready()
                return jsonResponse(["object": "list", "data": [[
                    "id": .string(model.id), "object": "model", "created": .int(model.created), "owned_by": "gemma3-swift",
                    "meta": ["n_ctx": .int(model.contextLength), "n_vocab": .int(model.tokenizer.vocabularySize)],
                ]]])
            }
        }
        for path in ["/v1/completions", "/completions"] {
            router.post(RouterPath(path)) { request, _ in try await generation(request, chat: false) }
        }
        for path in ["/v1/chat/completions", "/chat/completions"] {
            router.post(RouterPath(path)) { request, _ in try await generation(request, chat: true) }
        }
        router.post("/tokenize") { request, _ -> Response in
            let (model, _) = try state.ready()
            let f = try RequestFields(try await body(request))
            guard let content = try f.string("content") else { throw APIError.invalid("'content' (a string) is required", param: "content") }
            let addSpecial = try f.bool("add_special") ?? false
            let withPieces = try f.bool("with_pieces") ?? false
            let ids: [TokenID]
            if let gemma = model.tokenizer as? GemmaTokenizer {
                ids = gemma.encode(content, addBOS: addSpecial, parseSpecial: true)
            } else if let gpt2 = model.tokenizer as? GPT2Tokenizer {
                ids = gpt2.encode(content, allowSpecial: true)
            } else {
                ids = model.tokenizer.encode(content)
            }
            if withPieces {
                return jsonResponse(["tokens": .array(ids.map { id in
                    let bytes = (model.tokenizer as? GemmaTokenizer)?.tokenBytes(id, special: true) ?? model.tokenizer.bytes(of: id) ?? []
                    let piece: JSONOutput = bytes.withUnsafeBufferPointer { firstInvalidUTF8Offset($0) == nil }
                        ? .string(String(decoding: bytes, as: UTF8.self)) : .array(bytes.map { .int(Int($0)) })
                    return ["id": .int(Int(id)), "piece": piece]
                })])
            }
            return jsonResponse(["tokens": .array(ids.map { .int(Int($0)) })])
        }
        router.post("/detokenize") { request, _ -> Response in
            let (model, _) = try state.ready()
            let f = try RequestFields(try await body(request))
            guard let value = f.raw("tokens"), case .array(let items) = value else {
                throw APIError.invalid("'tokens' (an array of token ids) is required", param: "tokens")
            }
            var ids: [TokenID] = []
            for item in items {
                guard case .number(let d) = item, d.rounded() == d, d >= 0, d < Double(model.tokenizer.vocabularySize) else {
                    throw APIError.invalid("token ids must be integers in 0…\(model.tokenizer.vocabularySize - 1)", param: "tokens")
                }
                ids.append(TokenID(d))
            }
            let text: String
            do {
                // Control tokens are written out (`<start_of_turn>`), as llama-server does.
                if let gemma = model.tokenizer as? GemmaTokenizer { text = try gemma.decodeToString(ids, special: true) } else {
                    text = try model.tokenizer.text(of: ids)
                }
            } catch { throw APIError.invalid("\(error)", param: "tokens") }
            return jsonResponse(["content": .string(text)])
        }
    }

    /// The request body, at most `maxBodyBytes` (413 beyond, without reading further).
    func body(_ request: Request) async throws -> [UInt8] {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBody { throw Self.tooLarge(maxBody) }
        return try await Self.collect(request.body, limit: maxBody)
    }

    static func tooLarge(_ limit: Int) -> APIError {
        APIError(status: 413, "the request body is larger than \(limit) bytes", code: "request_too_large")
    }

    static func collect(_ body: RequestBody, limit: Int) async throws -> [UInt8] {
        var out: [UInt8] = []
        for try await buffer in body {
            guard out.count + buffer.readableBytes <= limit else { throw tooLarge(limit) }
            out.append(contentsOf: buffer.readableBytesView)
        }
        return out
    }

    /// `/v1/completions` and `/v1/chat/completions`.
    func generation(_ request: Request, chat: Bool) async throws -> Response {
        let (model, scheduler) = try state.ready()
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBody { throw Self.tooLarge(maxBody) }
        let limit = maxBody
        let box = CancelBox()
        return try await request.body.consumeWithInboundCloseHandler { body in
            let bytes = try await Self.collect(body, limit: limit)
            let parsed = try chat ? OpenAIRequests.chat(bytes, model: model) : OpenAIRequests.completion(bytes, model: model)
            let ticket: GenerationTicket
            do {
                ticket = try scheduler.submit(parsed.request)
            } catch let error as SubmissionError {
                switch error {
                case .queueFull:
                    throw APIError(status: 429, "the server is busy: \(scheduler.slotCount) slots in use and the queue is full; retry later",
                                   code: "queue_full", retryAfter: 1)
                case .stopping:
                    throw APIError(status: 503, "the server is shutting down", type: "unavailable_error", code: "shutting_down")
                }
            }
            box.set(ticket.cancel)
            let writer = ChunkWriter(model: model.id, chat: chat, logprobs: parsed.request.logprobs != nil)
            if parsed.stream {
                box.disarm()
                return writer.streamingResponse(ticket, parsed: parsed)
            }
            return try await writer.wholeResponse(ticket, parsed: parsed)
        } onInboundClosed: {
            box.fire()
        }
    }
}

/// OpenAI's response and chunk objects for one request.
struct ChunkWriter: Sendable {
    let id: String
    let created: Int
    let model: String
    let chat: Bool
    let logprobs: Bool

    init(model: String, chat: Bool, logprobs: Bool) {
        let hex = (0..<3).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 16) }.joined()
        id = (chat ? "chatcmpl-" : "cmpl-") + hex
        created = Int(Date().timeIntervalSince1970)
        self.model = model
        self.chat = chat
        self.logprobs = logprobs
    }

    static func usage(_ u: GenerationUsage) -> JSONOutput {
        ["prompt_tokens": .int(u.promptTokens), "completion_tokens": .int(u.completionTokens), "total_tokens": .int(u.totalTokens),
         "prompt_tokens_details": ["cached_tokens": .int(u.cachedTokens)]]
    }

    private static func tokenText(_ t: TokenLogprob) -> String { String(decoding: t.bytes, as: UTF8.self) }

    /// Chat's `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
    static func chatLogprobs(_ entries: [GeneratedTokenLogprobs]) -> JSONOutput {
        func one(_ t: TokenLogprob) -> [(String, JSONOutput)] {
            [("token", .string(tokenText(t))), ("logprob", .double(Double(t.logprob))), ("bytes", .array(t.bytes.map { .int(Int($0)) }))]
        }
        return ["content": .array(entries.map { e in
            .object(one(e.chosen) + [("top_logprobs", .array(e.top.map { .object(one($0)) }))])
        })]
    }

    /// Completions' `logprobs`: `{tokens, token_logprobs, top_logprobs, text_offset}`.
    static func completionLogprobs(_ entries: [GeneratedTokenLogprobs], offset: inout Int) -> JSONOutput {
        var offsets: [JSONOutput] = []
        for e in entries {
            offsets.append(.int(offset))
            offset += tokenText(e.chosen).count
        }
        return [
            "tokens": .array(entries.map { .string(tokenText($0.chosen)) }),
            "token_logprobs": .array(entries.map { .double(Double($0.chosen.logprob)) }),
            "top_logprobs": .array(entries.map { e in .object(e.top.map { (tokenText($0), .double(Double($0.logprob))) }) }),
            "text_offset": .array(offsets),
        ]
    }

    /// The whole answer as one JSON response.
    func wholeResponse(_ ticket: GenerationTicket, parsed: ParsedGeneration) async throws -> Response {
        var text = parsed.echo ?? ""
        var entries: [GeneratedTokenLogprobs] = []
        for await event in ticket.events {
            switch event {
            case .text(let piece, let l):
                text += piece
                entries += l
            case .finished(let reason, let usage):
                var offset = parsed.echo?.count ?? 0
                let lp: JSONOutput = logprobs ? (chat ? Self.chatLogprobs(entries) : Self.completionLogprobs(entries, offset: &offset)) : .null
                let choice: JSONOutput = chat
                    ? ["index": 0, "message": ["role": "assistant", "content": .string(text)], "logprobs": lp, "finish_reason": .string(reason.rawValue)]
                    : ["index": 0, "text": .string(text), "logprobs": lp, "finish_reason": .string(reason.rawValue)]
                return jsonResponse(["id": .string(id), "object": chat ? "chat.completion" : "text_completion", "created": .int(created),
                                     "model": .string(model), "system_fingerprint": nil, "choices": [choice], "usage": Self.usage(usage)],
                                    close: true)
            case .failed(let message):
                throw APIError(status: 500, message)
            }
        }
        ticket.cancel()
        throw APIError(status: 503, "the request was cancelled", type: "unavailable_error", code: "cancelled")
    }

    private func chunk(choices: [JSONOutput], usage: JSONOutput?, includeUsage: Bool) -> ByteBuffer {
        var members: [(String, JSONOutput)] = [("id", .string(id)), ("object", chat ? "chat.completion.chunk" : "text_completion"),
                                               ("created", .int(created)), ("model", .string(model)), ("system_fingerprint", nil),
                                               ("choices", .array(choices))]
        if includeUsage { members.append(("usage", usage ?? .null)) }
        return ByteBuffer(string: "data: " + JSONOutput.object(members).serialized + "\n\n")
    }

    private func choice(text: String?, role: Bool = false, logprobs lp: JSONOutput = .null, finish: FinishReason?) -> JSONOutput {
        let finishValue: JSONOutput = finish.map { .string($0.rawValue) } ?? .null
        if chat {
            var delta: [(String, JSONOutput)] = []
            if role { delta.append(("role", "assistant")) }
            if let text { delta.append(("content", .string(text))) }
            return ["index": 0, "delta": .object(delta), "logprobs": lp, "finish_reason": finishValue]
        }
        return ["index": 0, "text": .string(text ?? ""), "logprobs": lp, "finish_reason": finishValue]
    }

    /// Server-sent events: one chunk per piece of text, the finish chunk, the usage chunk when
    /// asked for, then `data: [DONE]`. A failed write (the client went away) cancels the request.
    func streamingResponse(_ ticket: GenerationTicket, parsed: ParsedGeneration) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        headers[.connection] = "close"
        let includeUsage = parsed.includeUsage
        let body = ResponseBody { writer in
            var done = false
            defer { if !done { ticket.cancel() } }
            var offset = 0
            if chat {
                try await writer.write(chunk(choices: [choice(text: "", role: true, finish: nil)], usage: nil, includeUsage: includeUsage))
            } else if let echo = parsed.echo, !echo.isEmpty {
                offset = echo.count
                try await writer.write(chunk(choices: [choice(text: echo, finish: nil)], usage: nil, includeUsage: includeUsage))
            }
            events: for await event in ticket.events {
                switch event {
                case .text(let piece, let entries):
                    let lp: JSONOutput = logprobs ? (chat ? Self.chatLogprobs(entries) : Self.completionLogprobs(entries, offset: &offset)) : .null
                    try await writer.write(chunk(choices: [choice(text: piece, logprobs: lp, finish: nil)], usage: nil, includeUsage: includeUsage))
                case .finished(let reason, let usage):
                    try await writer.write(chunk(choices: [choice(text: chat ? nil : "", finish: reason)], usage: nil, includeUsage: includeUsage))
                    if includeUsage { try await writer.write(chunk(choices: [], usage: Self.usage(usage), includeUsage: true)) }
                    done = true
                    break events
                case .failed(let message):
                    try await writer.write(ByteBuffer(string: "data: " + APIError(status: 500, message).body.serialized + "\n\n"))
                    done = true
                    break events
                }
            }
            if done { try await writer.write(ByteBuffer(string: "data: [DONE]\n\n")) }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }
}
