#!/usr/bin/env python3
"""A random LoRA adapter made by Hugging Face PEFT on a Gemma 3 directory, and the adapted model's logits.

Usage:
  python3 make_peft_lora.py BASE_DIR OUT_DIR --ids 2,17,5,9 [--rank 4] [--alpha 8] [--rslora] [--seed 3]
          [--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]
  python3 make_peft_lora.py BASE_DIR OUT_DIR --ids 2,17,5,9 --load ADAPTER_DIR
          (PeftModel.from_pretrained on an existing adapter, e.g. one `gemma3 finetune` wrote: only the logits)

BASE_DIR holds config.json + model.safetensors (e.g. `gemma3 convert`'s output). Writes OUT_DIR/adapter_config.json
and OUT_DIR/adapter_model.safetensors (peft's save_pretrained; A and B both random, init_lora_weights=False, so the
adapter changes the model), and OUT_DIR/logits.safetensors: "logits" [len(ids), vocab] float32 of PeftModel on the ids
(one sequence, no BOS added), and "base_logits" of the model without the adapter. Needs torch, transformers and peft;
no network. Prints one JSON line.
"""
import argparse, json, os

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM

p = argparse.ArgumentParser()
p.add_argument("base")
p.add_argument("out")
p.add_argument("--ids", required=True)
p.add_argument("--rank", type=int, default=4)
p.add_argument("--alpha", type=float, default=8)
p.add_argument("--rslora", action="store_true")
p.add_argument("--seed", type=int, default=3)
p.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
p.add_argument("--load")
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_num_threads(2)

ids = torch.tensor([[int(x) for x in a.ids.split(",")]])
model = Gemma3ForCausalLM.from_pretrained(a.base, dtype=torch.float32, attn_implementation="eager")
model.eval()
with torch.no_grad():
    base_logits = model(input_ids=ids).logits[0].float().contiguous()
if a.load:
    from peft import PeftModel
    peft_model = PeftModel.from_pretrained(model, a.load)
else:
    config = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=a.targets.split(","),
                        init_lora_weights=False, use_rslora=a.rslora, bias="none")
    peft_model = get_peft_model(model, config)
peft_model.eval()
with torch.no_grad():
    logits = peft_model(input_ids=ids).logits[0].float().contiguous()
os.makedirs(a.out, exist_ok=True)
if not a.load:
    peft_model.save_pretrained(a.out)
save_file({"logits": logits, "base_logits": base_logits}, os.path.join(a.out, "logits.safetensors"))
print(json.dumps({"adapter": a.out, "positions": ids.shape[1], "vocab": logits.shape[1],
                  "max_logit_change": float((logits - base_logits).abs().max())}))
