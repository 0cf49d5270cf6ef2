#!/usr/bin/env bash
# Palisade's replay benchmark on a generated workload, measured exactly like the peers in
# ../shared/bench (two lanes in parallel: auth.log as syslog, access.log as nginx; each
# process under /usr/bin/time -v; scored per source IP against truth.json by the shared
# score.py). Prints one JSON line; details land in DIR/results/palisade*.json.
#
#   bench/replay.sh DIR              DIR made by gen_workload.py (see bench/run.sh)
#   PALISADE=/path/to/palisade bench/replay.sh DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$(cd "$1" && pwd)
BIN=${PALISADE:-${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}/release/palisade}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p palisade ($BIN missing)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time missing: apt-get install time" >&2; exit 1; }
WORK=$(mktemp -d /tmp/palisade-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/config.toml" <<CONF
data_dir = "$WORK/data"
[allowlist]
host_addresses = false
CONF

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
lane() { # lane NAME FILE TYPE
  local name=$1 file=$2 type=$3
  mkdir -p "$WORK/$name"
  /usr/bin/time -v -o "$WORK/$name/time.txt" \
    "$BIN" --config "$WORK/config.toml" replay --type "$type" --json --no-progress "$DIR/$file" \
    > "$WORK/$name/out.jsonl" 2> "$WORK/$name/err.txt"
  local lines
  lines=$(wc -l < "$DIR/$file")
  printf '{"lane": "%s", "name": "palisade replay --type %s", "file": "%s", "time_file": "%s", "lines_total": %s, "lines_processed": %s, "complete": true}\n' \
    "$name" "$type" "$file" "$WORK/$name/time.txt" "$lines" "$lines" > "$WORK/$name/run.json"
}
lane auth auth.log syslog &
p1=$!
lane web access.log nginx &
p2=$!
wait $p1 || { cat "$WORK/auth/err.txt" >&2; exit 1; }
wait $p2 || { cat "$WORK/web/err.txt" >&2; exit 1; }
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$WORK" > "$WORK/flagged.json" <<'PY'
import json, sys, os
work = sys.argv[1]
alerts, ips, first = 0, {}, {}
for lane in ("auth", "web"):
    for line in open(os.path.join(work, lane, "out.jsonl")):
        r = json.loads(line)
        if r.get("kind") != "alert" or not r.get("value"):
            continue
        alerts += 1
        ip = r["value"]
        ips.setdefault(ip, set()).add(r["scenario"])
        t = r["last_at"] // 1000
        first[ip] = min(t, first.get(ip, t))
print(json.dumps({"alerts": alerts, "ips": {k: sorted(v) for k, v in ips.items()}, "first_flag": first}))
PY
python3 - "$WORK" > "$WORK/runs.json" <<'PY'
import json, os, sys
work = sys.argv[1]
print(json.dumps([json.load(open(os.path.join(work, lane, "run.json"))) for lane in ("auth", "web")]))
PY
VERSION=$("$BIN" --version | awk '{print $2}')
cat > "$WORK/extra.json" <<EXTRA
{"palisade_version": "$VERSION", "loadavg_start": "$LOAD0", "loadavg_end": "$LOAD1",
 "mode": "time-machine replay: palisade replay --type TYPE --json LOG; lanes in parallel"}
EXTRA
mkdir -p "$DIR/results"
python3 "$SHARED/bench/score.py" --tool palisade --dir "$DIR" --flagged "$WORK/flagged.json" \
  --runs "$WORK/runs.json" --extra "$WORK/extra.json" \
  --detail "$DIR/results/palisade.detail.json" | tee "$DIR/results/palisade.json"
