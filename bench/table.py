#!/usr/bin/env python3
"""Prints the results of bench/run.sh (DIR/results/<tool>.json) as one markdown table."""
import json
import os
import sys

d = sys.argv[1]
rows = []
for tool in ("palisade", "crowdsec", "fail2ban"):
    path = os.path.join(d, "results", f"{tool}.json")
    if os.path.exists(path):
        rows.append(json.load(open(path)))
print("| tool | lines consumed | cpu s | wall s | lines / cpu s | peak RSS MB | attackers caught | benign flagged |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    caught = f'{r["true_pos"]}/{r["true_pos"] + r["false_neg"]}'
    done = f'{r["lines"]:,}' + ("" if r.get("complete", True) else " (budget hit)")
    print(f'| {r["tool"]} | {done} | {r["cpu_s"]:.2f} | {r["wall_s"]:.2f} | {r["lines_per_cpu_s"]:,.0f} | '
          f'{r["max_rss_mb"]:.1f} | {caught} | {r["false_pos"]} |')
