#!/usr/bin/env bash
# Heur Learngene end to end, as its paper runs it, on a CPU budget: the collective model on the
# Fashion-MNIST classes (configs/ancestor_heur_vgg.yaml), then 5-way descendants on the MNIST
# digits (classes the ancestor never saw) at 10 and 20 shots (configs/descendant_heur_vgg.yaml).
# Every descendant task trains the gene-initialised model and a random-init control of the same
# shape on the same images, order and budget; summary.json holds both arms with 95% intervals.
# Usage: scripts/run_heur_vgg.sh [OUT_DIR]      (default outputs/heur_vgg_experiment)
# The budget comes from the environment (defaults below); the toolbox's own budget is the
# configs' values with no overrides (a GPU run).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs/heur_vgg_experiment}"
lgreg="${LGREG:-target/release/lgreg}"
[ -x "$lgreg" ] || cargo build --release --locked -q
scripts/fetch-fixtures.sh >/dev/null
fixtures="${LGREG_FIXTURES:-target/fixtures}"

scale="${SCALE:-0.125}"            # HEUR.WIDTH_SCALE: every width times this
tasks="${TASKS:-10}"               # collective-model tasks (each widens one block)
epochs="${EPOCHS:-5}"              # epochs per collective-model task
per_class="${PER_CLASS:-100}"      # images per class of a collective-model task
des_tasks="${DES_TASKS:-20}"       # seeded descendant tasks per shot count
des_epochs="${DES_EPOCHS:-30}"     # epochs per descendant task, both arms (the paper's 30)
des_batch="${DES_BATCH:-16}"       # descendant batch size
des_lr="${DES_LR:-0.01}"           # descendant SGD learning rate
tests="${TEST_PER_CLASS:-20}"      # test images per class of a descendant task
seed="${SEED:-1}"

"$lgreg" train --config configs/ancestor_heur_vgg.yaml --resume --set \
  "DATASET.PATH=$fixtures/fashion-mnist" "OUTPUT_DIR=$out/ancestor" "SEED=$seed" \
  "HEUR.WIDTH_SCALE=$scale" "DATASET.NUM_WORKS=$tasks" "TRAIN.EPOCHS=$epochs" \
  "DATASET.NUM_IMGS_PER_CAT_TRAIN=$per_class"

for shots in 10 20; do
  "$lgreg" adapt --config configs/descendant_heur_vgg.yaml --resume --set \
    "DATASET.PATH=$fixtures/mnist/src/digits" "OUTPUT_DIR=$out/descendants_${shots}shot" \
    "GENE.ANCESTOR_MODEL_PATH=$out/ancestor" "SEED=$seed" "HEUR.WIDTH_SCALE=$scale" \
    "DATASET.NUM_WORKS_TT=$des_tasks" "DATASET.NUM_IMGS_PER_CAT_TRAIN=$shots" \
    "TRAIN.EPOCHS=$des_epochs" "TRAIN.BATCH_SIZE=$des_batch" "TRAIN.LR=$des_lr" \
    "HEUR.TEST_PER_CLASS=$tests"
done
echo "summaries: $out/descendants_10shot/summary.json $out/descendants_20shot/summary.json" >&2
