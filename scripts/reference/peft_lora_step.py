#!/usr/bin/env python3
"""One LoRA training step by PyTorch + Hugging Face PEFT on a Gemma 3 directory: the golden values of
LoRATrainingTests (loss, the A/B gradients, the A/B after one AdamW step).

Usage:
  python3 peft_lora_step.py BASE_DIR OUT_DIR --batch 2 --ids 2,17,... --targets 17,-100,... [--rank 4] [--alpha 8]
          [--rslora] [--lr 1e-2] [--weight-decay 0.1] [--beta1 0.9] [--beta2 0.95] [--eps 1e-8] [--seed 5]

ids/targets are [batch × T] row-major (targets −100 where nothing is learned). A and B start random
(init_lora_weights=False, so every gradient is non-zero); OUT_DIR receives the adapter before the step
(peft's save_pretrained) and golden.safetensors: "loss" [1], "grad.<name>" and "after.<name>" for every
factor (<name> as in adapter_model.safetensors). The loss is the mean cross-entropy over the counted
targets, as F.cross_entropy(ignore_index=-100). Needs torch, transformers and peft; no network.
"""
import argparse, json, os

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM

p = argparse.ArgumentParser()
p.add_argument("base")
p.add_argument("out")
p.add_argument("--batch", type=int, required=True)
p.add_argument("--ids", required=True)
p.add_argument("--targets", required=True)
p.add_argument("--rank", type=int, default=4)
p.add_argument("--alpha", type=float, default=8)
p.add_argument("--rslora", action="store_true")
p.add_argument("--lr", type=float, default=1e-2)
p.add_argument("--weight-decay", type=float, default=0.1)
p.add_argument("--beta1", type=float, default=0.9)
p.add_argument("--beta2", type=float, default=0.95)
p.add_argument("--eps", type=float, default=1e-8)
p.add_argument("--seed", type=int, default=5)
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_num_threads(2)

ids = torch.tensor([int(x) for x in a.ids.split(",")]).view(a.batch, -1)
targets = torch.tensor([int(x) for x in a.targets.split(",")]).view(a.batch, -1)
model = Gemma3ForCausalLM.from_pretrained(a.base, dtype=torch.float32, attn_implementation="eager")
config = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, init_lora_weights=False, use_rslora=a.rslora, bias="none",
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
peft_model = get_peft_model(model, config)
peft_model.train()
os.makedirs(a.out, exist_ok=True)
peft_model.save_pretrained(os.path.join(a.out, "adapter"))

factors = [(n.replace(".default", ""), q) for n, q in peft_model.named_parameters() if q.requires_grad]
logits = peft_model(input_ids=ids).logits
loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)
loss.backward()
out = {"loss": loss.detach().reshape(1)}
for n, q in factors:
    out["grad." + n] = q.grad.detach().clone().contiguous()
opt = torch.optim.AdamW([q for _, q in factors], lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps, weight_decay=a.weight_decay)
opt.step()
for n, q in factors:
    out["after." + n] = q.detach().clone().contiguous()
save_file(out, os.path.join(a.out, "golden.safetensors"))
print(json.dumps({"loss": float(loss), "factors": len(factors)}))
