#!/usr/bin/env python3
"""Reference speed for `gemma3 bench train`: HF Gemma3ForCausalLM forward+backward+AdamW in PyTorch.

Usage: python3 torch_train_bench.py --hidden 640 --layers 18 --heads 4 --kv-heads 1 --head-dim 256 \
         --ffn 2048 --vocab 50257 --window 512 --batch 4 --seq 128 --steps 5 [--compile] [--autocast-bf16] [--threads 2]
--autocast-bf16 runs forward and loss under torch.autocast("cpu", dtype=torch.bfloat16) (float32 master weights).
--lora R (for `gemma3 bench finetune`): Hugging Face PEFT's LoRA of rank R (alpha 2R) on q,k,v,o,gate,up,down,
the base frozen, AdamW over the adapter only.
Prints one JSON object (tokens/s median over steps after warm-up, peak RSS).
"""
import argparse, json, resource, statistics, time

import torch
from transformers import Gemma3TextConfig, Gemma3ForCausalLM

p = argparse.ArgumentParser()
for name, default in [("hidden", 640), ("layers", 18), ("heads", 4), ("kv-heads", 1), ("head-dim", 256),
                      ("ffn", 2048), ("vocab", 50257), ("window", 512), ("batch", 4), ("seq", 128),
                      ("steps", 5), ("warmup", 2), ("threads", 2)]:
    p.add_argument("--" + name, type=int, default=default)
p.add_argument("--compile", action="store_true")
p.add_argument("--autocast-bf16", action="store_true")
p.add_argument("--lora", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(a.layers)]
cfg = Gemma3TextConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                       num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                       head_dim=a.head_dim, query_pre_attn_scalar=a.head_dim, sliding_window=a.window,
                       layer_types=layer_types, max_position_embeddings=32768, tie_word_embeddings=True,
                       pad_token_id=None, use_cache=False)
cfg._attn_implementation = "eager"
model = Gemma3ForCausalLM(cfg).float().train()
if a.lora:
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=a.lora, lora_alpha=2 * a.lora, lora_dropout=0.0, bias="none",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.train()
opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
step_fn = model
if a.compile:
    step_fn = torch.compile(model)
times = []
for i in range(a.warmup + a.steps):
    x = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast_bf16):
        out = step_fn(input_ids=x[:, :-1], labels=x[:, :-1])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 0.5)
    opt.step(); opt.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0
    if i >= a.warmup:
        times.append(dt)
med = statistics.median(times)
print(json.dumps({"reference": "pytorch" + ("-peft-lora" if a.lora else "") + ("-compile" if a.compile else "-eager") + ("-autocast-bf16" if a.autocast_bf16 else ""), "torch": torch.__version__,
                  "params": sum(p.numel() for p in model.parameters()),
                  "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "tokens_per_second": a.batch * a.seq / med, "step_seconds_median": med,
                  "step_seconds": times, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
