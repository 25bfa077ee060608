#!/usr/bin/env bash
# Benchmark `lgreg publish` against `openssl dgst -sha256` and `sha256sum` on the same bytes.
# Usage: scripts/bench-publish.sh [UNITS] [MiB_PER_UNIT]   (default 8 x 128 MiB = 1 GiB)
# Prints a Markdown table. Needs: openssl, sha256sum, GNU time (/usr/bin/time).
set -euo pipefail
units=${1:-8}
mib=${2:-128}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
lgreg="$target/release/lgreg"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gene="$work/gene"
mkdir -p "$gene"

# Units: one f32 tensor each, random bytes (incompressible, no dedupe between units).
names=()
for i in $(seq 0 $((units - 1))); do
  f="$gene/blocks.$i.safetensors"
  n=$((mib * 1024 * 1024 / 4))
  header=$(printf '{"blocks.%d.weight":{"dtype":"F32","shape":[%d],"data_offsets":[0,%d]}}' "$i" "$n" $((n * 4)))
  while [ $(( ${#header} % 8 )) -ne 0 ]; do header="$header "; done
  python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<Q', $((${#header}))))" > "$f"
  printf '%s' "$header" >> "$f"
  head -c $((n * 4)) /dev/urandom >> "$f"
  names+=("\"blocks.$i.safetensors\"")
done
printf '{"schema_version":1,"algorithm":"tleg","fidelity":"approximate","recipe":{"name":"bench","version":"1"},"family":{"name":"llama"},"lgreg_version":"0.1.0","units":[%s]}\n' \
  "$(IFS=,; echo "${names[*]}")" > "$gene/gene.json"
bytes=$(cat "$gene"/*.safetensors | wc -c)

# Warm the page cache so every tool reads from memory.
cat "$gene"/*.safetensors > /dev/null

timed() { # label, command...: prints "label seconds peak_kib"
  local label=$1; shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/rss" "$@" > /dev/null
  end=$(date +%s.%N)
  echo "$label $(echo "$end - $start" | bc -l) $(cat "$work/rss")"
}

results=()
results+=("$(timed "openssl dgst -sha256" openssl dgst -sha256 "$gene"/*.safetensors)")
results+=("$(timed "sha256sum" sha256sum "$gene"/*.safetensors)")
results+=("$(timed "lgreg publish (cold)" "$lgreg" --registry "$work/reg" --quiet publish "$gene" --name bench --version 1.0.0)")
results+=("$(timed "lgreg publish (warm, same version)" "$lgreg" --registry "$work/reg" --quiet publish "$gene" --name bench --version 1.0.0)")
results+=("$(timed "lgreg publish (new version, same units)" "$lgreg" --registry "$work/reg" --quiet publish "$gene" --name bench --version 1.0.1)")
results+=("$(timed "lgreg verify" "$lgreg" --registry "$work/reg" --quiet verify)")

openssl_s=$(echo "${results[0]}" | awk '{print $(NF-1)}')
echo "Input: $units units x $mib MiB = $bytes bytes, page cache warm."
echo
echo "| tool | seconds | MB/s | vs openssl | peak RSS (MiB) |"
echo "| --- | ---: | ---: | ---: | ---: |"
for r in "${results[@]}"; do
  label=$(echo "$r" | awk '{$NF=""; $(NF-1)=""; print}' | sed 's/ *$//')
  s=$(echo "$r" | awk '{print $(NF-1)}')
  kib=$(echo "$r" | awk '{print $NF}')
  printf '| %s | %.2f | %.0f | %.2fx | %.1f |\n' "$label" "$s" "$(echo "$bytes / $s / 1000000" | bc -l)" \
    "$(echo "$openssl_s / $s" | bc -l)" "$(echo "$kib / 1024" | bc -l)"
done
