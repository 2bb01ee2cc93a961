"""The systemd unit's capability set is enough: attach, knock, and restart over pinned maps."""

from __future__ import annotations

import re
from pathlib import Path

UNIT = Path(__file__).parents[2] / "packaging" / "spagate.service"


def unit_capabilities() -> list[str]:
    m = re.search(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M)
    assert m, "the unit sets no CapabilityBoundingSet"
    return [c.lower().removeprefix("cap_") for c in m.group(1).split()]


def test_the_daemon_runs_and_restarts_with_only_the_units_capabilities(gate):
    caps = unit_capabilities()
    assert "sys_admin" in caps  # bcc reopens pinned maps by id on restart (needs it)
    gate.wrapper = ["setpriv", "--no-new-privs", "--bounding-set", "-all," + ",".join(
        f"+{c}" for c in caps)]  # fmt: skip
    gate.configure("open-seconds = 60\n")
    gate.service()
    gate.start()
    status = gate.lab.sh("gate", f"grep CapBnd /proc/{gate.proc.pid}/status").stdout
    assert int(status.split()[1], 16) != (1 << 41) - 1  # really restricted, not every cap
    assert gate.probe() == "timeout"
    assert gate.send("client", "--ip", "source").returncode == 0
    assert gate.probe().startswith("connected")
    assert gate.stop() == 0
    gate.start()  # over the pinned maps of the first run
    assert gate.probe().startswith("connected")  # the window survived
    assert gate.probe("flood") == "timeout"
    assert gate.stop() == 0


def test_without_cap_bpf_the_daemon_fails_in_one_line(gate):
    caps = [c for c in unit_capabilities() if c != "bpf"]
    gate.wrapper = ["setpriv", "--bounding-set", "-all," + ",".join(f"+{c}" for c in caps)]
    gate.configure()
    proc = gate.lab.run(
        "gate",
        [*gate.wrapper, *gate_argv(gate)],
        mounts=False,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip() == "spagate: error: spagate attach needs CAP_BPF (run it as root)"
    assert "xdp" not in gate.lab.sh("gate", "ip -d link show eth0").stdout


def gate_argv(gate) -> list[str]:
    import sys

    return [sys.executable, "-m", "spagate", "attach", "eth0", "-c", str(gate.conf),
            "--pin-dir", gate.pin_dir]  # fmt: skip
