#!/usr/bin/env bash
# Benchmark `lgreg pull` against huggingface_hub.snapshot_download and curl, all from the same
# loopback fake Hub (examples/fake_hub.rs), and print a Markdown table.
#
# Usage: scripts/bench-pull.sh [PAYLOAD_DIR]
#   PAYLOAD_DIR defaults to the SmolLM2-135M F32 conversion of the GGUF fixture (~538 MB), made
#   with `lgreg convert --dtype f32`; when that conversion is not possible, the MiniLM folder.
# Needs: cargo, curl, python3 with huggingface_hub (pip install huggingface_hub==2.4.0).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
FIX="${LGREG_FIXTURES:-target/fixtures}"
TARGET="${CARGO_TARGET_DIR:-target}"
REPO="bench/model"

# PROFILE=release (default) builds optimised binaries; PROFILE=test reuses what `cargo test`
# built (same optimisation levels for dependencies, opt-level 2 for lgreg itself).
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin lgreg --example fake_hub
  LGREG="$TARGET/release/lgreg"
  FAKE="$TARGET/release/examples/fake_hub"
else
  cargo test --no-run --quiet
  LGREG="$TARGET/debug/lgreg"
  FAKE="$TARGET/debug/examples/fake_hub"
fi

WORK="$(mktemp -d)"
HUB_PID=""
cleanup() { [ -n "$HUB_PID" ] && kill "$HUB_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

PAYLOAD="${1:-}"
if [ -z "$PAYLOAD" ]; then
  if "$LGREG" convert "$FIX/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$WORK/smollm2-f32" \
      --dtype f32 --no-progress >/dev/null 2>"$WORK/convert.err"; then
    PAYLOAD="$WORK/smollm2-f32"
  else
    echo "note: SmolLM2 F32 conversion failed ($(head -c 200 "$WORK/convert.err")); using MiniLM" >&2
    PAYLOAD="$FIX/minilm"
  fi
fi
BYTES=$(find "$PAYLOAD" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')

"$FAKE" "$REPO" "$PAYLOAD" >"$WORK/hub.txt" &
HUB_PID=$!
for _ in $(seq 100); do [ -s "$WORK/hub.txt" ] && break; sleep 0.1; done
read -r URL _COMMIT <"$WORK/hub.txt"

now() { date +%s.%N; }
best=()
time_it() { # name, command...
  local name="$1"; shift
  local min=""
  for _ in $(seq "$RUNS"); do
    rm -rf "$WORK/out" && mkdir -p "$WORK/out"
    sync
    local t0 t1
    t0=$(now); "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }; t1=$(now)
    local dt; dt=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$min" ] || (( $(echo "$dt < $min" | bc -l) )); then min=$dt; fi
  done
  best+=("$name=$min")
}

run_lgreg() { HF_HUB_CACHE="$WORK/out" HF_ENDPOINT="$URL" "$LGREG" pull "$REPO" --all --no-progress; }
run_python() {
  HF_HUB_CACHE="$WORK/out" HF_ENDPOINT="$URL" HF_HUB_DISABLE_XET=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
    python3 -c "from huggingface_hub import snapshot_download; snapshot_download('$REPO')"
}
run_curl() {
  (cd "$PAYLOAD" && find . -type f -printf '%P\n') | while read -r f; do
    mkdir -p "$WORK/out/$(dirname "$f")"
    curl -sfL -o "$WORK/out/$f" "$URL/$REPO/resolve/main/$f"
  done
}

time_it curl run_curl
time_it lgreg run_lgreg
if python3 -c "import huggingface_hub" 2>/dev/null; then time_it huggingface_hub run_python; fi

get() { for kv in "${best[@]}"; do [ "${kv%%=*}" = "$1" ] && echo "${kv#*=}"; done; return 0; }
CURL=$(get curl)
echo
echo "payload: $(basename "$PAYLOAD"), $BYTES bytes, lgreg built with the $PROFILE profile, $(find "$PAYLOAD" -type f | wc -l) files; best of $RUNS; $(nproc) cores"
echo
echo "| tool | seconds | MB/s | × curl speed |"
echo "| --- | ---: | ---: | ---: |"
for kv in "${best[@]}"; do
  name="${kv%%=*}"; t="${kv#*=}"
  printf '| %s | %.3f | %.0f | %.2f |\n' "$name" "$t" "$(echo "$BYTES / $t / 1000000" | bc -l)" "$(echo "$CURL / $t" | bc -l)"
done
