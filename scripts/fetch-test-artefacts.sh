#!/usr/bin/env bash
# Fetches what the comparison tests check against into the cache they look in
# (${GEMMA3_CI_CACHE:-~/.cache/gemma3}), so that they compare instead of printing NOTICE:
#   1. llama.cpp (the source vendored in the pinned llama-cpp-python sdist on PyPI; gguf-py comes with it),
#      a CPU build of the tools the tests call (llama-tokenize, llama-quantize) and scripts/llama-dump-logits;
#   2. the real Gemma 3 270M (Q4_K_M GGUF) through this project's own `gemma3 download gemma3-270m`
#      (Hub, else PyPI's chunk wheels; a present, checksum-verified file is reused);
#   3. its F32 requantization by llama-quantize (the float reference of LlamaCppLogitsTests).
# Idempotent: each step is skipped when its result is there (the llama.cpp build leaves a stamp file).
# A step that fails (a registry that cannot be reached) leaves the tests to print their NOTICE rather
# than failing the run.
set -uo pipefail
cd "$(dirname "$0")/.."
cache="${GEMMA3_CI_CACHE:-$HOME/.cache/gemma3}"
llama_cpp_python_version=0.3.36
llama="$cache/llama.cpp"
model="$cache/gemma-3-270m-q4_k_m.gguf"
model_f32="$cache/gemma-3-270m-f32.gguf"
stamp="$llama/build/.built-from-llama-cpp-python-$llama_cpp_python_version"
mkdir -p "$cache"
notice() { echo "NOTICE: fetch-test-artefacts: $*" >&2; }

build_llama_cpp() {
    set -e
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null || ! command -v g++ >/dev/null; then
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cmake ninja-build g++
    fi
    if [ ! -f "$llama/CMakeLists.txt" ]; then
        local tmp; tmp="$(mktemp -d)"
        python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$llama_cpp_python_version" -d "$tmp"
        tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
        rm -rf "$llama"
        mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$llama"
        rm -rf "$tmp"
    fi
    cmake -S "$llama" -B "$llama/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
    cmake --build "$llama/build" --target llama-tokenize llama-quantize -j"$(nproc)" >/dev/null
    touch "$stamp"
}

# The logits dumper of LlamaCppLogitsTests and FineTuneTests, against the libllama built above;
# rebuilt whenever its source changes (a cached build keeps the old one otherwise).
build_dumper() {
    set -e
    g++ -O2 -std=c++17 -I"$llama/include" -I"$llama/ggml/include" scripts/llama-dump-logits/llama-dump-logits.cpp \
        -L"$llama/build/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$llama/build/bin" -o "$llama/build/bin/llama-dump-logits"
    rm -f "$llama"/build/bin/.dumper-*
    touch "$dumper_stamp"
}

if [ ! -f "$stamp" ]; then
    # (A subshell outside any `||` so that `set -e` inside it stops at the first failing step.)
    (build_llama_cpp); [ $? -eq 0 ] || notice "building llama.cpp failed: the llama.cpp and gguf-py comparisons will print NOTICE"
fi
dumper_stamp="$llama/build/bin/.dumper-$(sha256sum scripts/llama-dump-logits/llama-dump-logits.cpp | cut -c1-16)"
if [ -f "$stamp" ] && [ ! -f "$dumper_stamp" ]; then
    (build_dumper); [ $? -eq 0 ] || notice "building llama-dump-logits failed: the llama.cpp logits comparisons will print NOTICE"
fi

swift build -c release --product gemma3 >/dev/null || { echo "fetch-test-artefacts: build failed" >&2; exit 1; }
if ! GEMMA3_CACHE="$cache" .build/release/gemma3 download gemma3-270m --quiet; then
    notice "gemma3 download gemma3-270m failed: the real-model tests will print NOTICE"
fi

# Written under a temporary name and renamed when complete, so a cut-off run is redone.
if [ ! -f "$model_f32" ] && [ -f "$model" ] && [ -x "$llama/build/bin/llama-quantize" ]; then
    if "$llama/build/bin/llama-quantize" --allow-requantize "$model" "$model_f32.partial" F32 >/dev/null 2>&1; then
        mv "$model_f32.partial" "$model_f32"
    else
        rm -f "$model_f32.partial"; notice "llama-quantize to F32 failed: the llama.cpp logits comparison will print NOTICE"
    fi
fi
exit 0
