"""Fleet with real gates: knock-to-remote-open latency through a real three-member etcd
cluster, and the store traffic per knock.

Two real gates (lab namespaces gatea and gateb, `spagate attach` with `cluster =`) and three
etcd members (namespace store). A client sends N valid knocks to gate A, each opening another
(third-party) address, paced at --rate (spagate.lab.knocker). Each gate's allow map gives the
instant it wrote each window (expiry - window; CLOCK_MONOTONIC is one clock for every
namespace), the knocker the instant each knock left: local-open = A - sent, remote-open =
B - sent. Store traffic: etcd's own counters (/metrics of every member) before and after.

    sudo .venv/bin/python bench/fleet_gates.py [--count 1000] [--rate 100]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from spagate.gate.kernel.maps import GateMaps
from spagate.lab.etcd import EtcdCluster
from spagate.lab.gate import LabGate
from spagate.lab.netns import Lab
from spagate.protocol import generate_keypair

WINDOW_S = 600
METRICS = ("etcd_network_client_grpc_received_bytes_total",
           "etcd_network_client_grpc_sent_bytes_total")  # fmt: skip


def etcd_counters(lab: Lab, cluster: EtcdCluster) -> dict[str, float]:
    """Sum over the members of the traffic counters and the handled RPCs."""
    out: dict[str, float] = {}
    for url in cluster.endpoints:
        text = lab.run("store", ["curl", "-s", f"{url}/metrics"], mounts=False).stdout
        for name in METRICS:
            for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M):
                out[name] = out.get(name, 0) + float(v)
        for v in re.findall(r'^grpc_server_handled_total\{[^}]*grpc_type="unary"[^}]*\} (\S+)$',
                            text, re.M):  # fmt: skip
            out["unary_rpcs"] = out.get("unary_rpcs", 0) + float(v)
    return out


def written(gate: LabGate) -> dict[str, int]:
    with GateMaps.from_pin_dir(gate.pin_dir) as maps:
        return {str(e.ip): e.expires_ns - WINDOW_S * 10**9 for e in maps.allowed()}


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="knocks per second")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spagate-bench-"))
    keys = generate_keypair()
    with (
        Lab(("store", "gatea", "gateb", "client")) as lab,
        EtcdCluster(3, host=lab["store"].v4, wrap=tuple(lab.argv("store", [], False))) as c,
    ):
        eps = ",".join(u.removeprefix("http://") for u in c.endpoints)
        gates = []
        try:
            for name in ("gatea", "gateb"):
                (work / name).mkdir()
                g = LabGate(lab, work / name, keys=keys, host=name)
                g.configure(f"open-seconds = {WINDOW_S}\nrate = 100000/s burst 100000\n"
                            f"spa-budget = 100000\ncluster = etcd://{eps}\n"
                            f"cluster-name = bench\nfleet-member = {name}\n")  # fmt: skip
                g.start()
                gates.append(g)
            a, b = gates
            time.sleep(1.5)
            before = etcd_counters(lab, c)
            knocker = a.knocker()
            sent = json.loads(knocker.ask(f"many {args.count} {args.rate} 100.64.0.0"))
            knocker.close()
            time.sleep(2.0)
            after = etcd_counters(lab, c)
            at_a, at_b = written(a), written(b)
        finally:
            for g in gates:
                g.cleanup()
    shutil.rmtree(work, ignore_errors=True)
    local = [(at_a[ip] - t) / 1e6 for ip, t in sent.items() if ip in at_a]
    remote = [(at_b[ip] - t) / 1e6 for ip, t in sent.items() if ip in at_b]
    print(f"{args.count} knocks to gate A at {args.rate:g}/s; windows opened: A {len(local)}, "
          f"B {len(remote)}")  # fmt: skip
    if not remote:
        print("gate B opened nothing")
        return 1
    print(f"  local open  (knock -> A's allow entry): p50 {pct(local, 50):6.2f} ms  "
          f"p99 {pct(local, 99):6.2f} ms")  # fmt: skip
    print(f"  remote open (knock -> B's allow entry): p50 {pct(remote, 50):6.2f} ms  "
          f"p99 {pct(remote, 99):6.2f} ms  max {max(remote):6.2f} ms")  # fmt: skip
    n = args.count
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    rx = d.get(METRICS[0], 0) / n
    tx = d.get(METRICS[1], 0) / n
    rpcs = d.get("unary_rpcs", 0) / n
    print(
        f"  store traffic per knock (etcd's counters, all members): {rpcs:.2f} unary RPCs, "
        f"{rx:.0f} B received, {tx:.0f} B sent (with the watch streams to both gates)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
