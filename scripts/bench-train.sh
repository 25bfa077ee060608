#!/usr/bin/env bash
# Benchmark: training throughput (samples/s, forward + backward) of lgreg's engine against
# PyTorch CPU on the same model and batch, for two workloads:
#   vit   - ViT-Tiny-sized (width 192, 12 layers, patch 4, 28x28 images), batch 64;
#   llama - SmolLM2-135M (F32 conversion of the fixture GGUF) at sequence length 256, batch 1.
# PyTorch (PyPI `torch`, about 6 GB with its CUDA libraries) is installed into target/bench-venv here and nowhere else;
# tests never use it. Prints a Markdown table for BENCHMARKS.md.
# Usage: scripts/bench-train.sh [VIT_STEPS] [LLAMA_STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
vit_steps="${1:-5}"
llama_steps="${2:-3}"
venv="${LGREG_TORCH_VENV:-target/bench-venv}"  # or an existing venv with torch + transformers
smol=target/bench-train/smollm2-f32

scripts/fetch-fixtures.sh >/dev/null
cargo build --release --locked -q --example bench_train
cargo build --release --locked -q
if [ ! -d "$smol" ]; then
  target/release/lgreg convert target/fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$smol" --dtype f32
fi
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
if ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
  "$venv/bin/pip" install -q torch
  "$venv/bin/pip" install -q transformers safetensors
fi

rate() { sed -n 's/.*"samples_per_sec": *\([0-9.]*\).*/\1/p'; }
ours_vit=$(target/release/examples/bench_train vit 64 "$vit_steps" | rate)
torch_vit=$("$venv/bin/python" scripts/bench_train.py vit 64 "$vit_steps" | rate)
ours_llama=$(target/release/examples/bench_train llama "$smol" 1 "$llama_steps" | rate)
torch_llama=$("$venv/bin/python" scripts/bench_train.py llama "$smol" 1 "$llama_steps" | rate)

echo "| workload | lgreg (samples/s) | PyTorch CPU (samples/s) | ratio lgreg/PyTorch |"
echo "| --- | --- | --- | --- |"
for w in vit llama; do
  o=ours_$w; t=torch_$w
  echo "| $w | ${!o} | ${!t} | $(python3 -c "print(f'{${!o}/${!t}:.2f}')") |"
done
