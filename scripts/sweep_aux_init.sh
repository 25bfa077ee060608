#!/usr/bin/env bash
# The aux-net initialisations of MODE: faithful, measured (EXPERIMENTS.md, "Aux-net
# initialisation"). From the ancestor of scripts/run_tleg_vit.sh (run that first), distil TLEG
# and SWS aux nets with each `AUX.INIT`:
#   random  the papers' (already distilled by run_tleg_vit.sh at the teacher's width);
#   fit     a warm start from the teacher's layers at its width (TLEG: the least-squares line;
#           SWS: each stage's middle layer);
#   select  a narrower aux net (width 64, 2 heads of the teacher's head width 32, FFN 256)
#           warm-started from the teacher's leading channels and heads, beside the same
#           narrow aux net from `random`;
# then spawn descendants of LAYERS layers and fine-tune them on the MNIST digits with the
# budget of scripts/sweep_tleg_depth.sh, with random init of each width as the control.
# Writes $WORK/init/table.md. Environment: WORK (default target/tleg-vit), LGREG_BIN, LAYERS (6),
# SEED (0), STEPS (150), EVAL_EVERY (25), LR (5e-4), BATCH (64), DISTILL_LIMIT (12800).
set -euo pipefail
cd "$(dirname "$0")/.."

lgreg="${LGREG_BIN:-$PWD/target/release/lgreg}"
work="${WORK:-$PWD/target/tleg-vit}"
export LGREG_HOME="${LGREG_HOME:-$work/lgreg-home}"
fashion=target/fixtures/fashion-mnist/train-images-idx3-ubyte.gz
out="$work/init"
layers="${LAYERS:-6}" seed="${SEED:-0}"
q=(--no-progress --json)
source scripts/lib/descendants.sh
[ -f "$work/ancestor/model.safetensors" ] || { echo "no ancestor in $work: run scripts/run_tleg_vit.sh first" >&2; exit 2; }
mkdir -p "$out"

distil() { # METHOD NAME ARGS...: an aux net of configs/ancestor_METHOD_vit.yaml, published as NAME
  local method="$1" name="$2"; shift 2
  "$lgreg" show "$name:0.1.0" --json >/dev/null 2>&1 && return 0
  rm -rf "$out/aux-$name"
  "$lgreg" train --config "configs/ancestor_${method}_vit.yaml" \
    --set "GENE.ANCESTOR_MODEL_PATH=$work/ancestor" "DATASET.PATH=$fashion" \
    "DATASET.LIMIT=${DISTILL_LIMIT:-12800}" "TRAIN.EPOCHS=1" "OUTPUT_DIR=$out/aux-$name" \
    "GENE.NAME=$name" "$@" "${q[@]}" >/dev/null
  echo "gene: $name" >&2
}
narrow=("AUX.HIDDEN=64" "AUX.HEADS=2" "AUX.KV_HEADS=2" "AUX.FFN=256")
for method in tleg sws; do
  distil "$method" "vit-fashion-$method-initfit" "AUX.INIT=fit"
  distil "$method" "vit-fashion-$method-w64-random" "AUX.INIT=random" "${narrow[@]}"
  distil "$method" "vit-fashion-$method-w64-select" "AUX.INIT=select" "${narrow[@]}"
done

arm() { # NAME GENE [SPAWN FLAGS]: spawn, fine-tune
  local name="$1" gene="$2"; shift 2
  [ -f "$out/$name/model.safetensors" ] && return 0
  spawn "$gene" "$layers" "$out/init-$name" "$seed" "$@"
  finetune "$out/init-$name" "$out/$name" "$seed"
  echo "done: $name" >&2
}
arm w128-random vit-fashion-tleg:0.1.0 --random-baseline
arm w128-tleg-random vit-fashion-tleg:0.1.0
arm w128-tleg-fit vit-fashion-tleg-initfit:0.1.0
arm w128-sws-random vit-fashion-sws:0.1.0
arm w128-sws-fit vit-fashion-sws-initfit:0.1.0
arm w64-random vit-fashion-tleg-w64-random:0.1.0 --random-baseline
arm w64-tleg-random vit-fashion-tleg-w64-random:0.1.0
arm w64-tleg-select vit-fashion-tleg-w64-select:0.1.0
arm w64-sws-random vit-fashion-sws-w64-random:0.1.0
arm w64-sws-select vit-fashion-sws-w64-select:0.1.0
"$lgreg" compare "$out"/w64-* -o "$out/compare-w64" --json >/dev/null || true
"$lgreg" compare "$out"/w128-* -o "$out/compare-w128" --json >/dev/null || true

python3 - "$out" "$LGREG_HOME" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def evals(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
def card(name):
    for aux in out.glob(f"aux-{name}"):
        return json.loads((aux / "gene.json").read_text())["diagnostics"]["distill"]
rows = ["| arm | width | aux init | aux held-out agreement / KL | final accuracy | steps to random's final accuracy |",
        "| --- | --- | --- | --- | --- | --- |"]
for width in ("w128", "w64"):
    target = evals(out / f"{width}-random")[-1]["eval"]["accuracy"]
    for run in sorted(out.glob(f"{width}-*")):
        if not (run / "metrics.jsonl").is_file():
            continue
        e = evals(run)
        hit = next((r["step"] for r in e if r["eval"]["accuracy"] >= target), "never")
        parts = run.name.split("-")
        distil = "—"
        if len(parts) == 3:
            method, init = parts[1], parts[2]
            gene = {("w128", "random"): f"{method}", ("w128", "fit"): f"{method}-initfit"}.get(
                (width, init), f"{method}-{width}-{init}")
            d = card(f"vit-fashion-{gene}") if gene != method else None
            if d is None and gene == method:
                d = json.loads((out.parent / f"aux-{method}" / "gene.json").read_text())["diagnostics"]["distill"]
            distil = f"{d['held_out']['agreement']:.3f} / {d['held_out']['kl']:.3f}"
        rows.append(f"| {run.name} | {width[1:]} | {parts[2] if len(parts) == 3 else '—'} | {distil} | {e[-1]['eval']['accuracy']:.4f} | {hit} |")
(out / "table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
