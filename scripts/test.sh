#!/usr/bin/env bash
# The whole test suite: fetch the pinned fixtures, then run every test (unit, integration, doc).
# This is the README's test command, and exactly what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-fixtures.sh
export LGREG_FIXTURES="${LGREG_FIXTURES:-$PWD/target/fixtures}"
cargo test --locked --all-targets
cargo test --locked --doc
