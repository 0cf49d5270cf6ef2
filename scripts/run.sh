#!/usr/bin/env bash
# Builds Palisade (installing the build dependencies first) and runs the node on its
# built-in defaults, or with the arguments given: `scripts/run.sh`, `scripts/run.sh --config FILE run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
cargo build --release --locked -p palisade
[ $# -gt 0 ] || set -- run
exec "$CARGO_TARGET_DIR/release/palisade" "$@"
