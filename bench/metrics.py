"""What the Prometheus exporter costs the worker: VmRSS without and with `metrics =`, side by
side in one run, and the worker's CPU time per scrape.

A real gate (LabGate) runs twice on one lab: first without metrics, then with
`metrics = 127.0.0.1:9848`. Each time: VmRSS of the worker after start, after 2,000 accepted
knocks, and (with metrics) after 200 scrapes; CPU per scrape from /proc/PID/stat.

    sudo .venv/bin/python bench/metrics.py [--knocks 2000] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from spagate.lab.gate import LabGate
from spagate.lab.netns import Lab
from spagate.lab.util import wait_for

SCRAPE = """import sys, urllib.request
for _ in range(int(sys.argv[1])):
    urllib.request.urlopen("http://127.0.0.1:9848/metrics", timeout=5).read()
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(gate: LabGate, metrics: bool, knocks: int, scrapes: int) -> dict:
    gate.configure("open-seconds = 600\nrate = 100000/s burst 100000\nspa-budget = 100000\n"
                   + ("metrics = 127.0.0.1:9848\n" if metrics else ""))  # fmt: skip
    gate.start()
    try:
        st = json.loads(gate.spagate("status", "--json").stdout)
        pid = st["worker_pid"]
        time.sleep(1.0)
        out = {"start": rss_kib(pid)}
        k = gate.knocker()
        k.ask(f"many {knocks} 1000 198.18.0.0 quiet")
        k.close()
        wait_for(lambda: json.loads(gate.spagate("status", "--json").stdout)["spa"]
                 .get("accepted", 0) >= knocks, timeout=30)  # fmt: skip
        out["knocks"] = rss_kib(pid)
        if metrics:
            before = cpu_s(pid)
            r = gate.lab.run("gate", [sys.executable, "-c", SCRAPE, str(scrapes)], timeout=120)
            assert r.returncode == 0, r.stderr
            out["cpu_per_scrape_ms"] = (cpu_s(pid) - before) / scrapes * 1000
            out["scrapes"] = rss_kib(pid)
        return out
    finally:
        gate.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--knocks", type=int, default=2000)
    ap.add_argument("--scrapes", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spagate-bench-"))
    with Lab(("gate", "client")) as lab:
        gate = LabGate(lab, work)
        try:
            off = one(gate, False, args.knocks, args.scrapes)
            on = one(gate, True, args.knocks, args.scrapes)
        finally:
            gate.cleanup()
            shutil.rmtree(work, ignore_errors=True)
    mib = lambda k: f"{k / 1024:.1f} MiB"  # noqa: E731
    print(f"worker VmRSS after start: {mib(off['start'])} without metrics, "
          f"{mib(on['start'])} with (+{mib(on['start'] - off['start'])})")  # fmt: skip
    print(
        f"worker VmRSS after {args.knocks:,} knocks: {mib(off['knocks'])} without, "
        f"{mib(on['knocks'])} with; after {args.scrapes} scrapes: {mib(on['scrapes'])}"
    )
    print(f"worker CPU per scrape: {on['cpu_per_scrape_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
