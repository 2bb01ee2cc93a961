"""The worker's real-time scheduling (spagate.gate.service.priority), in real processes: the
thread that takes it is SCHED_FIFO 1 with reset-on-fork, the threads it starts run normal, and
the loader leaves a real-time policy it was started under."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

TAKE = """
import os, threading
from spagate.gate.service import priority
print(priority.take_realtime())
print(os.sched_getscheduler(0) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, priority.describe())
got = []
t = threading.Thread(target=lambda: got.append(priority.describe()))
t.start(); t.join()
print(got[0])
"""

LEAVE = """
import os
from spagate.gate.service import priority
print(priority.describe())
print(priority.leave_realtime(), priority.describe(), os.sched_getscheduler(0))
"""


def py(code: str, *prefix: str) -> list[str]:
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root")
def test_the_ring_reader_takes_fifo_1_and_its_threads_run_normal():
    assert py(TAKE) == ["None", "True fifo 1", "normal"]


@pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root")
def test_the_loader_leaves_the_units_real_time_policy():
    assert py(LEAVE, "chrt", "--fifo", "1") == ["fifo 1", "None normal 0"]
    assert py(LEAVE) == ["normal", "None normal 0"]  # already normal: nothing to do


def test_without_the_privilege_the_worker_is_told_why():
    # as nobody, without CAP_SYS_NICE (and RLIMIT_RTPRIO 0): refused, and the reason comes back
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    out = py("from spagate.gate.service import priority; print(priority.take_realtime())",
             "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all")  # fmt: skip
    assert out == ["Operation not permitted"]
