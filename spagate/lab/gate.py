"""LabGate: a real gate daemon on lab host "gate", clients and probes on the other hosts.

Shared by the demo, the end-to-end tests and the benchmarks. Everything runs as real
processes (`spagate attach`, `spagate send`, spagate.lab.probe) inside lab namespaces.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from spagate.errors import SpagateError
from spagate.lab.netns import Lab
from spagate.protocol import KeyPair, generate_keypair

SERVICE_PORT = 22


def _spagate() -> list[str]:
    return [sys.executable, "-m", "spagate"]


def show(prefix: str, text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"    {prefix} {line}", flush=True)


class Knocker:
    """A running spagate.lab.knocker: ask() sends one command line, returns its answer."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class LabGate:
    """A gate daemon on a lab host ("gate" unless told), and clients on the other hosts (demo
    and e2e tests)."""

    def __init__(
        self,
        lab: Lab,
        workdir: Path,
        keys: KeyPair | None = None,
        family: int = 4,
        host: str = "gate",
    ):
        self.lab, self.work, self.family, self.host = lab, workdir, family, host
        self.keys = keys or generate_keypair()
        # Inside a root-only (0700) directory, as systemd mounts /sys/fs/bpf itself: the worker
        # must open every pin before it drops root.
        self.pin_root = f"/sys/fs/bpf/spagate-{lab.prefix}" + ("" if host == "gate" else f"-{host}")
        self.pin_dir = f"{self.pin_root}/gate"
        self.conf = workdir / ("spagate.ini" if host == "gate" else f"spagate-{host}.ini")
        self.log: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._attached = threading.Event()
        self.memory_began: float | None = None  # wall time the gate said its replay memory began
        self.echo = False
        self.wrapper: list[str] = []  # argv prefix for the daemon (e.g. setpriv in tests)
        self.env: dict[str, str] | None = None  # the daemon's and operator commands' env
        self.interfaces: list[str] = ["eth0"]  # [] with interface = all in the config

    def ip(self, host: str | None = None) -> str:
        host = host or self.host
        return self.lab[host].v4 if self.family == 4 else self.lab[host].v6

    def configure(self, extra: str = "", keys: bool = True) -> None:
        """The gate's config: extra, then the keys. The lab's gate is silent (disguise =
        filtered) unless extra says otherwise: its tests and the demo watch connects time out."""
        text = (
            f"key = {self.keys.key.hex()}\nhmac-key = {self.keys.hmac_key.hex()}\n" if keys else ""
        )
        text = extra + text
        if "disguise" not in extra:  # after the given lines (their numbers stay), before [...]
            lines = text.splitlines(keepends=True)
            at = next((i for i, ln in enumerate(lines) if ln.startswith("[")), len(lines))
            text = "".join([*lines[:at], "disguise = filtered\n", *lines[at:]])
        self.conf.write_text(text)
        self.conf.chmod(0o600)

    def client_env(self, keys: KeyPair | None = None) -> dict[str, str]:
        keys = keys or self.keys
        home = Path(tempfile.mkdtemp(prefix="home-", dir=self.work))
        ini = home / ".spagate.ini"
        ini.write_text(f"key = {keys.key.hex()}\nhmac-key = {keys.hmac_key.hex()}\n")
        ini.chmod(0o600)
        return {**os.environ, "HOME": str(home)}

    def start(self, *args: str, timeout: float = 60) -> subprocess.Popen:
        os.makedirs(self.pin_root, mode=0o700, exist_ok=True)
        self._xdp_tx_ready()
        argv = [*_spagate(), "attach", *self.interfaces, "-c", str(self.conf),
                "--pin-dir", self.pin_dir]  # fmt: skip
        self._attached.clear()
        # Only the network namespace is entered: the gate pins its maps in this /sys/fs/bpf.
        self.proc = self.lab.spawn(
            self.host,
            [*self.wrapper, *argv, *args],
            mounts=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._follow, args=(self.proc,), daemon=True).start()
        end = time.monotonic() + timeout
        while not self._attached.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise SpagateError("the gate did not attach:\n" + "\n".join(self.log[-10:]))
        return self.proc

    def _xdp_tx_ready(self) -> None:
        """XDP_TX (the closed disguise's replies) from a veth reaches its peer only when the
        peer runs XDP too (its XDP ring is set up then; GRO alone is not enough): an XDP_PASS
        program on the gate's bridge port. A real NIC needs nothing of the kind."""
        if getattr(self, "_tx_ready", False):
            return
        if not os.path.exists(f"/run/netns/{self.lab.switch}"):
            return  # no bridge (bench/floods.py's direct pair: its peer runs XDP already)
        from spagate.gate.kernel import bpfsys
        from spagate.gate.kernel.abi import XdpAction
        from spagate.gate.kernel.link import XdpMode, in_netns, set_xdp

        fd = bpfsys.prog_load_xdp_return(XdpAction.PASS, "lab_port_pass")
        try:
            with in_netns(f"/run/netns/{self.lab.switch}"):
                set_xdp(f"p{self.lab[self.host].index}", fd, XdpMode.NATIVE)
        finally:
            os.close(fd)
        self._tx_ready = True

    def _follow(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            line = line.rstrip()
            self.log.append(line)
            if self.echo:
                show("gate |", line.split(" ", 2)[-1] if line[:2] == "20" else line)
            if "replay memory begins now" in line:
                self.memory_began = time.time()  # later than the gate's own mark: conservative
            if " attached " in f" {line} " or '"msg":"attached ' in line:  # text or json
                self._attached.set()

    def wait_whole_second(self) -> None:
        """fwknop stamps its packets in whole seconds: one sent in the second the gate's replay
        memory began carries a stamp before it and is refused (before-replay-memory). A real
        operator's fresh gate does the same; a test that knocks with fwknop right after the
        start waits for the next whole second instead."""
        if self.memory_began is not None:
            time.sleep(max(0.0, math.ceil(self.memory_began) - time.time()))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def service(self, proto: str = "tcp", port: int = SERVICE_PORT) -> None:
        proc = self.lab.spawn(
            self.host,
            [sys.executable, "-m", "spagate.lab.probe", "serve", proto, str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        if proc.stdout.readline().strip() != "ready":
            raise SpagateError(f"the {proto}/{port} service did not start")

    def probe(self, host: str = "client", port: int = SERVICE_PORT, timeout: float = 2.0) -> str:
        out = self.lab.run(
            host,
            [
                sys.executable,
                "-m",
                "spagate.lab.probe",
                "connect",
                self.ip(),
                str(port),
                "-t",
                str(timeout),
            ],  # fmt: skip
        )
        return out.stdout.strip()

    def hold(self, host: str = "client", port: int = SERVICE_PORT) -> subprocess.Popen:
        """A TCP connection kept open; write lines to stdin, read echoes from stdout."""
        return self.lab.spawn(
            host,
            [sys.executable, "-m", "spagate.lab.probe", "hold", self.ip(), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(
        self, host: str = "client", *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        env = env or self.client_env()
        return self.lab.run(host, [*_spagate(), "send", self.ip(), *args], env=env, timeout=30)

    def spagate(self, *args: str) -> subprocess.CompletedProcess:
        """An operator command run on the gate host (status, allow, revoke ...)."""
        argv = [*_spagate(), *args, "--pin-dir", self.pin_dir]
        return self.lab.run(self.host, argv, mounts=False, timeout=60, env=self.env)

    def knocker(self, host: str = "client") -> Knocker:
        """A spagate.lab.knocker process on host, knocking with this gate's keys."""
        proc = self.lab.spawn(
            host,
            [sys.executable, "-m", "spagate.lab.knocker", self.keys.key.hex(),
             self.keys.hmac_key.hex(), self.ip()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if proc.stdout.readline().strip() != "ready":
            raise SpagateError("the knocker did not start")
        return Knocker(proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.pin_root, ignore_errors=True)
        # the run directory's files of every pin dir under pin_root (lock, state, attached)
        from spagate.gate.service import state

        name = glob.escape(state.gate_name(self.pin_root))
        for f in [*state.STATE_DIR.glob(f"{name}-*"), *state.STATE_DIR.glob(f"{name}.*")]:
            with contextlib.suppress(OSError):
                f.unlink()
