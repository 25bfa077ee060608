#!/usr/bin/env bash
# Auto Learngene on a ViT (EXPERIMENTS.md, "Auto Learngene on a ViT"): which ancestor layers
# each selection rule keeps, and how descendants grown from them fine-tune on the MNIST digits
# (classes the ancestor never saw) against the controls, with one budget:
#   random         every tensor drawn at random;
#   random-layers  random layers with the ancestor's embeddings, norms and head;
#   first-half     the ancestor's first K layers (the Cluster-Learngene baseline);
#   untrained      the window most like an untrained pseudo-descendant (every stride-th
#                  ancestor layer), `lgreg extract --algo auto` (MODE: approximate);
#   trained        the window most like a pseudo-descendant trained from scratch on the digits
#                  (`lgreg train --config configs/ancestor_auto_vit.yaml`, MODE: faithful).
# The ancestor is the one of scripts/run_tleg_vit.sh (trained here when missing). Writes
# $WORK/auto/table.md, $WORK/auto/layers.md (the layers each rule picked) and the figures.
# Environment: WORK (target/tleg-vit), SEEDS ("0"), K (6 gene layers), LAYERS (9, the
# descendants' depth), PSEUDO_LAYERS (4), PSEUDO_STEPS (150), SAMPLES (64 calibration images),
# STEPS (150), EVAL_EVERY (25), LR (5e-4), BATCH (64). Finished steps are skipped on a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/vit_setup.sh
source scripts/lib/descendants.sh
k="${K:-6}" layers="${LAYERS:-9}" samples="${SAMPLES:-64}" pseudo="${PSEUDO_LAYERS:-4}"
out="$work/auto"
mkdir -p "$out"

source scripts/lib/vit_fashion_ancestor.sh

# The genes: one per rule.
has_gene "vit-fashion-first$k:0.1.0" || "$lgreg" extract --algo auto "$work/ancestor" \
  --data "$digits" --set rule=first-half --set "layers=$k" \
  --name "vit-fashion-first$k" --version 0.1.0 "${q[@]}" >/dev/null
has_gene "vit-fashion-auto-untrained:0.1.0" || "$lgreg" extract --algo auto "$work/ancestor" \
  --data "$digits" --set rule=cka --set "layers=$k" --set "pseudo_layers=$pseudo" \
  --set "samples=$samples" --name vit-fashion-auto-untrained --version 0.1.0 "${q[@]}" >/dev/null
has_gene "vit-fashion-auto:0.1.0" || "$lgreg" train --config configs/ancestor_auto_vit.yaml \
  --set "GENE.ANCESTOR_MODEL_PATH=$work/ancestor" "DATASET.PATH=$digits" \
  "GENE.PARAMS={layers: $k, pseudo_layers: $pseudo, samples: $samples}" \
  "TRAIN.STEPS=${PSEUDO_STEPS:-150}" "OUTPUT_DIR=$out/ancestor-run" "${q[@]}" >/dev/null

{
  echo "| rule | gene | selected ancestor layers | window scores |"
  echo "| --- | --- | --- | --- |"
  for pair in "first-half:vit-fashion-first$k" "untrained:vit-fashion-auto-untrained" "trained:vit-fashion-auto"; do
    "$lgreg" show "${pair#*:}:0.1.0" --json | python3 -c "
import json, sys
card = json.load(sys.stdin)
d = card.get('card', card).get('diagnostics', {})
print(f\"| ${pair%%:*} | ${pair#*:} | {d.get('selected_layers')} | {d.get('window_scores', '')} |\")"
  done
} > "$out/layers.md"
cat "$out/layers.md" >&2


arms=(random random-layers first-half untrained trained)
for seed in ${SEEDS:-0}; do
  d="$out/s$seed/L$layers"
  mkdir -p "$d"
  spawn vit-fashion-auto:0.1.0 "$layers" "$d/init-random" "$seed" --random-baseline
  spawn vit-fashion-auto:0.1.0 "$layers" "$d/init-random-layers" "$seed" --random-layers
  spawn "vit-fashion-first$k:0.1.0" "$layers" "$d/init-first-half" "$seed"
  spawn vit-fashion-auto-untrained:0.1.0 "$layers" "$d/init-untrained" "$seed"
  spawn vit-fashion-auto:0.1.0 "$layers" "$d/init-trained" "$seed"
  for arm in "${arms[@]}"; do
    finetune "$d/init-$arm" "$d/$arm" "$seed"
    echo "done: seed $seed, $arm" >&2
  done
  "$lgreg" compare "${arms[@]/#/$d/}" -o "$d/compare" --json >/dev/null || true
done
python3 scripts/lib/arms_table.py "$out" "$(IFS=,; echo "${arms[*]}")"
