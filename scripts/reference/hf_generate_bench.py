#!/usr/bin/env python3
"""Reference speed for `gemma3 bench generate`: HF transformers generate() with its KV cache.

Usage: python3 hf_generate_bench.py [--prompt-tokens 128] [--new-tokens 128] [--runs 3] [--no-cache] [--dtype f32|bf16]
Random weights with the tinystories-270m shape. Prints one JSON object.
"""
import argparse, json, statistics, time

import torch
from transformers import Gemma3TextConfig, Gemma3ForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--prompt-tokens", type=int, default=128)
p.add_argument("--new-tokens", type=int, default=128)
p.add_argument("--runs", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--dtype", default="f32")
p.add_argument("--no-cache", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)]
cfg = Gemma3TextConfig(vocab_size=50257, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                       sliding_window=512, layer_types=layer_types, max_position_embeddings=32768,
                       tie_word_embeddings=True, pad_token_id=None, eos_token_id=None, bos_token_id=None)
model = Gemma3ForCausalLM(cfg).eval()
if a.dtype == "bf16":
    model = model.to(torch.bfloat16)
ids = torch.randint(0, 50257, (1, a.prompt_tokens))
prefill, decode = [], []
with torch.inference_mode():
    for r in range(a.runs + 1):
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=True)
        t1 = time.perf_counter()
        model.generate(ids, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False,
                       use_cache=not a.no_cache)
        t2 = time.perf_counter()
        if r == 0:
            continue  # warm-up
        prefill.append(a.prompt_tokens / (t1 - t0))
        # generate() includes its own prefill; subtract the measured prefill time.
        decode.append(a.new_tokens / max(1e-9, (t2 - t1) - (t1 - t0)))
print(json.dumps({"reference": "transformers-generate" + ("-nocache" if a.no_cache else ""),
                  "prefill_tokens_per_second": statistics.median(prefill),
                  "decode_tokens_per_second": statistics.median(decode), "runs": a.runs}))
