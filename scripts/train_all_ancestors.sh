#!/usr/bin/env bash
# Run every ancestor config in configs/ (or those matching a pattern): each makes its gene and
# publishes it to the local registry. Extra arguments go to every run as `--set` overrides.
# Every config runs; the script exits 1 at the end, naming those that failed.
# Usage: scripts/train_all_ancestors.sh [PATTERN] [SECTION.KEY=VALUE ...]
#   scripts/train_all_ancestors.sh '*_llama'            # the llama ancestors only
#   LGREG=target/release/lgreg scripts/train_all_ancestors.sh '*' SEED=3
set -euo pipefail
cd "$(dirname "$0")/.."
pattern="${1:-*}"
shift || true
lgreg="${LGREG:-target/release/lgreg}"
[ -x "$lgreg" ] || cargo build --release --locked -q
scripts/fetch-fixtures.sh >/dev/null
sets=()
[ "$#" -gt 0 ] && sets=(--set "$@")
shopt -s nullglob
configs=(configs/ancestor_${pattern}.yaml)
[ "${#configs[@]}" -gt 0 ] || { echo "no config matches configs/ancestor_${pattern}.yaml" >&2; exit 1; }
failed=()
for config in "${configs[@]}"; do
  echo "== $config" >&2
  "$lgreg" train --config "$config" "${sets[@]}" || failed+=("$config")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
