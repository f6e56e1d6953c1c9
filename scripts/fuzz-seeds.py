#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora: small valid inputs of every format, one folder per target.

    scripts/fuzz-seeds.py OUT_DIR      (scripts/fuzz.sh runs it on first use)

Everything is generated here (no binaries in the repository); multi-file inputs are the files
joined by a separator line, as Fuzz/Sources/FuzzSupport/FuzzInput.swift splits them.
"""
import json
import os
import struct
import sys

SEPARATOR = b"\n=====FUZZ-NEXT-FILE=====\n"


def write(out, target, name, data):
    folder = os.path.join(out, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- GGUF (version 3, little-endian) ---------------------------------------------------------

GGUF_TYPES = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "bool": 7, "str": 8, "arr": 9,
              "u64": 10, "i64": 11, "f64": 12}
SCALAR_FORMAT = {"u8": "<B", "i8": "<b", "u16": "<H", "i16": "<h", "u32": "<I", "i32": "<i", "f32": "<f",
                 "bool": "<B", "u64": "<Q", "i64": "<q", "f64": "<d"}


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, value):
    if kind == "str":
        return gguf_string(value)
    if kind.startswith("arr:"):
        element = kind[4:]
        return struct.pack("<IQ", GGUF_TYPES[element], len(value)) + b"".join(gguf_value(element, v) for v in value)
    return struct.pack(SCALAR_FORMAT[kind], value)


def gguf(metadata, tensors, alignment=32):
    """metadata: [(key, kind, value)]; tensors: [(name, dims, ggml type, data bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, kind, value in metadata:
        tag = GGUF_TYPES["arr"] if kind.startswith("arr:") else GGUF_TYPES[kind]
        out += gguf_string(key) + struct.pack("<I", tag) + gguf_value(kind, value)
    offset, offsets = 0, []
    for _, _, _, data in tensors:
        offsets.append(offset)
        offset = (offset + len(data) + alignment - 1) // alignment * alignment
    for (name, dims, ggml_type, _), o in zip(tensors, offsets):
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, o)
    out += b"\0" * (-len(out) % alignment)
    for _, _, _, data in tensors:
        out += data + b"\0" * (-len(data) % alignment)
    return out


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def gemma_gguf():
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<0x0A>", "<0x41>",
              "\u2581", "a", "b", "e", "h", "l", "o", "\u2581a", "he", "ll", "llo", "hello", "\u2581hello"]
    types = [3, 3, 3, 2, 3, 3, 6, 6] + [1] * 13
    hidden, vocab = 8, len(pieces)
    metadata = [
        ("general.architecture", "str", "gemma3"),
        ("general.alignment", "u32", 32),
        ("gemma3.context_length", "u32", 64),
        ("gemma3.embedding_length", "u32", hidden),
        ("gemma3.block_count", "u32", 1),
        ("gemma3.feed_forward_length", "u32", 16),
        ("gemma3.attention.head_count", "u32", 1),
        ("gemma3.attention.head_count_kv", "u32", 1),
        ("gemma3.attention.key_length", "u32", 8),
        ("gemma3.attention.value_length", "u32", 8),
        ("gemma3.attention.sliding_window", "u32", 16),
        ("gemma3.attention.layer_norm_rms_epsilon", "f32", 1e-6),
        ("gemma3.rope.freq_base", "f32", 1e6),
        ("tokenizer.ggml.model", "str", "llama"),
        ("tokenizer.ggml.tokens", "arr:str", pieces),
        ("tokenizer.ggml.scores", "arr:f32", [-float(i) for i in range(vocab)]),
        ("tokenizer.ggml.token_type", "arr:i32", types),
        ("tokenizer.ggml.bos_token_id", "u32", 2),
        ("tokenizer.ggml.eos_token_id", "u32", 1),
        ("tokenizer.ggml.add_bos_token", "bool", 1),
    ]
    q8_block = struct.pack("<e", 0.5) + bytes(range(32))  # Q8_0: f16 scale + 32 int8
    tensors = [
        ("token_embd.weight", [hidden, vocab], 0, f32([0.01 * i for i in range(hidden * vocab)])),
        ("blk.0.attn_norm.weight", [hidden], 0, f32([1.0] * hidden)),
        ("blk.0.attn_q.weight", [32, 2], 8, q8_block * 2),
        ("blk.0.ffn_up.weight", [8, 2], 1, struct.pack("<16e", *[0.25] * 16)),  # F16
    ]
    return gguf(metadata, tensors)


def gpt2_gguf():
    tokens = [byte_level(bytes([b])) for b in range(256)] + ["he", "ll", "hell", "hello", "<|endoftext|>"]
    metadata = [
        ("general.architecture", "str", "gemma3"),
        ("tokenizer.ggml.model", "str", "gpt2"),
        ("tokenizer.ggml.tokens", "arr:str", tokens),
        ("tokenizer.ggml.merges", "arr:str", ["h e", "l l", "he ll", "hell o"]),
        ("tokenizer.ggml.eos_token_id", "u32", len(tokens) - 1),
        ("gemma3.attention.sliding_window_pattern", "arr:bool", [1, 0]),
    ]
    return gguf(metadata, [("output_norm.weight", [4], 0, f32([1, 2, 3, 4]))], alignment=64)


# --- GPT-2's byte-to-unicode alphabet ---------------------------------------------------------

def byte_to_unicode():
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_UNICODE = byte_to_unicode()


def byte_level(b):
    return "".join(BYTE_TO_UNICODE[x] for x in b)


def gpt2_files():
    vocab = {byte_level(bytes([b])): b for b in range(256)}
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("\u0120", "w"), ("\u0120w", "o")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    return vocab, merges, merges_txt


# --- The seeds --------------------------------------------------------------------------------

def main(out):
    # GGUF
    write(out, "FuzzGGUF", "gemma.gguf", gemma_gguf())
    write(out, "FuzzGGUF", "gpt2.gguf", gpt2_gguf())
    write(out, "FuzzGGUF", "empty.gguf", gguf([], []))

    # safetensors
    def safetensors(entries, metadata=None):
        header, data = {}, b""
        for name, dtype, shape, raw in entries:
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
            data += raw
        if metadata:
            header["__metadata__"] = metadata
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        return struct.pack("<Q", len(h)) + h + data
    write(out, "FuzzSafeTensors", "model.safetensors", safetensors([
        ("model.embed_tokens.weight", "F32", [2, 3], f32([1, 2, 3, 4, 5, 6])),
        ("model.norm.weight", "BF16", [4], struct.pack("<4H", 0x3F80, 0x4000, 0x4040, 0x4080)),
        ("half", "F16", [2], struct.pack("<2e", 1.5, -2)),
        ("steps", "I64", [2], struct.pack("<2q", 7, -1)),
        ("mask", "BOOL", [3], bytes([1, 0, 1])),
        ("empty", "F32", [0, 4], b""),
    ], {"format": "pt"}))
    write(out, "FuzzSafeTensors", "f64.safetensors", safetensors([("x", "F64", [1], struct.pack("<d", 3.25))]))

    # config.json
    hf4 = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640,
           "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
           "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 512, "rope_theta": 1000000.0,
           "rope_local_base_freq": 10000.0, "_sliding_window_pattern": 6, "rms_norm_eps": 1e-06,
           "max_position_embeddings": 32768, "hidden_activation": "gelu_pytorch_tanh", "bos_token_id": 2,
           "eos_token_id": [1, 106], "pad_token_id": 0, "rope_scaling": None, "final_logit_softcapping": None,
           "attn_logit_softcapping": None, "attention_bias": False, "tie_word_embeddings": True}
    write(out, "FuzzConfig", "gemma3-270m.json", json.dumps(hf4, indent=1))
    hf5 = dict(hf4)
    for k in ["rope_theta", "rope_local_base_freq", "_sliding_window_pattern"]:
        del hf5[k]
    hf5["num_hidden_layers"] = 3
    hf5["layer_types"] = ["sliding_attention", "sliding_attention", "full_attention"]
    hf5["rope_parameters"] = {"full_attention": {"rope_theta": 1e6, "rope_type": "default"},
                              "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}
    hf5["eos_token_id"] = 1
    write(out, "FuzzConfig", "transformers5.json", json.dumps(hf5))
    write(out, "FuzzConfig", "multimodal.json", json.dumps({"text_config": {k: hf4[k] for k in [
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"]},
        "tie_word_embeddings": False}))

    # Gemma tokenizer.json
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    pieces += ["<0x%02X>" % b for b in range(256)]
    normal = ["\u2581", "a", "b", "e", "h", "l", "o", "\u2581a", "he", "ll", "llo", "hello", "\u2581hello", "\u2581\u2581"]
    pieces += normal
    added = [{"id": i, "content": p, "special": p != "<unk>" or True} for i, p in enumerate(pieces[:6])]
    added.append({"id": len(pieces), "content": "<table>", "special": False})
    gemma = {"version": "1.0", "added_tokens": added,
             "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>",
                       "vocab": {p: i for i, p in enumerate(pieces)},
                       "merges": [["h", "e"], ["l", "l"], ["ll", "o"], ["he", "llo"], ["\u2581", "hello"]]}}
    write(out, "FuzzGemmaTokenizer", "tokenizer.json", json.dumps(gemma, ensure_ascii=False))
    small = {"added_tokens": [{"id": 0, "content": "<bos>", "special": True}, {"id": 1, "content": "<eos>", "special": True}],
             "model": {"vocab": {"<bos>": 0, "<eos>": 1, "a": 2, "\u2581": 3, "\u2581a": 4}}}
    write(out, "FuzzGemmaTokenizer", "small.json", json.dumps(small))

    # GPT-2 vocab.json + merges.txt, and tokenizer.json
    vocab, merges, merges_txt = gpt2_files()
    write(out, "FuzzGPT2Tokenizer", "vocab-merges", json.dumps(vocab).encode() + SEPARATOR + merges_txt.encode())
    write(out, "FuzzGPT2Tokenizer", "tokenizer.json", json.dumps({
        "added_tokens": [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "special": True}],
        "model": {"type": "BPE", "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges[:3]] + [list(m) for m in merges[3:]]}}))

    # Training recipes
    write(out, "FuzzRecipe", "full.json", json.dumps({
        "learning_rate": 0.001, "max_iters": 1853, "warmup_steps": 92, "min_lr": 0.0001, "eval_interval": 370,
        "eval_iters": 20, "batch_size": 16, "block_size": 128, "gradient_accumulation_steps": 1, "grad_clip": 0.5,
        "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "seed": 1337, "dtype": "bf16",
        "checkpoint_interval": 100}))
    write(out, "FuzzRecipe", "based.json", json.dumps({"_base": "smoke", "max_iters": 40, "_comment": "x"}))

    # prepare's corpora
    write(out, "FuzzJSONL", "stories.jsonl",
          '{"text": "Once upon a time \\u00e9\\ud83d\\ude00.", "id": 1, "meta": {"a": [1, 2.5e3, null, true]}}\n'
          '\n{"text": "  Two\\n\\ttabs\\"quoted\\"  "}\r\n{"id": "no text", "text": "last"}')
    write(out, "FuzzJSONL", "stories.txt", "\x01Once upon a time.\n<|endoftext|>\nThe end.\r\n<|endoftext|>\r\n\n")

    # gemma3 finetune's examples
    write(out, "FuzzFineTuneData", "examples.jsonl",
          json.dumps({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a user"},
                                   {"role": "assistant", "content": "model a"}, {"role": "user", "content": "b"},
                                   {"role": "assistant", "content": "\u00e9 <end_of_turn>"}]}) + "\n"
          + json.dumps({"prompt": "a b", "completion": " model"}) + "\n\n" + json.dumps({"text": "user a\tb"}) + "\r\n")

    # A prepared dataset: meta.json + train.bin
    meta = {"format": "gemma3-tokens-v1", "dtype": "uint16", "byte_order": "little",
            "tokenizer": {"name": "gpt2", "directory": "/data/gpt2", "files": [{"path": "vocab.json", "bytes": 1042301, "sha256": "19" * 32}]},
            "vocab_size": 50257, "eot_token": 50256, "val_fraction": 0.1,
            "train": {"file": "train.bin", "tokens": 9, "documents": 2, "bytes": 30, "bytes_per_token": 3.3,
                      "sources": [{"path": "a.txt", "format": "txt", "bytes": 40, "sha256": "ab" * 32, "documents": 2, "tokens": 9}]},
            "val": {"file": "val.bin", "tokens": 0, "documents": 0, "bytes": 0, "bytes_per_token": 0, "sources": []},
            "created_at": "2026-12-05T12:00:00Z"}
    write(out, "FuzzTokenFiles", "dataset", json.dumps(meta).encode() + SEPARATOR + struct.pack("<9H", 1, 2, 3, 50256, 4, 5, 6, 7, 50256))

    # Server request bodies
    write(out, "FuzzServerRequest", "completion.json", json.dumps({
        "model": "fuzz", "prompt": "hello a", "max_tokens": 8, "temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05,
        "repetition_penalty": 1.1, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5, "stop": ["\n", "b"],
        "stream": True, "stream_options": {"include_usage": True}, "logprobs": 2, "echo": True, "n": 1, "cache_prompt": False}))
    write(out, "FuzzServerRequest", "tokens.json", json.dumps({"prompt": [[2, 270, 271]], "n_predict": -1, "ignore_eos": True}))
    write(out, "FuzzServerRequest", "chat.json", json.dumps({
        "model": "fuzz", "messages": [{"role": "system", "content": " be brief "},
                                      {"role": "user", "content": [{"type": "text", "text": "hello"}]},
                                      {"role": "assistant", "content": "a"}, {"role": "user", "content": "<start_of_turn>b"}],
        "logprobs": True, "top_logprobs": 3, "max_completion_tokens": 4, "stop": "x"}))

    # JSON Schemas
    write(out, "FuzzJSONSchema", "object.json", json.dumps({
        "type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 8},
                                         "age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b", 1, None]}, "maxItems": 3},
                                         "kind": {"const": "x"}, "ref": {"$ref": "#/$defs/node"},
                                         "either": {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "null"}]},
                                         "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"}},
        "required": ["name", "age"], "additionalProperties": False,
        "$defs": {"node": {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}}}}}))
    write(out, "FuzzJSONSchema", "map.json", json.dumps({"type": ["object", "null"], "additionalProperties": {"type": "number"}, "title": "t"}))
    write(out, "FuzzJSONSchema", "true.json", "true")

    # Regexes
    for i, pattern in enumerate([r"^[a-z]+(?:-[a-z]+)*@[a-z]+\.(com|org)$", r"\d{3}-\d{4}|\(\d+\)", r"(?P<x>[^\W\d]+)\s?[\u00e9\x41-\x5A]{1,3}.*?\Z",
                                 r"a{2,}b?c*[^abc\n]|[\]\\-]"]):
        write(out, "FuzzRegex", f"pattern{i}.txt", pattern)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
