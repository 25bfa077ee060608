#!/usr/bin/env bash
# The ViT transfer experiment (EXPERIMENTS.md, "Faithful TLEG and SWS on a ViT"), end to end:
#   1. the ancestor: a ViT (width 128, 12 layers, 4 heads, patch 7, mean pooling) trained by
#      `lgreg adapt` from seeded random weights on Fashion-MNIST; its accuracy on the 10,000
#      Fashion-MNIST test images;
#   2. the genes: TLEG and SWS aux nets distilled from it on Fashion-MNIST (`lgreg train` with
#      configs/ancestor_{tleg,sws}_vit.yaml, MODE: faithful), the training-free TLEG fit, and
#      first-L truncations of the ancestor;
#   3. scripts/sweep_tleg_depth.sh: descendants of 3, 6, 9 and 12 layers and the controls,
#      fine-tuned on the MNIST digits with one budget; the table and the `compare` plots.
# Environment: WORK (default target/tleg-vit), SEEDS (default "0"), ANCESTOR_LIMIT (20000
# images), ANCESTOR_EPOCHS (1), DISTILL_LIMIT (12800), DISTILL_EPOCHS (1), AUX_INIT (random),
# plus the sweep's DEPTHS, STEPS, EVAL_EVERY, LR. The sizes fit a 2-core CPU in about an hour. Steps already done are skipped on a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/vit_setup.sh

# 1. The ancestor.
source scripts/lib/vit_fashion_ancestor.sh

# 2. The genes.
for method in tleg sws; do
  has_gene "vit-fashion-$method:0.1.0" || "$lgreg" train --config "configs/ancestor_${method}_vit.yaml" \
    --set "GENE.ANCESTOR_MODEL_PATH=$work/ancestor" "DATASET.PATH=$fashion" \
    "DATASET.LIMIT=${DISTILL_LIMIT:-12800}" "TRAIN.EPOCHS=${DISTILL_EPOCHS:-1}" \
    "AUX.INIT=${AUX_INIT:-random}" "OUTPUT_DIR=$work/aux-$method" "GENE.NAME=vit-fashion-$method" \
    "${q[@]}" >/dev/null
  echo "gene: vit-fashion-$method" >&2
done
has_gene vit-fashion-tleg-fit:0.1.0 || "$lgreg" extract --algo tleg "$work/ancestor" \
  --name vit-fashion-tleg-fit --version 0.1.0 "${q[@]}" >/dev/null
for depth in ${DEPTHS:-3 6 9 12}; do
  has_gene "vit-fashion-first$depth:0.1.0" || "$lgreg" extract --algo auto "$work/ancestor" \
    --data "$fashion" --set rule=first-half --set "layers=$depth" \
    --name "vit-fashion-first$depth" --version 0.1.0 "${q[@]}" >/dev/null
done

# 3. Descendants.
WORK="$work" LGREG_BIN="$lgreg" scripts/sweep_tleg_depth.sh
