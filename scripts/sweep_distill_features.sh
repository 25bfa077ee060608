#!/usr/bin/env bash
# Feature matching in the TLEG (or SWS) aux net's distillation (EXPERIMENTS.md, "Feature
# matching"): the ViT ancestor of scripts/run_tleg_vit.sh (trained here when missing), two aux nets
# distilled from it with the same budget, logits only (`plain`) and with Learngene Pool's
# block-output and attention terms at the front-end positions (`features`,
# DISTILL.FEATURES=front-end), then descendants of LAYERS layers from each and a random-init
# control, fine-tuned on the MNIST digits with one budget.
# Writes $WORK/features/table.md (features-sws/ for METHOD=sws). Environment: WORK
# (target/tleg-vit), METHOD (tleg or sws), SEEDS ("0 1 2"), LAYERS (6), DISTILL_LIMIT (12800),
# DISTILL_EPOCHS (1), plus the sweep's STEPS, EVAL_EVERY, LR, BATCH. Finished steps are skipped
# on a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/vit_setup.sh
method="${METHOD:-tleg}"
out="$work/features"
[ "$method" = tleg ] || out="$work/features-$method"
mkdir -p "$out"
layers="${LAYERS:-6}"
source scripts/lib/descendants.sh
source scripts/lib/vit_fashion_ancestor.sh

for arm in plain features; do
  extra=()
  [ "$arm" = features ] && extra=(DISTILL.FEATURES=front-end)
  has_gene "vit-fashion-$method-$arm:0.1.0" || "$lgreg" train \
    --config "configs/ancestor_${method}_vit.yaml" --set "GENE.ANCESTOR_MODEL_PATH=$work/ancestor" \
    "DATASET.PATH=$fashion" "DATASET.LIMIT=${DISTILL_LIMIT:-12800}" "TRAIN.EPOCHS=${DISTILL_EPOCHS:-1}" \
    AUX.INIT=random "OUTPUT_DIR=$out/aux-$arm" "GENE.NAME=vit-fashion-$method-$arm" \
    "${extra[@]}" "${q[@]}" > "$out/train-$arm.json"
done
for seed in ${SEEDS:-0 1 2}; do
  d="$out/s$seed/L$layers"
  mkdir -p "$d"
  spawn vit-fashion-$method-plain:0.1.0 "$layers" "$d/init-random" "$seed" --random-baseline
  spawn vit-fashion-$method-plain:0.1.0 "$layers" "$d/init-plain" "$seed"
  spawn vit-fashion-$method-features:0.1.0 "$layers" "$d/init-features" "$seed"
  for arm in random plain features; do
    finetune "$d/init-$arm" "$d/$arm" "$seed"
    echo "done: seed $seed, $arm" >&2
  done
  "$lgreg" compare "$d/random" "$d/plain" "$d/features" -o "$d/compare" --json >/dev/null || true
done
python3 scripts/lib/arms_table.py "$out" random,plain,features
