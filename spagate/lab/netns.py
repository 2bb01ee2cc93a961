"""A throwaway network of namespaces for the demo, the end-to-end tests and the benchmarks.

Each host is a network namespace with an `eth0` plugged into a bridge that lives in a namespace
of its own, so the host's real interfaces are never touched. Names carry a unique prefix so
parallel runs do not collide, and `close()` removes everything, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from spagate.errors import SpagateError

V4_NET = "192.0.2"  # TEST-NET-1: documentation addresses, only ever inside the lab
V6_NET = "2001:db8:5a"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SpagateError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


@dataclass
class Host:
    name: str  # short name: gate, client, flood ...
    netns: str
    index: int
    v4: str = ""
    v6: str = ""


@dataclass
class Lab:
    hosts: Sequence[str] = ("gate", "client")
    prefix: str = field(default_factory=lambda: f"sg{os.getpid() % 100000}{secrets.token_hex(2)}")
    by_name: dict[str, Host] = field(default_factory=dict)
    _procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.switch = f"{self.prefix}-net"

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if os.geteuid() != 0:
            raise SpagateError("the lab needs root (network namespaces)")
        _ip("netns", "add", self.switch)
        self.sh(None, "ip link add br0 type bridge && ip link set br0 up && ip link set lo up")
        for i, name in enumerate(self.hosts, start=1):
            host = Host(name, f"{self.prefix}-{name}", i, f"{V4_NET}.{i}", f"{V6_NET}::{i}")
            self.by_name[name] = host
            _ip("netns", "add", host.netns)
            port = f"p{i}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "eth0",
                "netns", host.netns)  # fmt: skip
            self.sh(None, f"ip link set {port} master br0 && ip link set {port} up")
            self.sh(
                name,
                "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.eth0.accept_dad=0 "
                f"&& ip link set lo up && ip addr add {host.v4}/24 dev eth0 "
                f"&& ip addr add {host.v6}/64 dev eth0 nodad && ip link set eth0 up",
            )
        for host in self.by_name.values():  # carrier settles asynchronously on veth
            self._wait_up(host)

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()
        for ns in [h.netns for h in self.by_name.values()] + [self.switch]:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)

    def _wait_up(self, host: Host, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = self.sh(host.name, "cat /sys/class/net/eth0/operstate", check=False).stdout
            if out.strip() == "up":
                return
            time.sleep(0.05)
        raise SpagateError(f"lab: eth0 of {host.name} did not come up")

    # --- running things in hosts -------------------------------------------------------------

    def __getitem__(self, name: str) -> Host:
        return self.by_name[name]

    def argv(self, host: str | None, argv: Sequence[str], mounts: bool = True) -> list[str]:
        """argv run inside a host. mounts=False enters only the network namespace, so the
        process keeps this mount namespace and its /sys/fs/bpf (the gate pins maps there)."""
        ns = self.switch if host is None else self.by_name[host].netns
        if mounts:
            return ["ip", "netns", "exec", ns, *argv]
        return ["nsenter", f"--net=/run/netns/{ns}", *argv]

    def sh(self, host: str | None, script: str, check: bool = True, timeout: float = 60):
        proc = subprocess.run(
            self.argv(host, ["sh", "-c", script]), capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise SpagateError(f"lab {host or 'switch'}: {script}: {proc.stderr.strip()}")
        return proc

    def run(
        self, host: str, argv: Sequence[str], mounts: bool = True, **kw
    ) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(host, argv, mounts=mounts), **kw)

    def spawn(self, host: str, argv: Sequence[str], mounts: bool = True, **kw) -> subprocess.Popen:
        """Start a process in a host; close() kills it (and its process group)."""
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.argv(host, argv, mounts=mounts), **kw)
        self._procs.append(proc)
        return proc

    def describe(self) -> str:
        return ", ".join(f"{h.name} {h.v4} / {h.v6}" for h in self.by_name.values())
