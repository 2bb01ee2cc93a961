"""The worker's CPU scheduling: real-time (SCHED_FIFO 1), so a knock never waits for a busy
CPU's next scheduler tick.

Measured (bench/admission.py): with the worker at SCHED_OTHER, even at nice -10, a knock that
arrives while another task holds the worker's CPU waits up to one tick (4 ms at HZ=250) before
the worker runs; at SCHED_FIFO 1 the slowest of the trials took well under 1 ms. The worker's
input is bounded by the kernel's budgets (per identity, untagged, fwknop), and the kernel's
real-time throttling keeps 5 % of every CPU for everything else, so a flood cannot turn it
into a CPU hog.

Only the main thread (the one that reads the ring) is real-time: SCHED_RESET_ON_FORK gives
every thread and process it starts (metrics, fleet) the normal policy. Under systemd the unit
sets the same (CPUSchedulingPolicy=fifo, CPUSchedulingResetOnFork=yes), and the loader, which
the unit starts under that policy too, leaves it (leave_realtime) before its compile.
"""

from __future__ import annotations

import os

REALTIME_PRIORITY = 1  # the lowest real-time priority: above every normal task, below the rest
_REALTIME = (os.SCHED_FIFO, os.SCHED_RR)


def _policy(pid: int) -> int:
    return os.sched_getscheduler(pid) & ~os.SCHED_RESET_ON_FORK


def describe(pid: int = 0) -> str:
    """How the thread pid (0: this one) is scheduled, for the log: "fifo 1" or "normal"."""
    policy = _policy(pid)
    if policy in _REALTIME:
        name = "fifo" if policy == os.SCHED_FIFO else "rr"
        return f"{name} {os.sched_getparam(pid).sched_priority}"
    return "normal"


def take_realtime() -> str | None:
    """Make this thread SCHED_FIFO 1, reset on fork. Returns None, or why it could not (the
    worker then runs at the normal policy: a side error never stops the gate)."""
    try:
        os.sched_setscheduler(
            0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(REALTIME_PRIORITY)
        )
    except OSError as e:
        return e.strerror or str(e)
    return None


def leave_realtime() -> str | None:
    """Back to the normal policy if started real-time (the loader, under the unit's
    CPUSchedulingPolicy: its seconds of compiling must not hold a CPU away from the host).
    Returns None, or why it could not."""
    try:
        if _policy(0) in _REALTIME:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as e:
        return e.strerror or str(e)
    return None
