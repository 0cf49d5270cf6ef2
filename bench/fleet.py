#!/usr/bin/env python3
"""Fleet benchmarks with real `palisade run` processes on loopback.

  bench/fleet.py propagation NODES [ATTACKS]
      NODES nodes join one fleet; ATTACKS times (default 40), six sshd failures from a
      fresh address are appended to a random node's auth.log. Delay = the moment a
      receiving node logs its `origin=fleet` decision minus the moment the origin node
      logged its own decision (the overflow), both from the nodes' log timestamps (one
      host, one clock). Prints p50/p90/p99/max over every (attack, receiver) pair.

  bench/fleet.py throughput SIGNALS
      Two nodes. SIGNALS nginx lines carrying a scanner's user agent, each from a new
      address, are appended to node A's access.log at once: each line overflows the
      trigger scenario palisade/http-bad-user-agent, so A bans, signs and gossips one
      signal per line, and B verifies each and bans with origin fleet. Reports signals/s
      (first to last arrival at B), CPU seconds and peak RSS of both processes, and the
      bytes A sent per signal delivered to B: gossip frames, and UDP (QUIC included).

Both print one JSON object. The binary: $PALISADE, else
$CARGO_TARGET_DIR/release/palisade (default ~/.cache/palisade-target).
"""
import datetime
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/palisade-target"))
BIN = os.environ.get("PALISADE", os.path.join(TARGET, "release", "palisade"))
STAMP = re.compile(r"^(\S+Z)\s")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, root, index, extra=""):
        self.dir = os.path.join(root, f"n{index}")
        os.makedirs(os.path.join(self.dir, "logs"))
        self.gossip = f"127.0.0.1:{free_port()}"
        self.config = os.path.join(self.dir, "config.toml")
        with open(self.config, "w") as f:
            f.write(
                f'data_dir = "{self.dir}/data"\n'
                f"[[ingest.files]]\npaths = [\"{self.dir}/logs/auth.log\"]\ntype = \"syslog\"\nstart_at = \"beginning\"\n"
                f"[[ingest.files]]\npaths = [\"{self.dir}/logs/access.log\"]\ntype = \"nginx\"\nstart_at = \"beginning\"\n"
                "[allowlist]\nhost_addresses = false\n[api]\nenabled = false\n"
                '[metrics]\nlisten = "127.0.0.1:0"\n'
                f'[gossip]\nlisten = "{self.gossip}"\n{extra}\n'
            )
        self.log = os.path.join(self.dir, "node.log")
        self.proc = subprocess.Popen(
            [BIN, "--config", self.config, "run"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
        )

    def wait_started(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            if "palisade node started" in self.text() and os.path.exists(f"{self.dir}/data/admin.sock"):
                return
            time.sleep(0.05)
        raise SystemExit(f"node {self.dir} did not start:\n{self.text()}")

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def cli(self, *args):
        out = subprocess.run([BIN, "--config", self.config, *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"palisade {args}: {out.stderr}")
        return out.stdout

    def alive_peers(self):
        return sum(1 for p in json.loads(self.cli("node", "peers", "--json")) if p["state"] == "alive")

    def metrics(self):
        addr = re.findall(r"metrics endpoint listening addr=(\S+)", self.text())[-1]
        return urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()

    def metric(self, name):
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def proc_stats(self):
        """CPU seconds (user+system) and peak RSS (MB) of the node process."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{self.proc.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        return cpu, hwm / 1024

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def form_fleet(nodes):
    for n in nodes:
        n.wait_started()
    nodes[0].cli("fleet", "init")
    token = json.loads(nodes[0].cli("fleet", "invite", "--ttl", "1h", "--json"))["token"]
    for n in nodes[1:]:
        n.cli("node", "join", nodes[0].gossip, "--token", token)
    deadline = time.time() + 120
    while time.time() < deadline:
        if all(n.alive_peers() == len(nodes) - 1 for n in nodes):
            return
        time.sleep(0.5)
    raise SystemExit("the fleet did not form a full mesh in 120 s")


def stamp(line):
    m = STAMP.match(line)
    return datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp() if m else None


def decision_times(node):
    """value -> (origin, time of the decision log line)."""
    out = {}
    for line in node.text().splitlines():
        if " decision " not in line or "value=" not in line:
            continue
        value = re.search(r"value=(\S+)", line).group(1)
        origin = re.search(r"origin=(\S+)", line).group(1)
        out.setdefault(value, (origin, stamp(line)))
    return out


def ssh_lines(ip, port0):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%b %e %H:%M:%S")
    return "".join(
        f"{now} bench sshd[{4000 + i}]: Failed password for invalid user admin{i} from {ip} port {port0 + i} ssh2\n"
        for i in range(6)
    )


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def propagation(count, attacks):
    root = tempfile.mkdtemp(prefix="palisade-fleet-")
    nodes = [Node(root, i) for i in range(count)]
    try:
        form_fleet(nodes)
        rng = random.Random(1)
        ips = [f"198.18.{k // 250}.{k % 250 + 1}" for k in range(attacks)]
        origins = []
        for k, ip in enumerate(ips):
            origin = rng.randrange(count)
            origins.append(origin)
            with open(os.path.join(nodes[origin].dir, "logs", "auth.log"), "a") as f:
                f.write(ssh_lines(ip, 40000 + k * 10))
            time.sleep(0.25)
        deadline = time.time() + 60
        while time.time() < deadline:
            seen = [decision_times(n) for n in nodes]
            if all(ip in s for s in seen for ip in ips):
                break
            time.sleep(0.5)
        delays, missing = [], 0
        for ip, origin in zip(ips, origins):
            start = seen[origin].get(ip)
            for i, s in enumerate(seen):
                if i == origin:
                    continue
                got = s.get(ip)
                if not start or not got or got[0] != "fleet":
                    missing += 1
                    continue
                delays.append((got[1] - start[1]) * 1000)
        return {
            "benchmark": "fleet propagation", "nodes": count, "attacks": attacks,
            "deliveries": len(delays), "missing": missing,
            "p50_ms": round(percentile(delays, 50), 2), "p90_ms": round(percentile(delays, 90), 2),
            "p99_ms": round(percentile(delays, 99), 2), "max_ms": round(max(delays), 2),
            "load_avg": open("/proc/loadavg").read().split()[:3],
        }
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)


def throughput(signals):
    root = tempfile.mkdtemp(prefix="palisade-fleet-")
    # Every signal is kept for repair, and the on-sight list is not involved (sealed).
    extra = f"[gossip.engine]\nretain_per_origin = {max(signals, 100000)}\n"
    nodes = [Node(root, i, extra) for i in range(2)]
    a, b = nodes
    try:
        form_fleet(nodes)
        cpu0 = [n.proc_stats()[0] for n in nodes]
        bytes0 = a.metric('palisade_gossip_bytes_total{direction="out"}')
        udp0 = a.metric('palisade_gossip_udp_bytes_total{direction="out"}')
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
        path = os.path.join(a.dir, "logs", "access.log")
        with open(path + ".tmp", "w") as f:
            for k in range(signals):
                ip = f"11.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}"
                f.write(f'{ip} - - [{now}] "GET /?id={k} HTTP/1.1" 200 512 "-" "sqlmap/1.7.2#stable (https://sqlmap.org)"\n')
        start = time.time()
        with open(path, "a") as out, open(path + ".tmp") as src:
            shutil.copyfileobj(src, out)
        first = None
        deadline = time.time() + 600
        key = 'palisade_gossip_signals_total{event="delivered"}'
        while time.time() < deadline:
            got = b.metric(key)
            if got and first is None:
                first = time.time()
            if got >= signals:
                break
            time.sleep(0.05)
        end = time.time()
        delivered = b.metric(key)
        stats = [n.proc_stats() for n in nodes]
        bytes_out = a.metric('palisade_gossip_bytes_total{direction="out"}') - bytes0
        udp_out = a.metric('palisade_gossip_udp_bytes_total{direction="out"}') - udp0
        decided = b.metric('palisade_fleet_signals_received_total{outcome="ban"}')
        return {
            "benchmark": "fleet throughput", "signals": signals, "delivered": int(delivered),
            "banned_on_b": int(decided),
            "seconds_append_to_last": round(end - start, 2),
            "signals_per_s": round(delivered / (end - start), 0),
            "cpu_s": {"a": round(stats[0][0] - cpu0[0], 2), "b": round(stats[1][0] - cpu0[1], 2)},
            "peak_rss_mb": {"a": round(stats[0][1], 1), "b": round(stats[1][1], 1)},
            "gossip_bytes_per_signal": round(bytes_out / max(delivered, 1), 1),
            "udp_bytes_per_signal": round(udp_out / max(delivered, 1), 1),
            "load_avg": open("/proc/loadavg").read().split()[:3],
        }
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("propagation", "throughput"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "propagation":
        result = propagation(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 40)
    else:
        result = throughput(int(sys.argv[2]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
