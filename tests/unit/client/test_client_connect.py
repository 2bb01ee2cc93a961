"""`spagate connect` as a real subprocess over loopback: SPA packet, then the TCP connection
handed to "ssh" over a socketpair (SCM_RIGHTS) or relayed over stdin/stdout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from spagate.protocol import Accepted, Verifier, generate_keypair

KP = generate_keypair()


@pytest.fixture
def home(tmp_path) -> Path:
    cfg = tmp_path / ".spagate.ini"
    cfg.write_text(f"key = {KP.key.hex()}\nhmac-key = {KP.hmac_key.hex()}\n")
    cfg.chmod(0o600)
    return tmp_path


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAGATE_", "SPAROID_"))}
    env["HOME"] = str(home)
    return env


class Service:
    """A UDP SPA listener and a TCP echo service on one loopback address.

    With open_after_spa, the TCP port refuses connections until a valid SPA packet has
    arrived and `delay` seconds have passed (like a gate that needs a moment to open).
    """

    def __init__(self, host: str = "127.0.0.1", open_after_spa: bool = False, delay=0.3):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.udp.settimeout(10)
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        self.tcp.bind((host, 0))
        self.spa_port = self.udp.getsockname()[1]
        self.port = self.tcp.getsockname()[1]
        self.packets: list[Accepted] = []
        self.opened_at: float | None = None
        self.connections = 0
        if not open_after_spa:
            self._listen()
        threading.Thread(target=self._spa, args=(open_after_spa, delay), daemon=True).start()

    def _listen(self) -> None:
        try:
            self.tcp.listen(8)
        except OSError:  # closed by the test before the delayed open
            return
        self.opened_at = time.monotonic()
        threading.Thread(target=self._serve, daemon=True).start()

    def _spa(self, open_after: bool, delay: float) -> None:
        try:
            data = self.udp.recv(2048)
        except OSError:
            return
        r = Verifier([KP]).verify(data, time.time_ns() // 1_000_000)
        if isinstance(r, Accepted):
            self.packets.append(r)
            if open_after:
                time.sleep(delay)
                self._listen()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def service():
    made = []

    def make(*args, **kw) -> Service:
        s = Service(*args, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def connect_cmd(host: str, svc: Service, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "spagate", "connect",
        "-h", host, "-P", str(svc.port), "-p", str(svc.spa_port), *extra,
    ]  # fmt: skip


def run_fd_passing(home: Path, cmd: list[str]) -> tuple[subprocess.Popen, socket.socket | None]:
    """Run cmd with a Unix socketpair as stdout (as ssh does); receive the passed fd."""
    ssh_end, proxy_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with proxy_end:
        proc = subprocess.Popen(
            cmd, stdout=proxy_end, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env_for(home),
        )  # fmt: skip
    with ssh_end:
        ssh_end.settimeout(20)
        msg, fds, _, _ = socket.recv_fds(ssh_end, 16, 1)
    proc.wait(timeout=20)
    if not fds:
        return proc, None
    assert msg == b"\0" and len(fds) == 1
    return proc, socket.socket(fileno=fds[0])


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_fd_passing(home, service, host):
    svc = service(host)
    proc, conn = run_fd_passing(home, connect_cmd(host, svc))
    assert proc.returncode == 0, proc.stderr.read()
    assert conn is not None
    with conn:
        assert conn.type == socket.SOCK_STREAM
        assert conn.getpeername()[1] == svc.port
        conn.sendall(b"SSH-2.0-test\r\n")
        assert conn.recv(100) == b"SSH-2.0-test\r\n"
    (packet,) = svc.packets
    assert packet.message.ip == (IPv4Address("127.0.0.1") if host[0] == "1" else IPv6Address("::1"))


def test_fd_passing_waits_for_the_gate_to_open(home, service):
    svc = service(open_after_spa=True, delay=0.4)
    start = time.monotonic()
    proc, conn = run_fd_passing(home, connect_cmd("127.0.0.1", svc))
    assert proc.returncode == 0, proc.stderr.read()
    assert conn is not None and svc.opened_at is not None
    assert time.monotonic() - start < 4  # retried quickly, not after the SYN backoff
    with conn:
        conn.sendall(b"late")
        assert conn.recv(10) == b"late"


def test_relay_when_stdout_is_not_a_socket(home, service):
    svc = service()
    payload = os.urandom(200_000)
    proc = subprocess.run(
        connect_cmd("127.0.0.1", svc, "--ip", "source"),
        input=payload, capture_output=True, env=env_for(home), timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == payload
    assert svc.connections == 1
    assert svc.packets[0].message.ip == IPv4Address("0.0.0.0")


def test_relay_opens_after_delay(home, service):
    svc = service(open_after_spa=True, delay=0.3)
    proc = subprocess.run(
        connect_cmd("127.0.0.1", svc),
        input=b"hello", capture_output=True, env=env_for(home), timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hello"


def test_no_address_connects_within_timeout(home, service):
    svc = service(open_after_spa=True, delay=60)  # refuses for the whole run
    start = time.monotonic()
    proc = subprocess.run(
        connect_cmd("127.0.0.1", svc, "--timeout", "0.7"),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env_for(home), timeout=30,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"spagate: error: could not connect to 127.0.0.1 port {svc.port} within 0.7 s "
        "(127.0.0.1: Connection refused)"
    )
    assert 0.7 <= elapsed < 10
    assert len(svc.packets) == 1  # the SPA packet went out first


def test_connect_reports_spa_failure(home):
    proc = subprocess.run(
        [sys.executable, "-m", "spagate", "connect", "-h", "no-such-host.invalid", "-P", "22"],
        capture_output=True, text=True, env=env_for(home), timeout=30,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.startswith("spagate: error: cannot resolve no-such-host.invalid")
    assert len(proc.stderr.strip().splitlines()) == 1
