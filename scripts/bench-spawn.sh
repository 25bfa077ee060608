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
lgreg="${CARGO_TARGET_DIR:-$PWD/target}/release/lgreg"
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
# Spawn checks every gene unit. A unit hashed in full once its file is 2 s old gets a seal
# (registry/FORMAT.md), and later spawns trust the seal while the file is unchanged. Measured
# both ways: seals removed before each run (every unit hashed), and sealed.
seals=$(find "$LGREG_HOME" -maxdepth 3 -type d -name .lgreg)/seals
read -r sh_s sh_rss < <(measure "$work/d16" sh -c 'rm -rf "$1"; shift; exec "$@"' _ "$seals" "$lgreg" spawn bench-sws --layers 16 --no-smoke --no-progress -o "$work/d16")
sleep 2.5
rm -rf "$work/d16"; "$lgreg" spawn bench-sws --layers 16 --no-smoke --no-progress -o "$work/d16" >/dev/null
[ -n "$(ls -A "$seals")" ] || { echo "no seals were written in $seals" >&2; exit 1; }
read -r sp_s sp_rss < <(measure "$work/d16" "$lgreg" spawn bench-sws --layers 16 --no-smoke --no-progress -o "$work/d16")
bytes=$(stat -c %s "$work/d16/model.safetensors")
read -r np_s np_rss < <(measure "$work/np16.safetensors" "$venv/bin/python" "$work/slice.py" "$anc/model.safetensors" "$work/np16.safetensors" 16)
cp "$work/d16/model.safetensors" "$work/copy-src"
read -r cp_s cp_rss < <(measure "$work/copy" cp "$work/copy-src" "$work/copy")
read -r cs_s cs_rss < <(measure "$work/copy" sh -c 'cp "$1" "$2" && sync "$2"' _ "$work/copy-src" "$work/copy")
# The flush alone: the time `sync` takes to write the dirty pages of a fresh copy to the disk.
# A durable write of the output cannot end sooner than this, however it overlaps its copying.
flush_s=""
for _ in $(seq "$runs"); do
  rm -f "$work/copy"; sync; cp "$work/copy-src" "$work/copy"
  /usr/bin/time -f "%e" -o "$work/time.txt" sync "$work/copy"
  s=$(cat "$work/time.txt")
  if [ -z "$flush_s" ] || awk "BEGIN{exit !($s < $flush_s)}"; then flush_s=$s; fi
done
mb=$((bytes / 1000000))

echo
echo "### Spawn a 16-layer SmolLM2 descendant (${mb} MB of weights)"
echo
echo "| tool | wall time (best of $runs) | peak RSS |"
echo "| --- | --- | --- |"
row() { awk -v n="$1" -v s="$2" -v r="$3" 'BEGIN{printf "| %s | %.2f s | %.0f MB |\n", n, s, r/1024}'; }
row "lgreg spawn (sws gene, --no-smoke), units sealed" "$sp_s" "$sp_rss"
row "lgreg spawn, every unit hashed (no seals)" "$sh_s" "$sh_rss"
row "numpy + safetensors slicer" "$np_s" "$np_rss"
row "cp of the output (no fsync)" "$cp_s" "$cp_rss"
row "cp of the output, then sync of the file" "$cs_s" "$cs_rss"
row "sync of a fresh copy alone (the disk's flush of the output)" "$flush_s" 0
echo "| mergekit passthrough (FIXTURES.md record) | 7.1-8.6 s | 1.15 GB |"
awk -v a="$sp_s" -v h="$sh_s" -v n="$np_s" -v c="$cp_s" -v cs="$cs_s" 'BEGIN{printf "\nsealed: %.2fx faster than numpy, %.2fx the time of cp, %.2fx the time of cp + sync, %.0fx faster than mergekit at 7.1 s.\nhashed: %.2fx faster than numpy, %.2fx the time of cp, %.0fx faster than mergekit.\n", n/a, a/c, a/cs, 7.1/a, n/h, h/c, 7.1/h}'
awk -v a="$sp_s" -v c="$cp_s" -v f="$flush_s" 'BEGIN{printf "durable floor: the flush alone is %.2fx the time of cp; sealed spawn is %.2fx the flush.\n", f/c, a/f}'

# 2. The tleg fit against one sequential read of the model file. `extract --json` splits its
#    build time (`extract_seconds`) into `extract_steps`: `fit` is reading every layer tensor,
#    accumulating and solving (what the target compares); `globals`, `side_files` and `units`
#    copy or write the gene's unit files. Two ancestors hold the same file: the plain directory,
#    whose files extract hashes on a second thread while the fit runs, and a Hub-cache-style
#    snapshot (a symlink to a blob named by its sha256, which extract takes as the hash), where
#    the fit runs alone. On a machine whose cores are busy elsewhere the first is slower.
hub="$work/hub"
if [ ! -L "$hub/snapshot/model.safetensors" ]; then
  rm -rf "$hub"; mkdir -p "$hub/blobs" "$hub/snapshot"
  sha=$(sha256sum "$anc/model.safetensors" | cut -d' ' -f1)
  ln -s "$anc/model.safetensors" "$hub/blobs/$sha"
  ln -s "../blobs/$sha" "$hub/snapshot/model.safetensors"
  cp "$anc/config.json" "$anc/tokenizer.json" "$hub/snapshot/"
fi
fit_runs() { # ANCESTOR -> "fit build globals units total maxrss_kb" of the run with the best fit
  local best="" line
  for _ in $(seq "$runs"); do
    rm -rf "$LGREG_HOME"
    /usr/bin/time -f "%e %M" -o "$work/time.txt" "$lgreg" extract --algo tleg "$1" --name bench-tleg --json --no-progress > "$work/tleg.json"
    line=$(tail -n1 "$work/tleg.json" | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); s=j["extract_steps"]; print(s["fit"], j["extract_seconds"], s["globals"], s["units"])')
    line="$line $(cat "$work/time.txt")"
    if [ -z "$best" ] || awk -v a="${line%% *}" -v b="${best%% *}" 'BEGIN{exit !(a < b)}'; then best=$line; fi
  done
  echo "$best"
}
echo
echo "load before the tleg runs: $(uptime)"
read -r rd_s rd_rss < <(measure "$work/none" cat "$anc/model.safetensors")
read -r fit build globals units total rss < <(fit_runs "$anc")
read -r hfit hbuild hglobals hunits htotal hrss < <(fit_runs "$hub/snapshot")
echo
echo "### TLEG closed-form fit on SmolLM2 (30 layers)"
echo
echo "| step (run with the best fit, of $runs) | model directory (ancestor hashed beside the fit) | Hub-style snapshot (no hashing) |"
echo "| --- | --- | --- |"
awk -v s="$rd_s" 'BEGIN{printf "| one sequential read of model.safetensors (cat, page cache warm) | %.3f s | |\n", s}'
awk -v a="$fit" -v b="$hfit" 'BEGIN{printf "| lgreg tleg fit (read every layer tensor, accumulate, solve) | %.3f s | %.3f s |\n", a, b}'
awk -v a="$globals" -v b="$hglobals" 'BEGIN{printf "| copy the globals unit (113 MB) | %.3f s | %.3f s |\n", a, b}'
awk -v a="$units" -v b="$hunits" 'BEGIN{printf "| write the base and slope units | %.3f s | %.3f s |\n", a, b}'
awk -v a="$build" -v b="$hbuild" 'BEGIN{printf "| build of the gene in all (extract_seconds) | %.3f s | %.3f s |\n", a, b}'
awk -v a="$total" -v b="$htotal" -v r="$rss" -v q="$hrss" 'BEGIN{printf "| lgreg extract in all (with hashing and publishing), peak RSS | %.2f s, %.0f MB | %.2f s, %.0f MB |\n", a, r/1024, b, q/1024}'
awk -v a="$fit" -v b="$hfit" -v s="$rd_s" 'BEGIN{printf "\nfit / read = %.2f (model directory), %.2f (snapshot)\n", a/s, b/s}'
echo "load after: $(uptime)"
