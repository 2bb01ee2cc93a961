"""SPA latency: from a valid packet leaving the client to its allow entry being in the map.

A real daemon guards eth0 of a lab namespace; the client sends N valid packets, each opening a
different (third-party) address, paced below the global budget. CLOCK_MONOTONIC is one clock for
every namespace, and the daemon writes expiry = now + window, so the instant each entry was
written is expiry - window: no polling, no clock skew. Prints p50 / p99 / max.

    sudo .venv/bin/python bench/spa_latency.py [--count 10000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

from spagate.gate.kernel.maps import GateMaps
from spagate.lab.gate import LabGate
from spagate.lab.netns import Lab

WINDOW_S = 600


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=1000.0, help="packets per second")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spagate-bench-"))
    with Lab(("gate", "client")) as lab:
        gate = LabGate(lab, work)
        try:
            # One client opens many addresses: lift the per-source bucket for this measurement.
            gate.configure(
                f"open-seconds = {WINDOW_S}\nrate = 100000/s burst 100000\nspa-budget = 100000\n"
            )
            gate.start()
            knocker = gate.knocker()
            sent = json.loads(knocker.ask(f"many {args.count} {args.rate} 198.18.0.0"))
            knocker.close()
            time.sleep(1)
            with GateMaps.from_pin_dir(gate.pin_dir) as maps:
                written = {str(e.ip): e.expires_ns - WINDOW_S * 10**9 for e in maps.allowed()}
        finally:
            gate.cleanup()
            shutil.rmtree(work, ignore_errors=True)
    lat_us = sorted(
        (written[ip] - t) / 1000 for ip, t in sent.items() if ip in written and IPv4Address(ip)
    )
    missing = len(sent) - len(lat_us)
    if not lat_us:
        print(f"no packet opened the gate ({len(sent)} sent, {len(written)} entries)")
        print("\n".join(gate.log[-5:]))
        return 1
    q = statistics.quantiles(lat_us, n=100)
    print(f"SPA latency, packet sent -> allow entry written ({len(lat_us)} packets at "
          f"{args.rate:g}/s, {missing} missing)")  # fmt: skip
    print(f"  p50 {q[49]:8.1f} us   p99 {q[98]:8.1f} us   max {lat_us[-1]:8.1f} us")
    print(f"  aim: p99 under 1000 us -> {'met' if q[98] < 1000 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
