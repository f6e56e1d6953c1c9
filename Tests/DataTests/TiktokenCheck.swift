import Foundation
import Gemma3TestSupport

/// An independent check of `prepare`'s output, in Python: documents are split from the input files
/// with the documented rules, encoded with tiktoken's gpt2 encoding (built offline from
/// ../shared/data/gpt2), followed by 50256, and compared id for id with numpy.memmap of the .bin
/// files; meta.json's counts and checksums are recomputed.
///
/// Usage: check OUT_DIR GPT2_DIR SPEC_JSON where SPEC = {"train": [...], "val": [...], "fraction": f|null}
///        make-jsonl SRC.txt DEST.jsonl   (TinyStories text -> JSON Lines with escapes and extra fields)
enum TiktokenCheck {
    static let script = #"""
import hashlib, json, os, sys
try:
    import numpy as np
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
except ImportError as e:
    print("python3 with tiktoken and numpy is required for this test (pip install tiktoken numpy): %s" % e)
    sys.exit(3)

WS = " \t\n\r\x0b\x0c"
SEPARATORS = ("<|endoftext|>", "<|endoftext|>\r")

def is_jsonl(path, raw):
    return path.lower().endswith((".jsonl", ".json", ".ndjson")) or raw.lstrip(b" \t\r\n")[:1] == b"{"

def documents(path):
    raw = open(path, "rb").read()
    text = raw.decode("utf-8")
    if is_jsonl(path, raw):
        for line in text.split("\n"):
            if line.strip(WS) == "":
                continue
            d = json.loads(line)["text"].strip(WS)
            if d:
                yield d
    else:
        current = []
        for line in text.split("\n"):
            if line in SEPARATORS:
                d = "\n".join(current).strip(WS)
                current = []
                if d:
                    yield d
            else:
                current.append(line)
        d = "\n".join(current).strip(WS)
        if d:
            yield d

M = (1 << 64) - 1
def goes_to_val(b, f):
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & M
    h ^= h >> 30; h = (h * 0xbf58476d1ce4e5b9) & M
    h ^= h >> 27; h = (h * 0x94d049bb133111eb) & M
    h ^= h >> 31
    return (h >> 11) * 2.0 ** -53 < f

def fail(msg):
    print("MISMATCH: " + msg)
    sys.exit(1)

def check(out_dir, gpt2_dir, spec):
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=os.path.join(gpt2_dir, "vocab.bpe"),
        encoder_json_file=os.path.join(gpt2_dir, "encoder.json"))
    enc = tiktoken.Encoding(
        "gpt2-offline",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    assert enc.n_vocab == 50257
    meta = json.load(open(os.path.join(out_dir, "meta.json")))
    fraction = spec.get("fraction")
    splits = {"train": [], "val": []}          # documents per split, in order
    per_source = {"train": {}, "val": {}}      # path -> [documents, tokens]
    inputs = [(p, "train") for p in spec["train"]] + [(p, "val") for p in spec.get("val", [])]
    for path, split in inputs:
        for d in documents(path):
            s = split
            if fraction is not None:
                s = "val" if goes_to_val(d.encode("utf-8"), fraction) else "train"
            splits[s].append(d)
            entry = per_source[s].setdefault(path, [0, 0])
            entry[0] += 1
    for split, docs in splits.items():
        ids = np.memmap(os.path.join(out_dir, split + ".bin"), dtype=np.uint16, mode="r")
        encoded = enc.encode_ordinary_batch(docs, num_threads=2)
        pos = 0
        for k, (d, toks) in enumerate(zip(docs, encoded)):
            want = toks + [50256]
            got = ids[pos:pos + len(want)].tolist()
            if got != want:
                first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                fail("%s document %d (%r...): token %d is %s, tiktoken says %s"
                     % (split, k, d[:60], first, got[first:first + 5], want[first:first + 5]))
            pos += len(want)
        if pos != len(ids):
            fail("%s.bin has %d tokens, tiktoken gives %d" % (split, len(ids), pos))
        m = meta[split]
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        if (m["documents"], m["tokens"], m["bytes"]) != (len(docs), pos, nbytes):
            fail("meta %s: documents/tokens/bytes %s, expected %s"
                 % (split, (m["documents"], m["tokens"], m["bytes"]), (len(docs), pos, nbytes)))
        if abs(m["bytes_per_token"] - nbytes / pos) > 1e-9:
            fail("meta %s bytes_per_token %s != %s" % (split, m["bytes_per_token"], nbytes / pos))
        for src in m["sources"]:
            raw = open(src["path"], "rb").read()
            if src["sha256"] != hashlib.sha256(raw).hexdigest() or src["bytes"] != len(raw):
                fail("meta %s source %s: wrong sha256/bytes" % (split, src["path"]))
            n_docs = per_source[split].get(src["path"], [0, 0])[0]
            if src["documents"] != n_docs:
                fail("meta %s source %s: %d documents, expected %d" % (split, src["path"], src["documents"], n_docs))
        print("%s: %d documents, %d tokens, %d bytes match tiktoken" % (split, len(docs), pos, nbytes))
    if meta["vocab_size"] != 50257 or meta["eot_token"] != 50256 or meta["dtype"] != "uint16":
        fail("meta header: %r" % {k: meta[k] for k in ("vocab_size", "eot_token", "dtype")})
    for f in meta["tokenizer"]["files"]:
        p = os.path.join(meta["tokenizer"]["directory"], f["path"])
        if hashlib.sha256(open(p, "rb").read()).hexdigest() != f["sha256"]:
            fail("meta tokenizer file %s: wrong sha256" % p)
    print("OK")

def make_jsonl(src, dest):
    # Astral characters become surrogate-pair escapes with ensure_ascii.
    out = [json.dumps({"text": "Emoji \U0001F600 and caf\u00e9 \U0001F389 done."}, ensure_ascii=True) + "\n"]
    for k, d in enumerate(documents(src)):
        rec = {"id": k, "meta": {"n": [1, 2.5e-3, None, True], "s": "x\"y"}, "text": "  " + d + "\n"}
        if k % 3 == 0:
            line = json.dumps(rec, ensure_ascii=True)            # \uXXXX escapes, surrogate pairs
        else:
            line = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
        out.append(line + ("\r\n" if k % 5 == 0 else "\n"))
        if k % 7 == 0:
            out.append("\n")                                     # blank line
        if k % 11 == 0:
            out.append(json.dumps({"text": " \n\t "}) + "\n")  # whitespace-only document: skipped
    open(dest, "w", encoding="utf-8").write("".join(out))

if sys.argv[1] == "check":
    check(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
elif sys.argv[1] == "make-jsonl":
    make_jsonl(sys.argv[2], sys.argv[3])
"""#

    /// Runs the checker; returns (passed, output).
    static func check(outputDirectory: URL, train: [URL], val: [URL], fraction: Double?) throws -> ProcessResult {
        let spec: [String: Any] = [
            "train": train.map(\.path), "val": val.map(\.path), "fraction": fraction.map { $0 as Any } ?? NSNull(),
        ]
        let json = String(decoding: try JSONSerialization.data(withJSONObject: spec), as: UTF8.self)
        return try runPython(script: script, arguments: ["check", outputDirectory.path, TestPaths.gpt2.path, json])
    }

    static func makeJSONLines(from source: URL, to destination: URL) throws -> ProcessResult {
        try runPython(script: script, arguments: ["make-jsonl", source.path, destination.path])
    }
}
