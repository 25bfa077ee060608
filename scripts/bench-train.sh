#!/usr/bin/env bash
# Benchmark: the engine's training step against PyTorch CPU at the same thread count, one run.
# Workloads (see examples/bench_train.rs and scripts/bench_train.py):
#   vit     - ViT-Tiny-shaped encoder, batch 64: forward + backward + clipping + AdamW step;
#   llama   - SmolLM2-135M (F32 conversion of the fixture GGUF), 1 x 256 tokens, the same step;
#   eval    - SmolLM2 no-grad forward (lgreg eval against a transformers no-grad forward);
#   distill - SmolLM2 teacher without gradients + a 12-virtual-layer TLEG student step
#             (PyTorch: a plain 12-layer student of the same width).
# Each lgreg workload also runs with --reference (every op in its reference form: the engine
# before the fused kernels). PyTorch (PyPI `torch`, several GB) is installed into
# target/bench-venv here and nowhere else; tests never use it. Prints a Markdown table.
# Usage: scripts/bench-train.sh [VIT_STEPS] [LLAMA_STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
vit_steps="${1:-5}"
llama_steps="${2:-3}"
venv="${LGREG_TORCH_VENV:-target/bench-venv}"  # or an existing venv with torch + transformers
smol=target/bench-train/smollm2-f32
threads="${RAYON_NUM_THREADS:-$(nproc)}"
export RAYON_NUM_THREADS="$threads" LGREG_THREADS="$threads"
unset MIMALLOC_PURGE_DELAY  # the binaries set their own (src/allocator.rs)

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

field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
ours() { target/release/examples/bench_train "$@"; }
peer() { "$venv/bin/python" scripts/bench_train.py "$@" 2>/dev/null | tail -1; }

# The binaries run with mimalloc's purge delay at 10 s (src/allocator.rs); "1 s purge" is the
# same fused run at mimalloc's default delay (MIMALLOC_PURGE_DELAY=1000), the engine before it.
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo "threads: $threads"
echo "| workload | lgreg reference (s/step) | lgreg fused, 1 s purge (s/step) | lgreg fused (s/step) | PyTorch (s/step) | PyTorch/lgreg | PyTorch/lgreg, 1 s purge | lgreg peak RSS (MiB) | PyTorch peak RSS (MiB) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for w in vit llama eval distill; do
  if [ "$w" = vit ]; then args=(vit 64 "$vit_steps"); else args=("$w" "$smol" 1 "$llama_steps"); fi
  before=$(ours --reference "${args[@]}")
  purged=$(MIMALLOC_PURGE_DELAY=1000 ours "${args[@]}")
  after=$(ours "${args[@]}")
  torch=$(peer "${args[@]}")
  b=$(echo "$before" | field secs_per_step); p=$(echo "$purged" | field secs_per_step)
  a=$(echo "$after" | field secs_per_step); t=$(echo "$torch" | field secs_per_step)
  ra=$(echo "$after" | field peak_rss_mib); rt=$(echo "$torch" | field peak_rss_mib)
  echo "| $w | $b | $p | $a | $t | $(ratio "$t" "$a") | $(ratio "$t" "$p") | $ra | $rt |"
done
