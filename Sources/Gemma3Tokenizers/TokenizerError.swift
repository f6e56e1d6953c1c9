import Foundation

/// Errors of the tokenizers: each has a one-line message meant for the user.
public enum TokenizerError: Error, CustomStringConvertible, LocalizedError, Equatable {
    /// No tokenizer files in the directory.
    case missingFiles(directory: String)
    /// A tokenizer file is unreadable or malformed.
    case malformedFile(path: String, reason: String)
    /// Input text is not valid UTF-8; `offset` is the byte offset of the first invalid sequence.
    case invalidUTF8(offset: Int)
    /// A token id outside the vocabulary was given to `decode`.
    case tokenOutOfRange(id: Int32, vocabularySize: Int)
    /// A tokenizer file's SHA-256 is not the known one.
    case checksumMismatch(path: String, expected: String, actual: String)

    public var description: String {
        switch self {
        case .missingFiles(let directory):
            return "no GPT-2 tokenizer files in \(directory) (expected vocab.json + merges.txt, encoder.json + vocab.bpe, or tokenizer.json): run `gemma3 download gpt2-tokenizer` or pass --tokenizer ../shared/data/gpt2"
        case .malformedFile(let path, let reason):
            return "malformed tokenizer file \(path): \(reason)"
        case .invalidUTF8(let offset):
            return "invalid UTF-8 at byte offset \(offset)"
        case .tokenOutOfRange(let id, let size):
            return "token id \(id) is outside the vocabulary (0..<\(size))"
        case .checksumMismatch(let path, let expected, let actual):
            return "SHA-256 of \(path) is \(actual), expected \(expected) (corrupt or not the official GPT-2 file)"
        }
    }

    public var errorDescription: String? { description }
}
