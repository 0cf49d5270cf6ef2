#!/usr/bin/env bash
# CrowdSec's own Local API on the same workloads as bench/lapi.sh, for the side-by-side
# table in BENCHMARKS.md: CrowdSec (Debian's 1.4.6, installed by
# ../shared/bench/install_peers.sh) run as LAPI only (-no-cs -no-capi) with a private
# config and SQLite database (WAL) in a temporary directory on 127.0.0.1:28080; the
# decisions imported with `cscli decisions import`; the same wrk script and startup pull.
#
#   bench/lapi_crowdsec.sh [N_STREAM] [N_LOOKUP]      defaults 1000000 100000
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N_STREAM=${1:-1000000}
N_LOOKUP=${2:-100000}
command -v crowdsec >/dev/null || { echo "crowdsec missing: ../shared/bench/install_peers.sh" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }
WORK=$(mktemp -d /tmp/crowdsec-lapi.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
python3 - "$WORK" <<'PY'
import sys
w = sys.argv[1]
s = open('/etc/crowdsec/config.yaml').read()
for a, b in [('daemonize: true', 'daemonize: false'), ('log_dir: /var/log/', f'log_dir: {w}/'),
             ('db_path: /var/lib/crowdsec/data/crowdsec.db', f'db_path: {w}/crowdsec.db\n  use_wal: true'),
             ('max_items: 5000', 'max_items: 10000000'),
             ('credentials_path: /etc/crowdsec/local_api_credentials.yaml', f'credentials_path: {w}/creds.yaml'),
             ('listen_uri: 127.0.0.1:8080', 'listen_uri: 127.0.0.1:28080'),
             ('prometheus:\n  enabled: true', 'prometheus:\n  enabled: false')]:
    s = s.replace(a, b)
open(f'{w}/config.yaml', 'w').write(s)
PY
CS="cscli -c $WORK/config.yaml"
$CS machines add bench --auto --force -f "$WORK/creds.yaml" >/dev/null 2>&1
sed -i 's#url: .*#url: http://127.0.0.1:28080#' "$WORK/creds.yaml"
csv() { python3 -c "
import sys
a, b = int(sys.argv[1]), int(sys.argv[2])
print('duration,scope,value')
for i in range(a, b):
    v = (11 << 24) + i * 7
    print(f'24h,ip,{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}')
" "$1" "$2"; }
crowdsec -c "$WORK/config.yaml" -no-cs -no-capi > "$WORK/out.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:28080/health >/dev/null && break; sleep 0.1; done
KEY=$($CS bouncers add bench -o raw)
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$PID/status"; }
echo "## CrowdSec $(crowdsec -version 2>&1 | sed -n 's/.*version: \(v[0-9.]*\).*/\1/p' | head -1) Local API ($(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg))"
csv 0 "$N_LOOKUP" > "$WORK/a.csv"
t0=$(date +%s.%N); $CS decisions import -i "$WORK/a.csv" >/dev/null 2>&1; t1=$(date +%s.%N)
echo; echo "import of $N_LOOKUP: $(python3 -c "print(round($t1 - $t0, 1))") s"
echo; echo "### Live lookups with $N_LOOKUP active decisions (wrk -t2 -c64 -d10s, bench/lookup.lua)"; echo '```'
KEY=$KEY N=$N_LOOKUP wrk -t2 -c64 -d10s --latency -s "$HERE/lookup.lua" http://127.0.0.1:28080 | grep -E "Requests/sec|50%|90%|99%|requests in"
echo '```'
csv "$N_LOOKUP" "$N_STREAM" > "$WORK/b.csv"
t0=$(date +%s.%N); $CS decisions import -i "$WORK/b.csv" >/dev/null 2>&1; t1=$(date +%s.%N)
echo; echo "### Stream startup with $N_STREAM active decisions (import of the rest: $(python3 -c "print(round($t1 - $t0, 1))") s)"
for i in 1 2 3; do
  curl -s -o /dev/null -w "pull $i: %{time_total} s, %{size_download} bytes\n" -H "X-Api-Key: $KEY" \
    "http://127.0.0.1:28080/v1/decisions/stream?startup=true"
done
echo "CrowdSec peak RSS: $(hwm_mb) MB"
