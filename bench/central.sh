#!/usr/bin/env bash
# Central tier benchmarks: signals ingested per second, resident memory per million
# tracked hashed IPs, and the time from a listing to 30 subscribers holding it.
#
#   bench/central.sh [SENSORS] [SIGNALS_PER_SENSOR] [SUBSCRIBERS] [ROUNDS]
#
# Runs the release binary ($CARGO_TARGET_DIR or target/), a tier on 127.0.0.1 with a
# consensus that lists at once (full trust for new sensors, 3 networks, no novelty
# budget) so the measure is the tier's plumbing, not the trust warm-up; the ASN fixture
# maps 127.0.0.1-19 to 19 networks.
set -euo pipefail
SENSORS=${1:-4}
SIGNALS=${2:-250000}
SUBSCRIBERS=${3:-30}
ROUNDS=${4:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/palisade
[ -x "$BIN" ] || { echo "build first: cargo build --release -p palisade" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill $TIER 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

cat > "$WORK/central.toml" <<TOML
data_dir = "$WORK/data"
listen = "127.0.0.1:0"
asn_database = "$ROOT/node/tests/fixtures/asn/loopback.mmdb"
[limits]
sensor_signals_per_sec = 10000000.0
sensor_burst = 1000000000.0
[publish]
tick_ms = 1000
[log]
level = "warn,palisade::central=info"
[consensus]
new_sensor_trust = 1.0
min_groups = 3
list_threshold = 1.5
sensor_new_ips_per_hour = 1000000000.0
sensor_new_ip_burst = 1000000000.0
TOML
TOKEN=$("$BIN" --config "$WORK/central.toml" central tenant add bench --community --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
"$BIN" --config "$WORK/central.toml" central run 2> "$WORK/tier.log" &
TIER=$!
for _ in $(seq 100); do grep -q "central tier listening" "$WORK/tier.log" && break; sleep 0.1; done
ADDR=$(grep "central tier listening" "$WORK/tier.log" | sed 's/.*addr=\([^ ]*\).*/\1/')
rss() { awk '/VmRSS/ {print $2}' /proc/$TIER/status; }
cpu() { awk '{print $14 + $15}' /proc/$TIER/stat; }
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
RSS0=$(rss); CPU0=$(cpu)
"$BIN" central bench --mode ingest --tier "$ADDR" --token "$TOKEN" --data-dir "$WORK/bench" \
  --sensors "$SENSORS" --signals "$SIGNALS" | tee "$WORK/ingest.json"
sleep 2
RSS1=$(rss); CPU1=$(cpu)
TRACKED=$("$BIN" --config "$WORK/central.toml" central status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tracked_ips"])')
python3 - "$RSS0" "$RSS1" "$TRACKED" "$CPU0" "$CPU1" "$(getconf CLK_TCK)" <<'PY'
import sys
rss0, rss1, tracked, cpu0, cpu1, hz = map(int, sys.argv[1:])
print(f"tier RSS {rss0/1024:.1f} MB idle -> {rss1/1024:.1f} MB with {tracked} tracked hashed IPs: "
      f"{(rss1-rss0)/1024/max(tracked,1)*1e6:.0f} MB per million (RocksDB memtables and cache included)")
print(f"tier CPU during the ingest: {(cpu1-cpu0)/hz:.1f} s")
PY
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN" central bench --mode latency --tier "$ADDR" --token "$TOKEN" --data-dir "$WORK/latency" \
  --subscribers "$SUBSCRIBERS" --reporters 3 --rounds "$ROUNDS"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
