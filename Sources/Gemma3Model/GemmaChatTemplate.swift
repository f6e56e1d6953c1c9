/// Gemma 3's chat template (google/gemma-3's `chat_template`), rendered as segments that say which
/// text is the assistant's: a system message opens the first user turn, user and assistant turns
/// alternate, content is trimmed, each turn is `<start_of_turn>{user|model}\n{content}<end_of_turn>\n`.
/// The server joins the segments into a prompt; fine-tuning learns only the assistant segments.
public enum GemmaChatTemplate {
    public struct Message: Sendable, Equatable {
        /// `system` (or `developer`), `user` or `assistant`.
        public var role: String
        public var content: String
        public init(role: String, content: String) { self.role = role; self.content = content }
    }

    public struct Segment: Sendable, Equatable {
        public var text: String
        /// The assistant's reply and its closing `<end_of_turn>`: what a fine-tune learns.
        public var isAssistant: Bool
    }

    /// Why messages cannot be rendered (one line).
    public struct TemplateError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The segments of `messages`; with `addGenerationPrompt`, ending with `<start_of_turn>model\n`.
    public static func segments(_ messages: [Message], addGenerationPrompt: Bool) throws(TemplateError) -> [Segment] {
        var turns = messages.map { Message(role: $0.role == "developer" ? "system" : $0.role, content: $0.content) }
        var prefix = ""
        if turns.first?.role == "system" { prefix = trimmed(turns.removeFirst().content) + "\n\n" }
        var out: [Segment] = []
        func add(_ text: String, assistant: Bool = false) {
            if !assistant, let last = out.last, !last.isAssistant { out[out.count - 1].text += text } else { out.append(Segment(text: text, isAssistant: assistant)) }
        }
        for (i, turn) in turns.enumerated() {
            guard turn.role == (i % 2 == 0 ? "user" : "assistant") else {
                throw TemplateError(description: "conversation roles must alternate user/assistant/user/… (after an optional system message)")
            }
            if turn.role == "assistant" {
                add("<start_of_turn>model\n")
                add(trimmed(turn.content) + "<end_of_turn>", assistant: true)
                add("\n")
            } else {
                add("<start_of_turn>user\n" + (i == 0 ? prefix : "") + trimmed(turn.content) + "<end_of_turn>\n")
            }
        }
        if turns.isEmpty { add("<start_of_turn>user\n" + prefix + "<end_of_turn>\n") }
        if addGenerationPrompt { add("<start_of_turn>model\n") }
        return out
    }

    /// Without leading and trailing whitespace and newlines (Jinja's `trim`).
    public static func trimmed(_ s: String) -> String {
        let scalars = s.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(scalars[first...last])
    }
}
