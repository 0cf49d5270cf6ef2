#!/usr/bin/env python3
"""Decision to firewall: time from a burst of sshd failures appended to a watched log file
to the attacker's address being in the kernel's nftables set, through the built-in
bouncer, over N attacks from N addresses. The node runs in a network namespace made for
the run (removed at the end); `nft monitor` in that namespace reports each element as the
kernel adds it. Needs root, nft and ip.

    bench/nft_latency.py [N]            (default 1000)
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/palisade-target"))
BIN = os.environ.get("PALISADE", os.path.join(TARGET, "release", "palisade"))
NS = f"palbench{os.getpid() % 100000}"


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def main():
    if not os.path.exists(BIN):
        sys.exit(f"build first: cargo build --release -p palisade ({BIN} missing)")
    work = tempfile.mkdtemp(prefix="palisade-nft.")
    log = os.path.join(work, "auth.log")
    open(log, "w").close()
    with open(os.path.join(work, "config.toml"), "w") as f:
        f.write(f'data_dir = "{work}/data"\n[log]\nlevel = "warn"\n'
                f'[[ingest.files]]\npaths = ["{log}"]\ntype = "syslog"\nstart_at = "beginning"\n'
                '[allowlist]\nhost_addresses = false\n[decisions]\nrepeat_factor = 1.0\n'
                '[api]\nlisten = "127.0.0.1:0"\n[metrics]\nenabled = false\n'
                '[bouncer.nftables]\nenabled = true\n')
    sh("ip", "netns", "add", NS)
    node = monitor = None
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        seen = {}
        cond = threading.Condition()
        monitor = subprocess.Popen(["ip", "netns", "exec", NS, "nft", "monitor", "elements"],
                                   stdout=subprocess.PIPE, text=True)

        def read_monitor():
            pattern = re.compile(r"add element inet palisade addr4 \{ ([0-9.]+)")
            for line in monitor.stdout:
                m = pattern.search(line)
                if m:
                    with cond:
                        seen.setdefault(m.group(1), time.monotonic())
                        cond.notify_all()

        threading.Thread(target=read_monitor, daemon=True).start()
        node = subprocess.Popen(["ip", "netns", "exec", NS, BIN, "--config", f"{work}/config.toml", "run"],
                                stderr=open(os.path.join(work, "node.log"), "w"))
        deadline = time.time() + 30
        while "table inet palisade" not in subprocess.run(
                ["ip", "netns", "exec", NS, "nft", "list", "tables"], capture_output=True, text=True).stdout:
            if time.time() > deadline:
                sys.exit("the node did not set up its table:\n" + open(os.path.join(work, "node.log")).read())
            time.sleep(0.1)
        time.sleep(0.5)
        latencies = []
        with open(log, "a") as f:
            for i in range(N):
                ip = f"198.18.{i // 250}.{i % 250 + 1}"
                stamp = time.strftime("%b %e %H:%M:%S")
                burst = "".join(f"{stamp} bench sshd[{4000 + k}]: Failed password for invalid user u{k} "
                                f"from {ip} port {40000 + k} ssh2\n" for k in range(6))
                t0 = time.monotonic()
                f.write(burst)
                f.flush()
                with cond:
                    if not cond.wait_for(lambda: ip in seen, timeout=10):
                        sys.exit(f"{ip} never reached the set:\n" + open(os.path.join(work, "node.log")).read())
                latencies.append(seen[ip] - t0)
                time.sleep(0.005)
        latencies.sort()
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
        rss = "?"
        try:
            with open(f"/proc/{node.pid}/status") as s:
                rss = next(l.split()[1] for l in s if l.startswith("VmHWM")) + " kB"
        except (OSError, StopIteration):
            pass
        load = open("/proc/loadavg").read().split()[:3]
        print(f"| attacks | p50 | p90 | p99 | max | node peak RSS | load average |")
        print(f"|---:|---:|---:|---:|---:|---:|---|")
        print(f"| {N} | {q(0.5):.2f} ms | {q(0.9):.2f} ms | {q(0.99):.2f} ms | {latencies[-1] * 1000:.2f} ms "
              f"| {rss} | {' '.join(load)} |")
    finally:
        if node:
            node.terminate()
            node.wait(timeout=20)
        if monitor:
            monitor.terminate()
        subprocess.run(["ip", "netns", "del", NS])
        shutil.rmtree(work, ignore_errors=True)


main()
