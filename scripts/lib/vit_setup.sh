# Sourced first by the ViT experiment scripts (from the repository root): the fixtures, a release
# build of lgreg (unless LGREG_BIN names one), and the shared settings: $lgreg, $work (WORK,
# default target/tleg-vit), LGREG_HOME in it, $q (quiet JSON output) and has_gene NAME:VERSION.
scripts/fetch-fixtures.sh
[ -n "${LGREG_BIN:-}" ] || cargo build --release --locked --bin lgreg
lgreg="${LGREG_BIN:-$PWD/target/release/lgreg}"
work="${WORK:-$PWD/target/tleg-vit}"
mkdir -p "$work"
export LGREG_HOME="${LGREG_HOME:-$work/lgreg-home}"
q=(--no-progress --json)
has_gene() { "$lgreg" show "$1" --json >/dev/null 2>&1; }
