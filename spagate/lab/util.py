"""Small helpers of the tests and benches: waiting, counter deltas, what status reports."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path


def process_cpu_ns(pid: int) -> int:
    """CPU time every thread of process pid has used so far, ns (/proc/PID/task/*/schedstat)."""
    return sum(int(t.read_text().split()[0]) for t in Path(f"/proc/{pid}/task").glob("*/schedstat"))


def wait_for(pred, timeout: float = 5.0, step: float = 0.05):
    """Call pred until it returns something true or timeout passes; return its last value."""
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got or time.monotonic() > end:
            return got
        time.sleep(step)


def counter_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """The counters that moved between two readings, by how much."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def run_counted(gate, packet: bytes, ifindex: int = 0):
    """Run a loaded Gate on one packet (BPF_PROG_TEST_RUN): (TestRun, counters that moved)."""
    before = gate.maps.counters()
    res = gate.test_run(packet, ifindex=ifindex)
    return res, counter_delta(before, gate.maps.counters())


def spa_verdicts(gate) -> dict[str, int]:
    """The daemon's own verdict counts, as `spagate status` prints them (gate: LabGate)."""
    out = gate.spagate("status").stdout
    m = re.search(r"^spa verdicts: (.*)$", out, re.M)
    assert m, out
    return {k: int(v) for k, v in re.findall(r"([\w-]+)=(\d+)", m.group(1))}


def xdp_counters(gate) -> Counter:
    """The kernel's counters, as `spagate status` prints them (gate: LabGate)."""
    out = gate.spagate("status").stdout
    body = out.split("counters:", 1)[1]
    # status prints only non-zero counters: a Counter reads the others as 0
    return Counter({k: int(v) for k, v in re.findall(r"^\s+(\w+)\s+(\d+)$", body, re.M)})
