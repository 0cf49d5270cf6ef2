#!/usr/bin/env bash
# The replay benchmark of BENCHMARKS.md, side by side with CrowdSec and fail2ban in one run:
# generates the workload (if missing), runs the peers (../shared/bench/peers.sh, installing
# them first if needed), runs Palisade the same way, and prints a markdown table.
#
#   bench/run.sh [LINES] [SEED]        default 1000000 lines, seed 1, in /tmp/palisade-bench/<LINES>
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
LINES=${1:-1000000}
SEED=${2:-1}
DIR=${BENCH_DIR:-/tmp/palisade-bench/$LINES}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}
(cd "$ROOT" && cargo build --release --locked -p palisade)
[ -f "$DIR/truth.json" ] || python3 "$SHARED/bench/gen_workload.py" --lines "$LINES" --seed "$SEED" --out "$DIR"
if [ -z "${SKIP_PEERS:-}" ]; then
  bash "$SHARED/bench/install_peers.sh"
  bash "$SHARED/bench/peers.sh" "$DIR"
fi
"$HERE/replay.sh" "$DIR"
python3 "$HERE/table.py" "$DIR"
