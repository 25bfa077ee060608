#!/usr/bin/env bash
# Benchmarks of issue 6 on SmolLM2-135M (F32 safetensors, 538 MB), release build:
#  1. spawn a 16-layer descendant from an sws gene (pure copies, no smoke metric), against a
#     numpy + safetensors (PyPI) slicer that writes layers 0..15 of the same model, and against
#     `cp` of a file of the output's size; mergekit's figure is the one FIXTURES.md records.
#  2. the tleg closed-form fit (extract), against one sequential read of the model.
# Usage: scripts/bench-spawn.sh [RUNS]   (default 3; the best run is reported)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"

scripts/fetch-fixtures.sh >/dev/null
cargo build --release --locked -q
lgreg="$PWD/target/release/lgreg"
work="$PWD/target/bench-spawn"
venv="$PWD/target/bench-venv"
mkdir -p "$work"
export LGREG_HOME="$work/home"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q numpy==2.4.6 safetensors==0.8.0

anc="$work/smollm2-f32"
[ -f "$anc/model.safetensors" ] || "$lgreg" convert target/fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$anc" --dtype f32 --force --no-progress >/dev/null

cat > "$work/slice.py" <<'PY'
# The peer: keep the first 16 of 30 layers (and every global tensor) with numpy + safetensors.
import re, sys
from safetensors.numpy import load_file, save_file
src, dst, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
tensors = load_file(src)
out = {}
for name, t in tensors.items():
    m = re.match(r"model\.layers\.(\d+)\.", name)
    if m is None or int(m.group(1)) < keep:
        out[name] = t
save_file(out, dst, metadata={"format": "pt"})
PY

measure() { # OUTPUT cmd... -> "seconds maxrss_kb" (best of $runs); OUTPUT removed before each run
  local output="$1"; shift
  local best_s="" best_rss=""
  for _ in $(seq "$runs"); do
    rm -rf "$output"; sync
    /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null 2>&1
    read -r s rss < "$work/time.txt"
    if [ -z "$best_s" ] || awk "BEGIN{exit !($s < $best_s)}"; then best_s=$s; best_rss=$rss; fi
  done
  echo "$best_s $best_rss"
}

rm -rf "$LGREG_HOME"
"$lgreg" extract --algo sws "$anc" --name bench-sws --no-progress >/dev/null
read -r sp_s sp_rss < <(measure "$work/d16" "$lgreg" spawn bench-sws --layers 16 --no-smoke --no-progress -o "$work/d16")
bytes=$(stat -c %s "$work/d16/model.safetensors")
read -r np_s np_rss < <(measure "$work/np16.safetensors" "$venv/bin/python" "$work/slice.py" "$anc/model.safetensors" "$work/np16.safetensors" 16)
cp "$work/d16/model.safetensors" "$work/copy-src"
read -r cp_s cp_rss < <(measure "$work/copy" cp "$work/copy-src" "$work/copy")
mb=$((bytes / 1000000))

echo
echo "### Spawn a 16-layer SmolLM2 descendant (${mb} MB of weights)"
echo
echo "| tool | wall time (best of $runs) | peak RSS |"
echo "| --- | --- | --- |"
row() { awk -v n="$1" -v s="$2" -v r="$3" 'BEGIN{printf "| %s | %.2f s | %.0f MB |\n", n, s, r/1024}'; }
row "lgreg spawn (sws gene, --no-smoke)" "$sp_s" "$sp_rss"
row "numpy + safetensors slicer" "$np_s" "$np_rss"
row "cp of the output (no fsync)" "$cp_s" "$cp_rss"
echo "| mergekit passthrough (FIXTURES.md record) | 7.1-8.6 s | 1.15 GB |"
awk -v a="$sp_s" -v n="$np_s" -v c="$cp_s" 'BEGIN{printf "\nlgreg/numpy %.2fx faster; lgreg is %.2fx the time of cp; %.0fx faster than mergekit at 7.1 s.\n", n/a, a/c, 7.1/a}'

# 2. The tleg fit against one sequential read of the model file.
read -r rd_s rd_rss < <(measure "$work/none" cat "$anc/model.safetensors")
best_fit=""; best_total=""
for i in $(seq "$runs"); do
  rm -rf "$LGREG_HOME"
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$lgreg" extract --algo tleg "$anc" --name bench-tleg --json --no-progress > "$work/tleg.json"
  read -r total rss < "$work/time.txt"
  fit=$(tail -n1 "$work/tleg.json" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["extract_seconds"])')
  if [ -z "$best_fit" ] || awk "BEGIN{exit !($fit < $best_fit)}"; then best_fit=$fit; best_total=$total; best_rss=$rss; fi
done
echo
echo "### TLEG closed-form fit on SmolLM2 (30 layers)"
echo
echo "| step | wall time (best of $runs) |"
echo "| --- | --- |"
awk -v s="$rd_s" 'BEGIN{printf "| one sequential read of model.safetensors (cat, page cache warm) | %.2f s |\n", s}'
awk -v s="$best_fit" 'BEGIN{printf "| lgreg tleg fit (read every layer, accumulate, solve, write units) | %.2f s |\n", s}'
awk -v s="$best_total" -v r="$best_rss" 'BEGIN{printf "| lgreg extract in all (+ hashing the ancestor, publishing) | %.2f s, peak RSS %.0f MB |\n", s, r/1024}'
awk -v f="$best_fit" -v s="$rd_s" 'BEGIN{printf "\nfit / read = %.2f\n", f/s}'
