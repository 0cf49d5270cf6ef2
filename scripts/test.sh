#!/usr/bin/env bash
# The whole test suite: installs what the tests need, checks formatting and lints, then
# runs every test (unit, integration with real processes and RocksDB, simulations).
# One build profile (release) serves the tests, the benchmarks and the binary, so
# RocksDB's C++ is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --release --locked --workspace --no-fail-fast
echo "== consensus targets on the full-size scenarios (slow, ~10 s)"
cargo test --release --locked -p palisade-sim --test targets -- --ignored
