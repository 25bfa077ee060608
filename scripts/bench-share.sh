#!/usr/bin/env bash
# Benchmark `lgreg push` / `lgreg pull oci://` of a gene of >= 500 MB against plain curl
# (monolithic POST + PUT upload, GET download) of the same blob, to and from the same loopback
# docker-registry, and print a Markdown table.
#
# Usage: scripts/bench-share.sh [SIZE_MB]   (default 512: one unit of SIZE_MB)
# Needs: cargo, curl, sha256sum, /usr/bin/docker-registry (apt-get install -y docker-registry).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${1:-512}"
TARGET="${CARGO_TARGET_DIR:-target}"
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin lgreg
  LGREG="$TARGET/release/lgreg"
else
  LGREG="$TARGET/debug/lgreg"
fi

WORK="$(mktemp -d)"
REG_PID=""
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

PORT="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')"
HOST="127.0.0.1:$PORT"
cat > "$WORK/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/data
http:
  addr: $HOST
YAML
/usr/bin/docker-registry serve "$WORK/config.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -fs "http://$HOST/v2/" >/dev/null && break; sleep 0.1; done

# A gene with one unit of SIZE_MB of f32 values.
GENE="$WORK/gene"
mkdir -p "$GENE"
python3 - "$GENE" "$SIZE_MB" <<'PY'
import json, os, struct, sys
d, mb = sys.argv[1], int(sys.argv[2])
n = mb * 1024 * 1024 // 4
header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
header += b" " * (-len(header) % 8)
with open(os.path.join(d, "unit.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header)
    chunk = os.urandom(1 << 20)
    for _ in range(4 * n // len(chunk)):
        f.write(chunk)
card = {"schema_version": 1, "algorithm": "heur", "fidelity": "approximate",
        "recipe": {"name": "bench", "version": "1", "params": {}},
        "family": {"name": "llama", "hyper_parameters": {}}, "roles": {},
        "units": ["unit.safetensors"]}
json.dump(card, open(os.path.join(d, "gene.json"), "w"))
PY
REG="$WORK/reg"
"$LGREG" --registry "$REG" publish "$GENE" --name bench --version 1.0.0 --quiet >/dev/null
BLOB="$GENE/unit.safetensors"
BYTES=$(stat -c %s "$BLOB")
DIGEST="sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)"

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
mbps() { echo "scale=0; $BYTES / 1048576 / $1" | bc; }

PUSH=$(t "$LGREG" --registry "$REG" push bench:1.0.0 "oci://$HOST/lgreg/bench" --insecure --no-progress)
PULL=$(t "$LGREG" --registry "$WORK/reg2" pull "oci://$HOST/lgreg/bench:1.0.0" --insecure --no-progress)
curl_push() {
  local loc
  loc=$(curl -fsS -X POST -D - -o /dev/null "http://$HOST/v2/curl/bench/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  case "$loc" in http*) ;; *) loc="http://$HOST$loc" ;; esac
  case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$BLOB" "$loc${sep}digest=$DIGEST" -o /dev/null
}
CPUSH=$(t curl_push)
CPULL=$(t curl -fsS "http://$HOST/v2/curl/bench/blobs/$DIGEST" -o "$WORK/blob.curl")

echo "| operation ($((BYTES / 1048576)) MiB, loopback docker-registry 2.8) | lgreg | curl |"
echo "| --- | --- | --- |"
echo "| push / upload | ${PUSH}s ($(mbps "$PUSH") MiB/s) | ${CPUSH}s ($(mbps "$CPUSH") MiB/s) |"
echo "| pull / download | ${PULL}s ($(mbps "$PULL") MiB/s) | ${CPULL}s ($(mbps "$CPULL") MiB/s) |"
