#!/usr/bin/env bash
# Local API benchmarks on a real node (RocksDB in a temporary directory):
#   1. GET /v1/decisions/stream?startup=true with N_STREAM active decisions: time and the
#      node's peak RSS (goal: under 2 s and 300 MB for 1,000,000);
#   2. GET /v1/decisions?ip=... live lookups with N_LOOKUP active decisions, from wrk
#      (2 threads, 64 connections, random addresses, half of them banned): requests per
#      second and latency percentiles (goal: above 20,000 req/s on 2 cores).
# Prints a markdown report. Needs curl and wrk (apt-get install wrk).
#
#   bench/lapi.sh [N_STREAM] [N_LOOKUP]      defaults 1000000 100000
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N_STREAM=${1:-1000000}
N_LOOKUP=${2:-100000}
BIN=${PALISADE:-${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}/release/palisade}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p palisade ($BIN missing)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }
WORK=$(mktemp -d /tmp/palisade-lapi.XXXXXX)
PORT=${PORT:-18080}
NODE=
cleanup() { [ -n "$NODE" ] && kill "$NODE" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# N distinct public-looking IPv4 addresses (from 11.0.0.0 up), one per line.
ips() { python3 -c "
import sys
n = int(sys.argv[1])
for i in range(n):
    v = (11 << 24) + i * 7
    print(f'{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}')
" "$1"; }

start_node() {
  cat > "$WORK/config.toml" <<CONF
data_dir = "$WORK/data"
[log]
level = "warn"
[ingest]
files = []
[allowlist]
host_addresses = false
[api]
listen = "127.0.0.1:$PORT"
[metrics]
enabled = false
CONF
  rm -rf "$WORK/data"
  "$BIN" --config "$WORK/config.toml" run 2> "$WORK/node.log" &
  NODE=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return; sleep 0.1; done
  echo "node did not start" >&2; cat "$WORK/node.log" >&2; exit 1
}
stop_node() { kill "$NODE"; wait "$NODE" 2>/dev/null || true; NODE=; }
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$NODE/status"; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$NODE/status"; }

echo "## Local API ($(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo

# 1. Stream startup.
start_node
ips "$N_STREAM" > "$WORK/stream.txt"
t0=$(date +%s.%N)
"$BIN" --config "$WORK/config.toml" decisions import "$WORK/stream.txt" --duration 24h > /dev/null
t1=$(date +%s.%N)
KEY=$("$BIN" --config "$WORK/config.toml" bouncers add bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
rss_before=$(rss_mb)
for i in 1 2 3; do
  curl -s -o "$WORK/stream.json" -w '%{time_total} %{size_download}\n' -H "X-Api-Key: $KEY" \
    "http://127.0.0.1:$PORT/v1/decisions/stream?startup=true" >> "$WORK/stream_times.txt"
done
count=$(python3 -c "import json; print(len(json.load(open('$WORK/stream.json'))['new'] or []))")
echo "### Stream startup: $N_STREAM active decisions"
echo
echo "| import (s) | RSS before pull (MB) | pull 1 (s) | pull 2 (s) | pull 3 (s) | body (MB) | decisions in body | peak RSS (MB) |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
read -r a sz < <(sed -n 1p "$WORK/stream_times.txt"); read -r b _ < <(sed -n 2p "$WORK/stream_times.txt"); read -r c _ < <(sed -n 3p "$WORK/stream_times.txt")
python3 -c "import sys; a=sys.argv; print(f'| {float(a[2])-float(a[1]):.1f} | {a[3]} | {float(a[4]):.2f} | {float(a[5]):.2f} | {float(a[6]):.2f} | {int(a[7])/1048576:.1f} | {a[8]} | {a[9]} |\\n')" "$t0" "$t1" "$rss_before" "$a" "$b" "$c" "$sz" "$count" "$(hwm_mb)"
stop_node

# 2. Live lookups.
start_node
ips "$N_LOOKUP" > "$WORK/lookup.txt"
"$BIN" --config "$WORK/config.toml" decisions import "$WORK/lookup.txt" --duration 24h > /dev/null
KEY=$("$BIN" --config "$WORK/config.toml" bouncers add bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
echo "### Live lookups: GET /v1/decisions?ip=... with $N_LOOKUP active decisions (wrk -t2 -c64 -d10s, bench/lookup.lua)"
echo
echo '```'
KEY=$KEY N=$N_LOOKUP wrk -t2 -c64 -d10s --latency -s "$HERE/lookup.lua" "http://127.0.0.1:$PORT" | grep -E "Requests/sec|Latency|50%|90%|99%|requests in|Non-2xx"
echo '```'
echo "node peak RSS: $(hwm_mb) MB"
stop_node
