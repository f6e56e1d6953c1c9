#!/usr/bin/env python3
"""Golden loss and gradients of Gemma3ForCausalLM under bfloat16 mixed precision, from PyTorch.

Usage:
  python3 make_autocast_golden.py OUT.safetensors --from-golden DIR        # shared/golden/tiny's weights and ids
  python3 make_autocast_golden.py OUT.safetensors --hidden 640 --ffn 2048 --heads 4 --kv-heads 1 --head-dim 256 \
          --query-scalar 256 --layers 1 --vocab 512 --window 32 --batch 2 --seq 64  # one 270M-shaped layer

Writes every parameter (F32), input_ids (I64), and for three precisions the loss (labels = input_ids) and
every parameter gradient, as `loss.<mode>` and `grad.<mode>.<parameter>`:
  f32       float32 throughout;
  autocast  `torch.autocast("cpu", dtype=torch.bfloat16)`, PyTorch's own CPU mixed precision (products in
            bfloat16 with bfloat16 outputs, softmax in float32, other ops in their input's dtype);
  bf16      the definition this project implements: every product of the forward and the backward
            (F.linear, i.e. q/k/v/o, gate/up/down and the LM head, and the attention matmuls) multiplies
            bfloat16-rounded inputs with float32 accumulation and a float32 result; everything else float32.
Needs torch and transformers; no network. Prints one JSON line.
"""
import argparse, json

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--from-golden", dest="golden")
for name, default in [("hidden", 640), ("layers", 1), ("heads", 4), ("kv-heads", 1), ("head-dim", 256), ("ffn", 2048),
                      ("vocab", 512), ("window", 32), ("query-scalar", 256), ("batch", 2), ("seq", 64), ("seed", 11)]:
    p.add_argument("--" + name, type=int, default=default)
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_num_threads(2)

if a.golden:
    with open(a.golden + "/config.json") as f:
        cfg = Gemma3TextConfig(**json.load(f))
    golden = load_file(a.golden + "/golden.safetensors")
    ids = golden["input_ids"]
else:
    layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(a.layers)]
    cfg = Gemma3TextConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                           num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                           head_dim=a.head_dim, query_pre_attn_scalar=a.query_scalar, sliding_window=a.window,
                           layer_types=layer_types, max_position_embeddings=max(256, a.seq), tie_word_embeddings=True,
                           pad_token_id=None, bos_token_id=None, eos_token_id=None, use_cache=False)
    golden = None
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
cfg._attn_implementation = "eager"
cfg.use_cache = False
model = Gemma3ForCausalLM(cfg).float()
with torch.no_grad():
    for name, t in model.named_parameters():
        if golden is not None:
            t.copy_(golden[name])
        else:
            # As the golden README: norms N(0, 0.1) so a missing "+1" shows; matrices N(0, 0.02).
            t.normal_(0, 0.1 if "norm" in name else 0.02)
model.train(False)


def rounded(x):
    return x.to(torch.bfloat16).to(torch.float32)


class BF16Product(torch.autograd.Function):
    """a @ b on bfloat16-rounded inputs, float32 result; backward: the same with the rounded gradient."""

    @staticmethod
    def forward(ctx, a, b):
        ra, rb = rounded(a), rounded(b)
        ctx.save_for_backward(ra, rb)
        return _matmul(ra, rb)

    @staticmethod
    def backward(ctx, g):
        ra, rb = ctx.saved_tensors
        rg = rounded(g)
        ga = _matmul(rg, rb.transpose(-1, -2))
        gb = _matmul(ra.transpose(-1, -2), rg)
        # Broadcast batch dimensions (none here besides equal ones) reduce to the operand's shape.
        while gb.dim() > rb.dim():
            gb = gb.sum(0)
        return ga, gb


_matmul, _linear = torch.matmul, F.linear


def bf16_matmul(x, y):
    return BF16Product.apply(x, y)


def bf16_linear(x, w, b=None):
    assert b is None
    return BF16Product.apply(x, w.t())


def run(mode):
    model.zero_grad(set_to_none=True)
    if mode == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=ids, use_cache=False)
    elif mode == "bf16":
        torch.matmul, F.linear = bf16_matmul, bf16_linear
        try:
            out = model(input_ids=ids, labels=ids, use_cache=False)
        finally:
            torch.matmul, F.linear = _matmul, _linear
    else:
        out = model(input_ids=ids, labels=ids, use_cache=False)
    loss = out.loss.float()
    loss.backward()
    result = {"loss." + mode: loss.detach().reshape(())}
    for name, t in model.named_parameters():
        result["grad." + mode + "." + name] = t.grad.detach().float().contiguous()
    return result, loss.item()


tensors = {"input_ids": ids.to(torch.int64).contiguous()}
for name, t in model.named_parameters():
    tensors[name] = t.detach().float().contiguous()
losses = {}
for mode in ["f32", "autocast", "bf16"]:
    r, losses[mode] = run(mode)
    tensors.update(r)
save_file(tensors, a.out, metadata={"config": cfg.to_json_string(), "generator": "make_autocast_golden.py",
                                    "torch": torch.__version__})
print(json.dumps({"out": a.out, "losses": losses, "params": sum(t.numel() for t in model.parameters())}))
