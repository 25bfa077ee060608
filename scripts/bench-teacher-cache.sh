#!/usr/bin/env bash
# Benchmark: the teacher-logit cache of text distillation (DISTILL.TOP_K). SmolLM2-135M (the
# GGUF fixture as F32) teaches, on the shipped llama ancestor configs' Shakespeare plays:
#   1. TLEG's aux net with the cache, which starts empty (the teacher runs and its top k are
#      written);
#   2. SWS's aux net with the cache now full (the teacher never runs);
#   3. SWS's aux net without a cache (the teacher runs on every step, all its logits).
# Prints seconds per run and the held-out teacher agreement and KL of each aux net, so the
# cost of the top-k target is visible beside its speed.
# Usage: scripts/bench-teacher-cache.sh [STEPS] [TOP_K]   (defaults 20 and 64; 64-token blocks,
# batch 4). Runs take a few minutes each on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-20}" top_k="${2:-64}"

scripts/fetch-fixtures.sh >/dev/null
cargo build --release --locked -q
lgreg="$PWD/target/release/lgreg"
work=target/bench-teacher-cache
rm -rf "$work" && mkdir -p "$work"
export LGREG_HOME="$work/home"
teacher="$work/smollm2-135m"
"$lgreg" convert target/fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$teacher" --dtype f32 --no-progress >/dev/null

distil() { # NAME METHOD TOP_K
  local start=$SECONDS
  "$lgreg" train --config "configs/ancestor_$2_llama.yaml" --set "GENE.ANCESTOR_MODEL_PATH=$teacher" \
    "TRAIN.STEPS=$steps" DATASET.SEQ_LEN=64 "DISTILL.TOP_K=$3" "DISTILL.CACHE_DIR=$work/cache" \
    "OUTPUT_DIR=$work/$1" "GENE.NAME=bench-$1" --no-progress --json > "$work/$1.json"
  python3 - "$work/$1.json" "$1" $((SECONDS - start)) <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read().splitlines()[-1])["gene"]["diagnostics"]["distill"]
c = d.get("teacher_cache") or {}
h = d["held_out"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {c.get('hits', '—')} | {c.get('misses', '—')} | {h['agreement']:.4f} | {h['kl']:.4f} |")
PY
}
echo "| run | seconds | blocks read | blocks computed | held-out agreement | held-out KL |"
echo "| --- | --- | --- | --- | --- | --- |"
distil tleg-cold tleg "$top_k"
distil sws-warm sws "$top_k"
distil sws-uncached sws 0
