"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import re
import time
from collections import Counter

from spagate.gate.demo import LabGate


def spa_verdicts(gate: LabGate) -> dict[str, int]:
    """The daemon's own verdict counts, as `spagate status` prints them."""
    out = gate.spagate("status").stdout
    m = re.search(r"^spa verdicts: (.*)$", out, re.M)
    assert m, out
    return {k: int(v) for k, v in re.findall(r"([\w-]+)=(\d+)", m.group(1))}


def xdp_counters(gate: LabGate) -> dict[str, int]:
    out = gate.spagate("status").stdout
    body = out.split("counters:", 1)[1]
    # status prints only non-zero counters: a Counter reads the others as 0
    return Counter({k: int(v) for k, v in re.findall(r"^\s+(\w+)\s+(\d+)$", body, re.M)})


def wait_for(pred, timeout: float = 5.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got or time.monotonic() > end:
            return got
        time.sleep(step)
