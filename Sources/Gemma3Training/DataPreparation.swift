import Foundation
import Gemma3Infrastructure
import Gemma3Kernels
import Gemma3Tokenizers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `prepare` needs from a tokenizer: ordinary encoding (special-token text is plain text),
/// a vocabulary size and the end-of-text id appended after every document.
public protocol DocumentTokenizer: Sendable {
    var vocabularySize: Int { get }
    var endOfTextTokenID: Int32 { get }
    /// Encodes UTF-8 text; appends the ids to `out`.
    func encodeOrdinary(utf8: UnsafeBufferPointer<UInt8>, into out: inout [Int32])
}

extension GPT2Tokenizer: DocumentTokenizer {}

/// Where the validation split comes from.
public enum ValidationSource: Sendable, Equatable {
    /// Separate validation file(s).
    case files([URL])
    /// A deterministic fraction of the training documents (chosen by a hash of each document's bytes,
    /// so the choice does not depend on chunking, thread count or file order, and duplicates stay together).
    case fraction(Double)
}

/// Settings of one `prepare` run.
public struct PrepareOptions: Sendable {
    public var trainFiles: [URL]
    public var validation: ValidationSource
    public var outputDirectory: URL
    /// Replace existing `train.bin`/`val.bin`/`meta.json` (otherwise their presence is an error).
    public var overwrite = false
    /// Receives progress (input bytes read, tokens written); nil: none reported.
    public var progress: ProgressHandler?
    /// Approximate size of the pieces that are tokenized in parallel (default: up to 8 MiB, smaller
    /// for small inputs so that every core gets work).
    public var chunkBytes: Int?

    public init(trainFiles: [URL], validation: ValidationSource, outputDirectory: URL) {
        self.trainFiles = trainFiles
        self.validation = validation
        self.outputDirectory = outputDirectory
    }
}

/// Description of the tokenizer recorded in `meta.json`.
public struct TokenizerRecord: Codable, Sendable, Equatable {
    public var name: String
    public var directory: String
    public var files: [FileRecord]

    public init(name: String, directory: String, files: [FileRecord]) {
        self.name = name
        self.directory = directory
        self.files = files
    }

    /// Records the GPT-2 BPE files found in `directory` with their SHA-256.
    public static func gpt2(directory: URL) throws -> TokenizerRecord {
        var files: [FileRecord] = []
        for name in ["vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "tokenizer.json"] {
            let url = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            files.append(try FileRecord(url: url, recordPath: name))
        }
        return TokenizerRecord(name: "gpt2", directory: directory.path, files: files)
    }
}

/// A file and its checksum.
public struct FileRecord: Codable, Sendable, Equatable {
    public var path: String
    public var bytes: Int64
    public var sha256: String

    public init(path: String, bytes: Int64, sha256: String) {
        self.path = path
        self.bytes = bytes
        self.sha256 = sha256
    }

    init(url: URL, recordPath: String) throws {
        let attrs = try FileManager.default.attributesOfItem(atPath: url.path)
        path = recordPath
        bytes = (attrs[.size] as? NSNumber)?.int64Value ?? 0
        sha256 = try SHA256Hasher.hex(ofFile: url)
    }
}

/// One input file's contribution to a split.
public struct SourceRecord: Codable, Sendable, Equatable {
    public var path: String
    public var format: CorpusFormat
    public var bytes: Int64
    public var sha256: String
    public var documents: Int
    public var tokens: Int
}

/// Statistics of one output split (`train.bin` or `val.bin`).
public struct SplitRecord: Codable, Sendable, Equatable {
    /// File name inside the output directory.
    public var file: String
    /// Token count including one end-of-text token per document.
    public var tokens: Int
    public var documents: Int
    /// UTF-8 bytes of the (trimmed) documents, separators excluded: the denominator of bits per byte.
    public var bytes: Int
    /// `bytes / tokens`: multiply a per-token loss in bits by `1 / bytesPerToken` to get bits per byte.
    public var bytesPerToken: Double
    public var sources: [SourceRecord]
    /// SHA-256 of the token file: `train.bin`, `val.bin` and `meta.json` are renamed into place one
    /// by one, so a run killed between the renames could leave a new file beside an old one;
    /// readers check that the files are the ones this record describes (`DatasetMeta.verify`).
    /// Absent in files written before it existed (then only the token counts are checked).
    public var sha256: String?

    enum CodingKeys: String, CodingKey {
        case file, tokens, documents, bytes, sources, sha256
        case bytesPerToken = "bytes_per_token"
    }
}

/// Contents of `meta.json` beside the token files.
public struct DatasetMeta: Codable, Sendable, Equatable {
    /// Format tag of the token files.
    public var format = "gemma3-tokens-v1"
    public var dtype = "uint16"
    public var byteOrder = "little"
    public var tokenizer: TokenizerRecord
    public var vocabSize: Int
    /// Appended after every document (also the last one).
    public var eotToken: Int
    public var valFraction: Double?
    public var train: SplitRecord
    public var val: SplitRecord
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case format, dtype, tokenizer, train, val
        case byteOrder = "byte_order"
        case vocabSize = "vocab_size"
        case eotToken = "eot_token"
        case valFraction = "val_fraction"
        case createdAt = "created_at"
    }

    /// File names inside a prepared directory.
    public static let trainFileName = "train.bin"
    public static let valFileName = "val.bin"
    public static let metaFileName = "meta.json"

    /// Reads `meta.json` of a prepared directory.
    public static func load(directory: URL) throws -> DatasetMeta {
        let url = directory.appendingPathComponent(metaFileName)
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FileIOError.notFound(url.path + " (run `gemma3 prepare` first)")
        }
        return try decode(data, source: url.path)
    }

    /// Decodes `meta.json` text; `source` names it in error messages.
    public static func decode(_ data: Data, source: String = metaFileName) throws -> DatasetMeta {
        do {
            return try JSONDecoder().decode(DatasetMeta.self, from: data)
        } catch {
            throw FileIOError.malformed(source, "not a gemma3 prepare meta.json (\(error))")
        }
    }

    /// Checks that `file` is the token file `split` describes: its token count, and its SHA-256 when
    /// recorded. A mismatch (an interrupted `prepare --force`, a file copied from elsewhere) is a
    /// one-line error naming both.
    public static func verify(_ file: TokenFile, against split: SplitRecord, metaPath: String) throws {
        guard file.count == split.tokens else {
            throw FileIOError.malformed(file.url.path, "holds \(file.count) tokens but \(metaPath) records \(split.tokens): the files are not one prepared set (run `gemma3 prepare --force` again)")
        }
        guard let recorded = split.sha256 else { return }
        var hasher = SHA256Hasher()
        hasher.update(UnsafeRawBufferPointer(file.tokens))
        guard hasher.finalizeHex() == recorded else {
            throw FileIOError.malformed(file.url.path, "its SHA-256 differs from the one \(metaPath) records: the files are not one prepared set (run `gemma3 prepare --force` again)")
        }
    }

    func encoded() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var d = try e.encode(self)
        d.append(0x0A)
        return d
    }
}

/// Errors of `prepare`, each one line.
public enum DataPreparationError: Error, CustomStringConvertible, LocalizedError {
    case missingFile(String)
    case emptyFile(String)
    case notARegularFile(String)
    case invalidUTF8(path: String, offset: Int64)
    case badRecord(path: String, line: Int, message: String)
    case noDocuments(String)
    case emptySplit(split: String, hint: String)
    case vocabularyTooLarge(Int)
    case outputExists(String)
    case badFraction(Double)
    case noTrainFiles

    public var description: String {
        switch self {
        case .missingFile(let p): return "\(p): no such file"
        case .emptyFile(let p): return "\(p) is empty"
        case .notARegularFile(let p): return "\(p) is not a regular file"
        case .invalidUTF8(let p, let o): return "\(p): invalid UTF-8 at byte offset \(o)"
        case .badRecord(let p, let l, let m): return "\(p):\(l): \(m)"
        case .noDocuments(let p): return "\(p) contains no documents (only separators and whitespace)"
        case .emptySplit(let s, let hint): return "the \(s) split would be empty: \(hint)"
        case .vocabularyTooLarge(let n):
            return "the tokenizer has \(n) tokens, but uint16 token files hold ids below 65536 only"
        case .outputExists(let p): return "\(p) already exists; pass --force to overwrite it"
        case .badFraction(let f): return "--val-fraction must be between 0 and 1 (exclusive), got \(f)"
        case .noTrainFiles: return "no training files given"
        }
    }
    public var errorDescription: String? { description }
}

/// Result of a `prepare` run.
public struct PreparationSummary: Codable, Sendable {
    public var outputDirectory: String
    public var meta: DatasetMeta
    /// Input bytes read (all files).
    public var inputBytes: Int64
    public var seconds: Double
    public var megabytesPerSecond: Double
    public var tokensPerSecond: Double
    public var threads: Int

    enum CodingKeys: String, CodingKey {
        case meta, seconds, threads
        case outputDirectory = "output_directory"
        case inputBytes = "input_bytes"
        case megabytesPerSecond = "mb_per_s"
        case tokensPerSecond = "tokens_per_s"
    }
}

/// `gemma3 prepare`: turns text corpora into `train.bin`/`val.bin` token files and `meta.json`.
///
/// The inputs are streamed in chunks cut at document boundaries; batches of chunks are tokenized on
/// all cores and written in input order to temporary files in the output directory, which are fsynced
/// and renamed into place only when everything succeeded. On any error no output is left behind.
public enum DataPreparation {
    /// Runs a preparation. `tokenizerRecord` is what `meta.json` says about the tokenizer.
    public static func run(
        _ options: PrepareOptions, tokenizer: some DocumentTokenizer, tokenizerRecord: TokenizerRecord
    ) throws -> PreparationSummary {
        let started = Date()
        guard !options.trainFiles.isEmpty else { throw DataPreparationError.noTrainFiles }
        guard tokenizer.vocabularySize <= 65536 else {
            throw DataPreparationError.vocabularyTooLarge(tokenizer.vocabularySize)
        }
        if case .fraction(let f) = options.validation, !(f > 0 && f < 1) {
            throw DataPreparationError.badFraction(f)
        }

        // Check every input before doing any work.
        var inputs: [(url: URL, split: Destination)] = options.trainFiles.map {
            ($0, options.validation.isFraction ? .byHash : .train)
        }
        if case .files(let valFiles) = options.validation { inputs += valFiles.map { ($0, .val) } }
        var totalBytes: Int64 = 0
        for (url, _) in inputs { totalBytes += try checkInput(url) }

        // Output directory and overwrite policy.
        let out = options.outputDirectory
        let fm = FileManager.default
        var isDir: ObjCBool = false
        let existed = fm.fileExists(atPath: out.path, isDirectory: &isDir)
        if existed && !isDir.boolValue { throw FileIOError.malformed(out.path, "exists and is not a directory") }
        let outputs = [DatasetMeta.trainFileName, DatasetMeta.valFileName, DatasetMeta.metaFileName]
            .map { out.appendingPathComponent($0) }
        if !options.overwrite, let clash = outputs.first(where: { fm.fileExists(atPath: $0.path) }) {
            throw DataPreparationError.outputExists(clash.path)
        }
        if !existed {
            do { try fm.createDirectory(at: out, withIntermediateDirectories: true) } catch {
                throw FileIOError.cannotCreate(out.path, errno)
            }
        }
        // On failure: remove temporaries (the writers' deinit) and a directory we created, if still empty.
        var succeeded = false
        if !existed { TemporaryFiles.registerDirectory(out.path) }
        defer {
            if !existed { TemporaryFiles.unregisterDirectory(out.path) }
            if !succeeded && !existed, let left = try? fm.contentsOfDirectory(atPath: out.path), left.isEmpty {
                try? fm.removeItem(at: out)
            }
        }

        // Temporaries of earlier runs that were killed before they could clean up.
        for output in outputs { AtomicFileWriter.removeStaleTemporaries(of: output) }
        let trainWriter = try AtomicFileWriter(destination: outputs[0])
        let valWriter = try AtomicFileWriter(destination: outputs[1])
        defer { trainWriter.abort(); valWriter.abort() }  // no-ops after commit

        let threads = max(1, Parallel.threadCount)
        let chunkBytes = options.chunkBytes
            ?? min(8 << 20, max(256 << 10, Int(totalBytes) / (threads * 4)))
        let fraction: Double? = { if case .fraction(let f) = options.validation { return f }; return nil }()

        var trainSplit = SplitAccumulator(file: DatasetMeta.trainFileName)
        var valSplit = SplitAccumulator(file: DatasetMeta.valFileName)
        var trainHash = SHA256Hasher(), valHash = SHA256Hasher()
        var bytesDone: Int64 = 0
        var tokensDone: Int64 = 0
        func reportProgress(isFinal: Bool) {
            options.progress?(ProgressUpdate(label: "prepare", bytesDone: bytesDone, totalBytes: totalBytes, tokens: tokensDone,
                                             elapsed: Date().timeIntervalSince(started), isFinal: isFinal))
        }

        for (url, destination) in inputs {
            let reader = try CorpusChunkReader(url: url, targetBytes: chunkBytes)
            var trainSource = SourceAccumulator()
            var valSource = SourceAccumulator()
            var linesBefore = 0  // JSON Lines: lines in earlier chunks, for error messages
            var finished = false
            while !finished {
                // Read one chunk per worker slot (two per thread for balance), then tokenize them together.
                var batch: [(bytes: [UInt8], fileOffset: Int64, isFinal: Bool)] = []
                while batch.count < threads * 2, let chunk = try reader.next() { batch.append(chunk) }
                if batch.count < threads * 2 { finished = true }
                if batch.isEmpty { break }
                let results = tokenize(
                    batch.map { ($0.bytes, $0.isFinal) }, format: reader.format,
                    destination: destination, fraction: fraction, tokenizer: tokenizer)
                for (k, r) in results.enumerated() {
                    switch r.failure {
                    case .invalidUTF8(let at)?:
                        throw DataPreparationError.invalidUTF8(path: url.path, offset: batch[k].fileOffset + Int64(at))
                    case .record(let line, let message)?:
                        throw DataPreparationError.badRecord(path: url.path, line: linesBefore + line + 1, message: message)
                    case nil: break
                    }
                    linesBefore += r.lines
                    try r.train.withUnsafeBytes { try trainWriter.write($0); trainHash.update($0) }
                    try r.val.withUnsafeBytes { try valWriter.write($0); valHash.update($0) }
                    trainSource.add(documents: r.trainDocuments, tokens: r.train.count, bytes: r.trainBytes)
                    valSource.add(documents: r.valDocuments, tokens: r.val.count, bytes: r.valBytes)
                    bytesDone += Int64(batch[k].bytes.count)
                    tokensDone += Int64(r.train.count + r.val.count)
                }
                reportProgress(isFinal: false)
            }
            if trainSource.documents + valSource.documents == 0 { throw DataPreparationError.noDocuments(url.path) }
            let format = reader.format
            func record(_ s: SourceAccumulator) -> SourceRecord {
                SourceRecord(path: url.path, format: format, bytes: reader.fileSize, sha256: reader.sha256Hex,
                             documents: s.documents, tokens: s.tokens)
            }
            switch destination {
            case .train: trainSplit.add(record(trainSource), bytes: trainSource.bytes)
            case .val: valSplit.add(record(valSource), bytes: valSource.bytes)
            case .byHash:
                trainSplit.add(record(trainSource), bytes: trainSource.bytes)
                valSplit.add(record(valSource), bytes: valSource.bytes)
            }
        }
        reportProgress(isFinal: true)

        if let fraction {
            let all = trainSplit.documents + valSplit.documents
            if valSplit.documents == 0 {
                throw DataPreparationError.emptySplit(
                    split: "val", hint: "--val-fraction \(fraction) selected none of the \(all) documents; use a larger fraction")
            }
            if trainSplit.documents == 0 {
                throw DataPreparationError.emptySplit(
                    split: "train", hint: "--val-fraction \(fraction) selected all \(all) documents; use a smaller fraction")
            }
        }

        let meta = DatasetMeta(
            tokenizer: tokenizerRecord, vocabSize: tokenizer.vocabularySize,
            eotToken: Int(tokenizer.endOfTextTokenID), valFraction: fraction,
            train: trainSplit.record(sha256: trainHash.finalizeHex()), val: valSplit.record(sha256: valHash.finalizeHex()),
            createdAt: ISO8601DateFormatter().string(from: Date()))
        let metaWriter = try AtomicFileWriter(destination: outputs[2])
        defer { metaWriter.abort() }
        try metaWriter.write(try meta.encoded())

        // Everything is written: make it durable and visible, meta.json last (it marks completion).
        try trainWriter.commit()
        try valWriter.commit()
        try metaWriter.commit()
        succeeded = true

        let seconds = Date().timeIntervalSince(started)
        return PreparationSummary(
            outputDirectory: out.path, meta: meta, inputBytes: bytesDone, seconds: seconds,
            megabytesPerSecond: Double(bytesDone) / 1e6 / max(seconds, 1e-9),
            tokensPerSecond: Double(tokensDone) / max(seconds, 1e-9), threads: threads)
    }

    /// Tokenizes a whole corpus held in memory exactly as `run` tokenizes each chunk of an input
    /// file: the documents of `format` (TinyStories separators or JSON Lines `"text"` fields), each
    /// encoded and followed by the end-of-text id. Throws the one-line error `run` would report
    /// (invalid UTF-8, a malformed JSON Lines record), with `name` standing for the path.
    public static func tokenize(
        corpus bytes: [UInt8], format: CorpusFormat, tokenizer: some DocumentTokenizer, name: String = "corpus"
    ) throws -> (tokens: [UInt16], documents: Int) {
        guard tokenizer.vocabularySize <= 65536 else { throw DataPreparationError.vocabularyTooLarge(tokenizer.vocabularySize) }
        let r = bytes.withUnsafeBufferPointer {
            tokenizeChunk($0, format: format, isFinal: true, destination: .train, fraction: nil, tokenizer: tokenizer)
        }
        switch r.failure {
        case .invalidUTF8(let at)?: throw DataPreparationError.invalidUTF8(path: name, offset: Int64(at))
        case .record(let line, let message)?: throw DataPreparationError.badRecord(path: name, line: line + 1, message: message)
        case nil: return (r.train, r.trainDocuments)
        }
    }

    /// Which split the documents of an input go to.
    enum Destination { case train, val, byHash }

    /// Whether a document goes to validation under `--val-fraction`: a 64-bit hash of its bytes
    /// (FNV-1a, then a SplitMix64 finalizer to spread the bits) mapped to [0, 1) and compared with the fraction.
    static func isValidationDocument(_ doc: UnsafeBufferPointer<UInt8>, fraction: Double) -> Bool {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in doc { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        h ^= h >> 30; h = h &* 0xbf58_476d_1ce4_e5b9
        h ^= h >> 27; h = h &* 0x94d0_49bb_1331_11eb
        h ^= h >> 31
        return Double(h >> 11) * 0x1p-53 < fraction
    }

    /// Returns the size of a readable, non-empty regular file, or throws a one-line error.
    static func checkInput(_ url: URL) throws -> Int64 {
        var st = stat()
        guard stat(url.path, &st) == 0 else {
            if errno == ENOENT { throw DataPreparationError.missingFile(url.path) }
            throw FileIOError.cannotOpen(url.path, errno)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw DataPreparationError.notARegularFile(url.path) }
        guard st.st_size > 0 else { throw DataPreparationError.emptyFile(url.path) }
        guard access(url.path, R_OK) == 0 else { throw FileIOError.cannotOpen(url.path, errno) }
        return Int64(st.st_size)
    }

    enum ChunkFailure {
        case invalidUTF8(Int)
        case record(line: Int, message: String)
    }

    struct ChunkResult {
        var train: [UInt16] = []
        var val: [UInt16] = []
        var trainDocuments = 0
        var valDocuments = 0
        var trainBytes = 0
        var valBytes = 0
        /// Newlines in the chunk (JSON Lines line numbering).
        var lines = 0
        var failure: ChunkFailure?
    }

    /// Tokenizes chunks in parallel; results come back in input order.
    static func tokenize(
        _ chunks: [(bytes: [UInt8], isFinal: Bool)], format: CorpusFormat, destination: Destination,
        fraction: Double?, tokenizer: some DocumentTokenizer
    ) -> [ChunkResult] {
        var results = [ChunkResult](repeating: ChunkResult(), count: chunks.count)
        results.withUnsafeMutableBufferPointer { out in
            let outBox = UncheckedSendable(out)
            Parallel.forEach(chunks.count) { k in
                outBox.value[k] = chunks[k].bytes.withUnsafeBufferPointer {
                    tokenizeChunk($0, format: format, isFinal: chunks[k].isFinal, destination: destination,
                                  fraction: fraction, tokenizer: tokenizer)
                }
            }
        }
        return results
    }

    static func tokenizeChunk(
        _ chunk: UnsafeBufferPointer<UInt8>, format: CorpusFormat, isFinal: Bool, destination: Destination,
        fraction: Double?, tokenizer: some DocumentTokenizer
    ) -> ChunkResult {
        var r = ChunkResult()
        guard !chunk.isEmpty else { return r }  // no documents (and maybe no base address)
        if let bad = firstInvalidUTF8Offset(chunk) {
            r.failure = .invalidUTF8(bad)
            return r
        }
        // About 4 bytes per token for English text.
        let expected = chunk.count / 4 + 16
        r.train.reserveCapacity(destination == .val ? 0 : expected)
        r.val.reserveCapacity(destination == .train ? 0 : (destination == .val ? expected : expected / 8))
        var ids: [Int32] = []
        ids.reserveCapacity(4096)
        let eot = UInt16(truncatingIfNeeded: tokenizer.endOfTextTokenID)

        func emit(_ doc: UnsafeBufferPointer<UInt8>) {
            ids.removeAll(keepingCapacity: true)
            tokenizer.encodeOrdinary(utf8: doc, into: &ids)
            let toVal: Bool
            switch destination {
            case .train: toVal = false
            case .val: toVal = true
            case .byHash: toVal = isValidationDocument(doc, fraction: fraction ?? 0)
            }
            // Ids are < vocabularySize <= 65536 (checked up front), so they fit in UInt16.
            if toVal {
                for id in ids { r.val.append(UInt16(truncatingIfNeeded: id)) }
                r.val.append(eot)
                r.valDocuments += 1
                r.valBytes += doc.count
            } else {
                for id in ids { r.train.append(UInt16(truncatingIfNeeded: id)) }
                r.train.append(eot)
                r.trainDocuments += 1
                r.trainBytes += doc.count
            }
        }

        switch format {
        case .endOfTextSeparated:
            forEachSeparatedDocument(chunk, isFinal: isFinal, emit)
        case .jsonLines:
            var scratch: [UInt8] = []
            do {
                try forEachJSONLinesDocument(chunk, scratch: &scratch, emit)
            } catch {
                r.failure = .record(line: error.line, message: error.message)
                return r
            }
            var lines = 0
            var p = chunk.baseAddress!
            var left = chunk.count
            while left > 0, let nl = memchr(p, 0x0A, left) {
                let next = UnsafeRawPointer(nl).assumingMemoryBound(to: UInt8.self) + 1
                left -= next - p
                p = next
                lines += 1
            }
            r.lines = lines
        }
        return r
    }
}

extension ValidationSource {
    var isFraction: Bool { if case .fraction = self { return true }; return false }
}

private struct SourceAccumulator {
    var documents = 0
    var tokens = 0
    var bytes = 0
    mutating func add(documents d: Int, tokens t: Int, bytes b: Int) {
        documents += d; tokens += t; bytes += b
    }
}

private struct SplitAccumulator {
    let file: String
    var tokens = 0
    var documents = 0
    var bytes = 0
    var sources: [SourceRecord] = []

    mutating func add(_ s: SourceRecord, bytes b: Int) {
        tokens += s.tokens
        documents += s.documents
        bytes += b
        sources.append(s)
    }

    func record(sha256: String) -> SplitRecord {
        SplitRecord(file: file, tokens: tokens, documents: documents, bytes: bytes,
                    bytesPerToken: tokens > 0 ? Double(bytes) / Double(tokens) : 0, sources: sources, sha256: sha256)
    }
}
