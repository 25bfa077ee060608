#!/usr/bin/env bash
# Descendants of several depths from the genes of scripts/run_tleg_vit.sh, each fine-tuned on
# the MNIST digits (classes the ancestor never saw) with one budget, beside the controls:
#   random         every tensor drawn at random;
#   random-layers  random layers with the ancestor's embeddings, norms and head;
#   fit            the training-free TLEG gene (least squares through the ancestor's layers);
#   first-L        the ancestor's first L layers;
#   tleg, sws      the faithful genes (distilled aux nets; sws at 3 layers keeps the first,
#                  middle and last stages);
#   ancestor       (12 layers only) the ancestor itself, fine-tuned.
# Writes $WORK/sweep/table.md (final accuracy, and the steps each arm needs to reach the random
# arm's final accuracy) and one `lgreg compare` figure per depth.
# Environment: WORK (default target/tleg-vit), LGREG_BIN, DEPTHS ("3 6 9 12"), SEEDS ("0"),
# STEPS (150), EVAL_EVERY (25 steps), LR (5e-4), BATCH (64). All 10,000 digits are used
# (their files are in class order, so a limit would drop classes), a tenth held out.
set -euo pipefail
cd "$(dirname "$0")/.."

lgreg="${LGREG_BIN:-$PWD/target/release/lgreg}"
work="${WORK:-$PWD/target/tleg-vit}"
export LGREG_HOME="${LGREG_HOME:-$work/lgreg-home}"
sweep="$work/sweep"
mkdir -p "$sweep"
q=(--no-progress --json)
source scripts/lib/descendants.sh


for seed in ${SEEDS:-0}; do
  for depth in ${DEPTHS:-3 6 9 12}; do
    d="$sweep/s$seed/L$depth"
    mkdir -p "$d"
    spawn vit-fashion-tleg-fit:0.1.0 "$depth" "$d/init-random" "$seed" --random-baseline
    spawn vit-fashion-tleg-fit:0.1.0 "$depth" "$d/init-random-layers" "$seed" --random-layers
    spawn vit-fashion-tleg-fit:0.1.0 "$depth" "$d/init-fit" "$seed"
    spawn "vit-fashion-first$depth:0.1.0" "$depth" "$d/init-first-L" "$seed"
    spawn vit-fashion-tleg:0.1.0 "$depth" "$d/init-tleg" "$seed"
    # Below 5 layers SWS cannot give every stage a layer: keep the first, middle and last.
    case "$depth" in
      3) spawn vit-fashion-sws:0.1.0 3 "$d/init-sws" "$seed" --stages 1,0,1,0,1 ;;
      4) spawn vit-fashion-sws:0.1.0 4 "$d/init-sws" "$seed" --stages 1,1,0,1,1 ;;
      *) spawn vit-fashion-sws:0.1.0 "$depth" "$d/init-sws" "$seed" ;;
    esac
    arms=(random random-layers fit first-L tleg sws)
    if [ "$depth" = 12 ]; then
      rm -rf "$d/init-ancestor" && cp -r "$work/ancestor" "$d/init-ancestor"
      arms+=(ancestor)
    fi
    for arm in "${arms[@]}"; do
      finetune "$d/init-$arm" "$d/$arm" "$seed"
      echo "done: seed $seed, $depth layers, $arm" >&2
    done
    "$lgreg" compare "${arms[@]/#/$d/}" -o "$d/compare" --json >/dev/null || true
  done
done

python3 scripts/lib/arms_table.py "$sweep" random,random-layers,fit,first-L,tleg,sws,ancestor
