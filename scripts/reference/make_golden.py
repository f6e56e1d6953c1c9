#!/usr/bin/env python3
"""Writes a golden directory for `gemma3 verify-reference` from Hugging Face transformers.

Usage:
  python3 make_golden.py OUT [--from MODEL_DIR] [--hidden 48 --layers 4 --heads 4 --kv-heads 2 --head-dim 12
                              --ffn 96 --vocab 1000 --window 5 --query-scalar 10 --untied --batch 2 --seq 20]

Without --from, builds a random Gemma3ForCausalLM (norm weights N(0, 0.1), other weights N(0, 0.02)) for the
given shape. With --from, loads MODEL_DIR (config.json + model.safetensors, e.g. written by this project's
trainer) with `Gemma3ForCausalLM.from_pretrained`, which also checks that transformers accepts the checkpoint.

OUT gets config.json and golden.safetensors in the layout of shared/golden/README.md: every parameter,
input_ids, logits, loss (labels = input_ids), grad.<param>, greedy_ids (5-token prompt + 8 greedy tokens,
KV cache). Needs torch and transformers; no network.
"""
import argparse, json, os

import torch
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--from", dest="source")
for name, default in [("hidden", 48), ("layers", 4), ("heads", 4), ("kv-heads", 2), ("head-dim", 12), ("ffn", 96),
                      ("vocab", 1000), ("window", 5), ("query-scalar", 10), ("batch", 2), ("seq", 20), ("seed", 7)]:
    p.add_argument("--" + name, type=int, default=default)
p.add_argument("--untied", action="store_true")
a = p.parse_args()
torch.manual_seed(a.seed)

if a.source:
    model = Gemma3ForCausalLM.from_pretrained(a.source, torch_dtype=torch.float32, attn_implementation="eager")
else:
    layer_types = ["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(a.layers)]
    cfg = Gemma3TextConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                           num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                           head_dim=a.head_dim, query_pre_attn_scalar=a.query_scalar, sliding_window=a.window,
                           layer_types=layer_types, max_position_embeddings=256, tie_word_embeddings=not a.untied,
                           pad_token_id=None, bos_token_id=None, eos_token_id=None, use_cache=False)
    cfg._attn_implementation = "eager"
    model = Gemma3ForCausalLM(cfg).float()
    with torch.no_grad():
        for name, t in model.named_parameters():
            t.normal_(0, 0.1 if "norm" in name else 0.02)
model.float().eval()
cfg = model.config
ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq))
out = model(input_ids=ids, labels=ids, use_cache=False)
out.loss.backward()
tensors = {"input_ids": ids.to(torch.int64), "logits": out.logits.detach().float().contiguous(),
           "loss": out.loss.detach().float().reshape(())}
for name, t in model.named_parameters():
    tensors[name] = t.detach().float().contiguous()
    tensors["grad." + name] = t.grad.detach().float().contiguous()
with torch.no_grad():
    greedy = model.generate(ids[:1, :5], max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
tensors["greedy_ids"] = greedy.to(torch.int64).contiguous()
os.makedirs(a.out, exist_ok=True)
save_file(tensors, os.path.join(a.out, "golden.safetensors"),
          metadata={"golden": json.dumps({"generator": "make_golden.py", "source": a.source or "random"})})
with open(os.path.join(a.out, "config.json"), "w") as f:
    f.write(cfg.to_json_string())
print(json.dumps({"out": a.out, "loss": float(out.loss), "params": sum(t.numel() for t in model.parameters())}))
