import Foundation
import Gemma3Hub
import Gemma3Kernels

/// Everything the tool reads from its environment, in one place: the libraries read none.
enum CLIEnvironment {
    static let variables = ProcessInfo.processInfo.environment

    /// `RuntimeSettings` from `GEMMA3_THREADS` (worker threads), `GEMMA3_POOL=0` (Dispatch instead of
    /// the spinning pool), `GEMMA3_GEMM=openblas` (OpenBLAS threads training products itself),
    /// `GEMMA3_VNNI=0` (16-bit decode kernels), `GEMMA3_UNPACK=0` (packed decode blocks) and
    /// `GEMMA3_BF16_PREFILL=0` (float32 prefill), `GEMMA3_PRODUCTS=openblas|onednn` (the library of
    /// float32 matrix products; default: chosen for this CPU) and `GEMMA3_BF16_PRODUCTS=0|1` (bf16
    /// training products emulated in float32 / native; default: native where they pay).
    static func runtimeSettings() -> RuntimeSettings {
        var settings = RuntimeSettings()
        if let s = variables["GEMMA3_THREADS"], let n = Int(s), n > 0 { settings.threads = n }
        settings.usesWorkerPool = variables["GEMMA3_POOL"] != "0"
        if variables["GEMMA3_GEMM"] == "openblas" { settings.gemmThreading = .openBLAS }
        if variables["GEMMA3_VNNI"] == "0" { settings.decodeActivations = .int16 }
        settings.unpacksForDecode = variables["GEMMA3_UNPACK"] != "0"
        if variables["GEMMA3_BF16_PREFILL"] == "0" { settings.prefill = .float32 }
        if let name = variables["GEMMA3_PRODUCTS"], !name.isEmpty {
            guard let backend = MatrixProductBackend(rawValue: name) else {
                FileHandle.standardError.write(Data("error: GEMMA3_PRODUCTS must be openblas or onednn, not '\(name)'\n".utf8))
                exit(2)
            }
            settings.productBackend = backend
        }
        switch variables["GEMMA3_BF16_PRODUCTS"] {
        case "0": settings.nativeBFloat16Products = false
        case "1": settings.nativeBFloat16Products = true
        default: break
        }
        return settings
    }

    /// The cores of this machine for each MPI rank placed on it (`OMPI_COMM_WORLD_LOCAL_SIZE`); nil
    /// when not under MPI.
    static var coresPerLocalRank: Int? {
        guard let local = variables["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init), local >= 1 else { return nil }
        return max(1, ProcessInfo.processInfo.activeProcessorCount / local)
    }

    /// Whether the gradient sums overlap the backward when no flag says: where each rank has at least
    /// 4 cores, so one can be left to the communication thread (measured on a 2-core machine with 2 ranks
    /// of 1 thread: the thread then competes with the compute and the overlap loses, 327 vs 348 tokens/s).
    static func overlapsAllReduce(flag: Bool?) -> Bool {
        flag ?? ((coresPerLocalRank ?? 1) >= 4)
    }

    /// Worker threads for one of several MPI ranks on this machine: its cores (less the one the
    /// communication thread takes when the sums overlap the backward); nil when not under MPI, one
    /// rank here and no overlap, or `GEMMA3_THREADS` chose.
    static func threadsPerLocalRank(overlapping: Bool) -> Int? {
        guard variables["GEMMA3_THREADS"] == nil, let cores = coresPerLocalRank else { return nil }
        let local = variables["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? 1
        if local <= 1 && !overlapping { return nil }
        return max(1, cores - (overlapping ? 1 : 0))
    }

    /// The download cache: `$GEMMA3_CACHE`, else `$HOME/.cache/gemma3`.
    static var cacheDirectory: CacheDirectory {
        if let cache = variables["GEMMA3_CACHE"], !cache.isEmpty {
            return CacheDirectory(root: URL(fileURLWithPath: cache, isDirectory: true))
        }
        let home = variables["HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0, isDirectory: true) }
            ?? FileManager.default.homeDirectoryForCurrentUser
        return CacheDirectory(root: home.appendingPathComponent(".cache/gemma3", isDirectory: true))
    }

    /// Where `gemma3 download gpt2-tokenizer` puts `vocab.json` + `merges.txt`, and where every verb
    /// looks when `--tokenizer` is not given.
    static var gpt2TokenizerDirectory: URL { cacheDirectory.gpt2Tokenizer }
}
