#!/usr/bin/env bash
# Benchmark: SmolLM2-135M GGUF (Q4_1) -> F32 safetensors.
# Compares lgreg against the numpy + `gguf` (PyPI) conversion of the same file and against `cp`
# of a file of the output's size (the physical copy limit). Prints a Markdown table.
# Usage: scripts/bench-convert.sh [RUNS]   (default 3 runs each; the best is reported)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"

scripts/fetch-fixtures.sh >/dev/null
cargo build --release --locked -q
gguf=target/fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
work=target/bench-convert
venv=target/bench-venv
mkdir -p "$work"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy==2.4.6 gguf==0.19.0 safetensors==0.8.0
fi

cat > "$work/peer.py" <<'PY'
# The peer: numpy + gguf reader, dequantise every tensor, undo the q/k permutation, save F32
# safetensors with HF names (what a Python user would write).
import re, sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

src, dst = sys.argv[1], sys.argv[2]
r = GGUFReader(src)
heads = int(r.fields["llama.attention.head_count"].parts[-1][0])
kv = int(r.fields["llama.attention.head_count_kv"].parts[-1][0])
names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
         "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
out = {}
for t in r.tensors:
    w = dequantize(t.data, t.tensor_type).astype(np.float32)
    w = w.reshape([int(d) for d in reversed(t.shape)])
    m = re.match(r"blk\.(\d+)\.(\w+)\.weight", t.name)
    if m:
        kind = m.group(2)
        if kind in ("attn_q", "attn_k"):
            n = heads if kind == "attn_q" else kv
            o, i = w.shape
            w = w.reshape(n, o // n // 2, 2, i).swapaxes(1, 2).reshape(o, i)
        name = f"model.layers.{m.group(1)}.{layer[kind]}.weight"
    else:
        name = names[t.name]
    out[name] = np.ascontiguousarray(w)
save_file(out, dst, metadata={"format": "pt"})
PY

best() { sort -n | head -n1; }
measure() { # OUTPUT cmd... -> "seconds maxrss_kb"; OUTPUT is removed before each run
  local output="$1"; shift
  local best_s="" best_rss=""
  for _ in $(seq "$runs"); do
    rm -rf "$output"
    sync
    /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null 2>&1
    read -r s rss < "$work/time.txt"
    if [ -z "$best_s" ] || awk "BEGIN{exit !($s < $best_s)}"; then best_s=$s; best_rss=$rss; fi
  done
  echo "$best_s $best_rss"
}

read -r l_s l_rss < <(measure "$work/out" target/release/lgreg convert "$gguf" "$work/out" --dtype f32)
out_bytes=$(stat -c %s "$work/out/model.safetensors")
cp "$work/out/model.safetensors" "$work/copy-src"
read -r c_s c_rss < <(measure "$work/copy" cp "$work/copy-src" "$work/copy")
read -r p_s p_rss < <(measure "$work/peer.safetensors" "$venv/bin/python" "$work/peer.py" "$gguf" "$work/peer.safetensors")

# The peer's output must hold the same values as lgreg's (bitwise).
"$venv/bin/python" - "$work/out/model.safetensors" "$work/peer.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert sorted(a) == sorted(b), "tensor names differ"
bad = [k for k in a if not np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32))]
assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"
print("peer output is bit-identical to lgreg's", file=sys.stderr)
PY

mb=$((out_bytes / 1000000))
echo
echo "| tool | wall time (best of $runs) | peak RSS | throughput (output) |"
echo "| --- | --- | --- | --- |"
row() { awk -v n="$1" -v s="$2" -v r="$3" -v mb="$mb" 'BEGIN{printf "| %s | %.2f s | %.0f MB | %.0f MB/s |\n", n, s, r/1024, (s>0? mb/s : 0)}'; }
row "lgreg convert --dtype f32" "$l_s" "$l_rss"
row "numpy + gguf (PyPI)" "$p_s" "$p_rss"
row "cp of the ${mb} MB output" "$c_s" "$c_rss"
awk -v a="$p_s" -v b="$l_s" 'BEGIN{printf "\nlgreg is %.1fx faster than numpy + gguf.\n", a/b}'
