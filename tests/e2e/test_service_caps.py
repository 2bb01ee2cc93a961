"""The systemd units' roles, run by hand as systemd would run them (no systemd as PID 1 here):
the loader as root, the monitor as root on its socket, the worker with only the unit's
bounding set and group; it drops to the spagate user with CAP_BPF, knocks open the gate, and
a restart (loader again, worker again) keeps the window."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from spagate.gate.service.account import WORKER_CAPS, service_account
from spagate.gate.service.preflight import capability_names
from spagate.lab.util import wait_for

UNIT = Path(__file__).parents[2] / "packaging" / "spagate.service"
PY = sys.executable


def unit_capabilities() -> list[str]:
    m = re.search(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M)
    assert m, "the unit sets no CapabilityBoundingSet"
    return [c.lower().removeprefix("cap_") for c in m.group(1).split()]


def unit_exec(key: str, gate, sock: str) -> list[str]:
    """The unit's Exec line for key, with the checkout's spagate and the lab's paths."""
    line = re.search(rf"^{key}=\+?@SPAGATE@ (.*)$", UNIT.read_text(), re.M).group(1)
    args = line.replace("/etc/spagate.ini", str(gate.conf)).split()
    args = [sock if a == "/run/spagate-monitor/monitor.sock" else a for a in args]
    return [PY, "-m", "spagate", *args, "--pin-dir", gate.pin_dir, "eth0"]


class Roles:
    """loader, monitor and worker of the lab gate, started like the units start them."""

    def __init__(self, gate, tmp_path):
        self.gate, self.sock = gate, f"/run/spagate-monitor-test-{gate.lab.prefix}/m.sock"
        self.monitor = self.worker = None
        self.log = []

    def load(self) -> None:
        Path(self.gate.pin_root).mkdir(mode=0o700, exist_ok=True)
        r = self.gate.lab.run(
            "gate", unit_exec("ExecStartPre", self.gate, self.sock), mounts=False, timeout=120
        )
        assert r.returncode == 0, r.stderr[-2000:]

    def start_monitor(self) -> None:
        argv = [PY, "-m", "spagate", "monitor", "-c", str(self.gate.conf), "--socket",
                self.sock, "--pin-dir", self.gate.pin_dir, "eth0"]  # fmt: skip
        self.monitor = self.gate.lab.spawn("gate", argv, mounts=False, stdout=subprocess.DEVNULL)

    def start_worker(self, caps: list[str]) -> subprocess.Popen:
        # systemd: root, Group=spagate, CapabilityBoundingSet=..., NoNewPrivileges=yes
        wrap = ["setpriv", f"--regid={service_account().gid}", "--clear-groups", "--no-new-privs",
                "--bounding-set", "-all," + ",".join(f"+{c}" for c in caps)]  # fmt: skip
        argv = [*wrap, *unit_exec("ExecStart", self.gate, self.sock)]
        self.worker = self.gate.lab.spawn(
            "gate", argv, mounts=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        return self.worker

    def wait_attached(self) -> None:
        for line in self.worker.stdout:
            self.log.append(line)
            if " attached " in line:
                return
        raise AssertionError("the worker did not start:\n" + "".join(self.log[-10:]))

    def stop(self) -> None:
        for p in (self.worker, self.monitor):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(15)
        shutil.rmtree(Path(self.sock).parent, ignore_errors=True)


def test_the_units_roles_run_knock_and_restart(gate, tmp_path):
    caps = unit_capabilities()
    assert "bpf" in caps and "net_admin" not in caps and "sys_admin" not in caps
    gate.configure("open-seconds = 60\nopen-cmd = true %s\n")
    gate.service()
    roles = Roles(gate, tmp_path)
    try:
        roles.load()
        roles.start_monitor()
        roles.start_worker(caps)
        roles.wait_attached()
        pid = roles.worker.pid  # nsenter execs: the worker itself
        st = gate.lab.sh("gate", f"cat /proc/{pid}/status").stdout
        eff = int(re.search(r"^CapEff:\s+(\w+)", st, re.M).group(1), 16)
        assert capability_names(eff) == list(WORKER_CAPS)
        assert re.search(r"^Uid:\s+(\d+)", st, re.M).group(1) == str(service_account().uid)
        assert gate.probe() == "timeout"
        assert gate.send("client", "--ip", "source").returncode == 0
        assert wait_for(lambda: gate.probe().startswith("connected"))
        roles.stop()
        roles.load()  # a restart: the loader again, over the pins and the live link
        roles.start_monitor()
        roles.start_worker(caps)
        roles.wait_attached()
        assert gate.probe().startswith("connected")  # the window survived
        assert gate.probe("flood") == "timeout"
    finally:
        roles.stop()


def test_without_cap_bpf_the_worker_fails_in_one_line(gate, tmp_path):
    gate.configure()
    roles = Roles(gate, tmp_path)
    try:
        roles.load()
        w = roles.start_worker([c for c in unit_capabilities() if c != "bpf"])
        out, _ = w.communicate(timeout=60)
        assert w.returncode == 2
        last = out.strip().splitlines()[-1]
        assert last.startswith("spagate: error:") and "CAP_BPF" in last, out
        time.sleep(0.2)
        assert gate.probe("flood") == "timeout"  # the gate itself still guards
    finally:
        roles.stop()
