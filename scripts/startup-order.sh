#!/usr/bin/env bash
# Regenerates node/link/startup.order: the functions an idle `palisade run` executes
# (start-up, database open, a few seconds of idling), which the linker lays out together
# (see node/build.rs). Run it after changes that move start-up code, then rebuild.
#
#   scripts/startup-order.sh            uses the release binary of CARGO_TARGET_DIR
# Needs valgrind.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PALISADE:-${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}/release/palisade}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p palisade ($BIN missing)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 1; }
WORK=$(mktemp -d /tmp/palisade-order.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
: > "$WORK/auth.log"
cat > "$WORK/config.toml" <<CONF
data_dir = "$WORK/data"
[log]
level = "warn"
[allowlist]
host_addresses = false
[[ingest.files]]
paths = ["$WORK/auth.log"]
type = "syslog"
start_at = "beginning"
CONF
valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file="$WORK/cg.out" \
  "$BIN" --config "$WORK/config.toml" run > "$WORK/node.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do [ -S "$WORK/data/admin.sock" ] && break; sleep 0.1; done
sleep 4
kill -TERM "$pid"
wait "$pid" || true
# Every function callgrind saw run (as caller or callee), kept when the binary has it.
python3 - "$WORK/cg.out" "$BIN" > "$ROOT/node/link/startup.order" <<'PY'
import re, subprocess, sys
ran = set()
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^c?fn=\(\d+\) (.+)$", line.rstrip("\n"))
    if m:
        ran.add(m[1])
nm = subprocess.run(["nm", sys.argv[2]], capture_output=True, text=True, check=True).stdout
have = {p[-1] for p in (l.split() for l in nm.splitlines()) if len(p) >= 3}
print("\n".join(sorted(ran & have)))
PY
echo "node/link/startup.order: $(wc -l < "$ROOT/node/link/startup.order") functions"
