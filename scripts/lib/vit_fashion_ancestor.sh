# Sourced by the ViT experiment scripts: the ancestor they share, a ViT (width 128, 12 layers,
# 4 heads, patch 7, mean pooling) trained by `lgreg adapt` from seeded random weights on
# Fashion-MNIST, in $work/ancestor (skipped when it is there), and its accuracy on the 10,000
# Fashion-MNIST test images in $work/ancestor.txt. Needs $lgreg, $work and $q set (builds
# examples/random_vit when the ancestor is missing); ANCESTOR_LIMIT (20000 images),
# ANCESTOR_EPOCHS (1).
fashion=target/fixtures/fashion-mnist/train-images-idx3-ubyte.gz
fashion_test=target/fixtures/fashion-mnist/t10k-images-idx3-ubyte.gz
last_field() { tail -n 1 | python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
if [ ! -f "$work/ancestor/model.safetensors" ]; then
  cargo build --release --locked --example random_vit
  target/release/examples/random_vit "$work/ancestor-init" 28 7 1 128 12 4 10 0 >/dev/null
  "$lgreg" adapt "$work/ancestor-init" --data "$fashion" --limit "${ANCESTOR_LIMIT:-20000}" \
    --epochs "${ANCESTOR_EPOCHS:-1}" --lr 1e-3 --batch-size 64 --warmup 30 --seed 0 \
    --val-fraction 0.05 -o "$work/ancestor" --force "${q[@]}" >/dev/null
fi
if [ ! -f "$work/ancestor.txt" ]; then
  accuracy=$("$lgreg" eval "$work/ancestor" --data "$fashion_test" "${q[@]}" | last_field '["accuracy"]')
  echo "ancestor: Fashion-MNIST test accuracy $accuracy" > "$work/ancestor.txt"
fi
cat "$work/ancestor.txt" >&2
