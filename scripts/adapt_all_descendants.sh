#!/usr/bin/env bash
# Run every descendant config in configs/ (or those matching a pattern): each spawns its
# descendant from the gene its ancestor config published (run scripts/train_all_ancestors.sh
# first) and fine-tunes it. Extra arguments go to every run as `--set` overrides.
# Every config runs; the script exits 1 at the end, naming those that failed.
# Usage: scripts/adapt_all_descendants.sh [PATTERN] [SECTION.KEY=VALUE ...]
#   scripts/adapt_all_descendants.sh '*_llama' TRAIN.STEPS=20 DATASET.LIMIT=200
set -euo pipefail
cd "$(dirname "$0")/.."
pattern="${1:-*}"
shift || true
lgreg="${LGREG:-target/release/lgreg}"
[ -x "$lgreg" ] || cargo build --release --locked -q
sets=()
[ "$#" -gt 0 ] && sets=(--set "$@")
shopt -s nullglob
configs=(configs/descendant_${pattern}.yaml)
[ "${#configs[@]}" -gt 0 ] || { echo "no config matches configs/descendant_${pattern}.yaml" >&2; exit 1; }
failed=()
for config in "${configs[@]}"; do
  echo "== $config" >&2
  "$lgreg" adapt --config "$config" "${sets[@]}" || failed+=("$config")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
