#!/usr/bin/env bash
# Installs the system and Python packages the build and the tests need (Debian + PyPI).
# Idempotent: does nothing when everything is already there.
#   --reference-tools  also PyTorch + transformers (the autocast comparisons); CI passes it
set -euo pipefail
need_apt=()
for p in libopenblas-dev libdnnl-dev zlib1g-dev openmpi-bin libopenmpi-dev pkg-config python3 python3-pip; do
    dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p")
done
# python3/pip may come from elsewhere (pyenv); only ask apt for them if the commands are missing.
if command -v python3 >/dev/null 2>&1; then
    need_apt=("${need_apt[@]/python3}"); need_apt=("${need_apt[@]/python3-pip}")
fi
need_apt=($(printf '%s\n' "${need_apt[@]}" | grep -v '^$' || true))
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
# tiktoken is the independent reference the tokenizer tests compare against; numpy and
# safetensors check that the files we write are readable by the Python ecosystem; jsonschema
# validates the structured-output tests' generations; the official `openai` client is the real
# client of the gemma3 serve tests.
if ! python3 -c "import tiktoken, numpy, safetensors, jsonschema, openai" >/dev/null 2>&1; then
    python3 -m pip install -q --disable-pip-version-check tiktoken numpy safetensors jsonschema openai 2>/dev/null \
        || python3 -m pip install -q --disable-pip-version-check --break-system-packages tiktoken numpy safetensors jsonschema openai
fi
# With --reference-tools (CI): torch + transformers, for the PyTorch autocast golden values of
# MixedPrecisionTests (without them those comparisons print NOTICE). Where the machine keeps a CPU
# build of torch among its local wheels (pip's find-links), that one; else PyPI's (large).
if [ "${1:-}" = "--reference-tools" ] && ! python3 -c "import torch, transformers" >/dev/null 2>&1; then
    local_torch=$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | sort -V | tail -1 || true)
    torch_spec=${local_torch:-torch}
    python3 -m pip install -q --disable-pip-version-check "$torch_spec" transformers 2>/dev/null \
        || python3 -m pip install -q --disable-pip-version-check --break-system-packages "$torch_spec" transformers \
        || echo "NOTICE: install-deps: torch/transformers could not be installed: the autocast comparisons will print NOTICE" >&2
fi
# And PEFT, for the LoRA adapter comparisons of LoRAAdapterTests (it keeps the torch installed above).
if [ "${1:-}" = "--reference-tools" ] && python3 -c "import torch" >/dev/null 2>&1 && ! python3 -c "import peft" >/dev/null 2>&1; then
    python3 -m pip install -q --disable-pip-version-check peft 2>/dev/null \
        || python3 -m pip install -q --disable-pip-version-check --break-system-packages peft \
        || echo "NOTICE: install-deps: peft could not be installed: the PEFT adapter comparisons will print NOTICE" >&2
fi
