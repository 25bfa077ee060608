#!/usr/bin/env bash
# Learngene Pool on ViT (EXPERIMENTS.md, "Learngene Pool on ViT"). The teacher is the Fashion-MNIST
# ancestor of scripts/run_tleg_vit.sh (trained here when missing). Four pools of two students
# (widths 64 and 128, 6 blocks), each distilled on DISTILL_LIMIT Fashion-MNIST images for
# DISTILL_EPOCHS (POOL_EPOCHS for the pool fine-tune, at the shipped config's POOL.LR 1e-4 warmed up
# over a tenth), every configuration measured on the same held-out Fashion images:
#   ours        the paper: random students, stitches from the transposed learned maps, fine-tune
#   snnet       SN-Net's least-squares stitches, then the same fine-tune
#   snnet-only  SN-Net's least-squares stitches alone, no fine-tune
#   select      as ours, the students started from the teacher's layers narrowed to their width
#   ours-lr5e-4 as ours, the fine-tune at the students' rate 5e-4 (run last)
# Controls: random-init models of three configurations' shapes (tiny alone, tiny 0..=2 → base
# 2.., base alone) trained by `adapt` on the same images for a student's and the fine-tune's
# steps together, measured on the same held-out images. Then those three configurations of
# `ours` fine-tuned on the MNIST digits against random init of the same shapes, SEEDS.
# Writes $WORK/pool/table.md, $WORK/pool/pool.png and the transfer tables. Environment: WORK
# (target/tleg-vit), SEEDS ("0 1 2"), DISTILL_LIMIT (12800), DISTILL_EPOCHS (1), POOL_EPOCHS (1),
# plus the transfer's STEPS, EVAL_EVERY, LR, BATCH. Finished steps are skipped on a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/vit_setup.sh
source scripts/lib/descendants.sh
source scripts/lib/vit_fashion_ancestor.sh
out="$work/pool"
mkdir -p "$out"
limit="${DISTILL_LIMIT:-12800}" epochs="${DISTILL_EPOCHS:-1}" pool_epochs="${POOL_EPOCHS:-1}"

version=0.3.0 # earlier versions: runs of lgreg builds before the fixes of 2026-12-07
pool() { # ARM SETS...: a pool run into $out/ARM publishing vit-fashion-pool-ARM
  local arm="$1"; shift
  has_gene "vit-fashion-pool-$arm:$version" || "$lgreg" train --config configs/ancestor_pool_vit.yaml \
    --set "GENE.ANCESTOR_MODEL_PATH=$work/ancestor" "DATASET.PATH=$fashion" "DATASET.LIMIT=$limit" \
    "TRAIN.EPOCHS=$epochs" "POOL.EPOCHS=$pool_epochs" "OUTPUT_DIR=$out/$arm" \
    "GENE.NAME=vit-fashion-pool-$arm" "GENE.VERSION=$version" "$@" "${q[@]}" > "$out/train-$arm.json"
  echo "done: pool $arm" >&2
}
pool ours
pool snnet POOL.STITCH_INIT=snnet
pool snnet-only POOL.STITCH_INIT=snnet POOL.STEPS=0
pool select POOL.INIT=select

# The three configurations the controls and the transfer use: NAME:LAYERS:spawn options.
configs=("tiny:6:--front tiny" "stitch:7:--front tiny --end base --stitch 2,2" "base:6:--front base")
# The parameters of the model directory $1.
params_of() { python3 -c "
import json, struct, sys
with open(sys.argv[1] + '/model.safetensors', 'rb') as f:
    head = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
n = 0
for k, v in head.items():
    if k != '__metadata__':
        p = 1
        for d in v['shape']: p *= d
        n += p
print(n)" "$1"; }
# Random init of the same shapes, trained on the distillation images for 380 steps (a student's
# 190 and the fine-tune's 190), held out as the pool runs hold out (seed 1, 5%).
points="$out/random-init.json"
if [ ! -f "$points" ]; then
  pairs=()
  for c in "${configs[@]}"; do
    IFS=: read -r name layers flags <<< "$c"
    spawn vit-fashion-pool-ours:$version "$layers" "$out/random-init/$name-init" 1 $flags --random-baseline
    report="$out/random-init/$name.json"
    [ -f "$report" ] || "$lgreg" adapt "$out/random-init/$name-init" --data "$fashion" --limit "$limit" \
      --steps 380 --lr 5e-4 --batch-size 64 --warmup 10 --seed 1 --val-fraction 0.05 \
      -o "$out/random-init/$name" --force "${q[@]}" | tail -n 1 > "$report"
    accuracy=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['accuracy'])" "$report")
    pairs+=("[$(params_of "$out/random-init/$name-init"), $accuracy]")
    echo "done: random init $name" >&2
  done
  (IFS=,; echo "[${pairs[*]}]") > "$points"
fi
cargo build --release --locked --example pool_figure
figure() {
  local arms=()
  for a in ours snnet snnet-only select ours-lr5e-4; do
    [ -f "$out/$a/configurations.json" ] && arms+=("$a=$out/$a")
  done
  target/release/examples/pool_figure "$out/pool" "${arms[@]}" "random init=$points" >/dev/null
}
figure

table() { # the table of every configuration of every arm
python3 - "$out" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
arms = [a for a in ["ours", "snnet", "snnet-only", "select", "ours-lr5e-4"]
        if (out / a / "configurations.json").is_file()]
runs = {a: json.loads((out / a / "configurations.json").read_text()) for a in arms}
def key(c): return (c["front"], c["i"], c["end"], c["j"])
rows = ["| configuration | layers | parameters | " + " | ".join(arms) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in arms) + " |"]
first = runs[arms[0]]
for name, card in first["instances"].items():
    accs = " | ".join(f'{runs[a]["instances"][name]["metric"]:.3f}' for a in arms)
    rows.append(f'| {name} alone | {card["layers"]} | {card["params"]} | {accs} |')
for c in first["configurations"]:
    accs = " | ".join(f'{next(x for x in runs[a]["configurations"] if key(x) == key(c))["metric"]:.3f}' for a in arms)
    rows.append(f'| {c["front"]} 0..={c["i"]} → {c["end"]} {c["j"]}.. | {c["depth"]} | {c["params"]} | {accs} |')
for a in arms:
    cs = runs[a]["configurations"]
    rows.append(f'| mean over stitched ({a}) | | | ' + " | ".join(
        f'{sum(x["metric"] for x in runs[b]["configurations"]) / len(runs[b]["configurations"]):.3f}' if b == a else ""
        for b in arms) + " |")
(out / "table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
}
table

# Transfer: the three configurations of the `ours` and `snnet` pools against random init of the
# same shapes.
for c in "${configs[@]}"; do
  IFS=: read -r name layers flags <<< "$c"
  for seed in ${SEEDS:-0 1 2}; do
    d="$out/transfer-$name/s$seed/L$layers"
    mkdir -p "$d"
    spawn vit-fashion-pool-ours:$version "$layers" "$d/init-random" "$seed" $flags --random-baseline
    for arm in ours snnet; do
      spawn "vit-fashion-pool-$arm:$version" "$layers" "$d/init-$arm" "$seed" $flags
    done
    for arm in random ours snnet; do
      finetune "$d/init-$arm" "$d/$arm" "$seed"
      echo "done: transfer $name, seed $seed, $arm" >&2
    done
  done
  python3 scripts/lib/arms_table.py "$out/transfer-$name" random,ours,snnet
done

# The fine-tune's rate: the students' 5e-4 instead of 1e-4.
pool ours-lr5e-4 POOL.LR=5e-4
figure
table
