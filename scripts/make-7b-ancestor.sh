#!/usr/bin/env bash
# A seeded stand-in for meta-llama/Llama-2-7b-hf: the published config.json and shard index
# (tests/data), the same 323 tensor names, shapes, dtypes (F16; inv_freq F32) and the same split
# into model-00001-of-00002.safetensors and model-00002-of-00002.safetensors, values drawn from
# a seed. All 32 layers are 13.5 GB; LAYERS keeps the first layers only (4 layers: 2.1 GB).
# Checks the free disk first and skips, with a message, when it is short.
# Usage: scripts/make-7b-ancestor.sh [LAYERS] [OUT]
#   (default: all 32 layers into target/llama-2-7b-seeded, or target/llama-2-7b-seeded-LLAYERS)
set -euo pipefail
cd "$(dirname "$0")/.."
layers="${1:-32}"
out="${2:-$PWD/target/llama-2-7b-seeded$([ "$layers" = 32 ] || echo "-L$layers")}"
data=tests/data/meta-llama--Llama-2-7b-hf
# Bytes of the layers kept: 404,766,976 per layer (F16, with inv_freq), 524,296,192 of embedding,
# head and final norm; one extra GiB of headroom.
need=$(( layers * 404766976 + 524296192 + (1 << 30) ))
mkdir -p "$(dirname "$out")"
free=$(( $(df --output=avail -B1 "$(dirname "$out")" | tail -1) ))
if [ -f "$out/config.json" ] && [ -f "$out/model-00002-of-00002.safetensors" ]; then
  echo "$out"
  exit 0
fi
if [ "$free" -lt "$need" ]; then
  echo "skipped: a $layers-layer Llama-2-7B stand-in needs $(( need >> 20 )) MiB free under $(dirname "$out"), only $(( free >> 20 )) MiB are; free some space or pass another OUT" >&2
  exit 3
fi
cargo build --release --locked -q --example seeded_ancestor
rm -rf "$out.partial"
"${CARGO_TARGET_DIR:-$PWD/target}/release/examples/seeded_ancestor" "$out.partial" \
  "$data.config.json" "$data.model.safetensors.index.json" "$layers" 0 >/dev/null
rm -rf "$out"
mv "$out.partial" "$out"
echo "$out"
