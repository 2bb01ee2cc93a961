"""The wheel: packaging/build-wheel (`make wheel`: `python -m build` on a copy of the tree,
then `twine check`) makes the sdist and the wheel. Installed in a venv that cannot see bcc (nor
any of Debian's packages: its dependencies come from PyPI), the wheel is a working client:
keygen, send and connect over loopback, the packets checked with the project's own decoder.
The same wheel in a venv with --system-site-packages (Debian's python3-bpfcc) attaches a gate
in a lab namespace, compiling the bpf/ sources it carries, and the gate opens for a knock."""

from __future__ import annotations

import os
import socket
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from spagate.lab import gate as lab_gate
from spagate.lab.util import wait_for
from spagate.protocol import Decoded, KeyPair, decode, parse_hex_key

REPO = Path(__file__).resolve().parents[2]
SOURCES = {p.name for p in (REPO / "spagate/bpf").iterdir() if p.suffix in (".c", ".h")}


def run(cmd, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, object]:
    """`make wheel`'s script: the sdist and the wheel from the files a fresh clone holds,
    checked by twine (build and twine from PyPI, in the script's own throwaway venv)."""
    out = tmp_path_factory.mktemp("dist")
    r = run([str(REPO / "packaging/build-wheel"), str(out)])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = out.glob("spagate-*-py3-none-any.whl")
    (sdist,) = out.glob("spagate-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "log": r.stdout}


def venv(path: Path, system_site: bool) -> Path:
    args = ["/usr/bin/python3", "-m", "venv", str(path)]
    r = run(args + (["--system-site-packages"] if system_site else []))
    assert r.returncode == 0, r.stderr
    return path / "bin"


def test_sdist_and_wheel_pass_twine_check_and_carry_the_bpf_sources(dist):
    checked = [line for line in dist["log"].splitlines() if line.startswith("Checking ")]
    assert len(checked) == 2 and all(line.endswith("PASSED") for line in checked), dist["log"]
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    assert {Path(n).name for n in names if n.startswith("spagate/bpf/")} >= SOURCES
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "spagate = spagate.cli:main" in zipfile.ZipFile(dist["wheel"]).read(entry).decode()
    with tarfile.open(dist["sdist"]) as sdist:
        assert {Path(n).name for n in sdist.getnames() if "/spagate/bpf/" in n} >= SOURCES


class Loopback:
    """A UDP socket for the SPA packets and a TCP echo server, on 127.0.0.1."""

    def __init__(self):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(60)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(1)
        threading.Thread(target=self._echo, daemon=True).start()

    def _echo(self) -> None:
        conn, _ = self.tcp.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(b"echo " + data)

    def packet(self) -> tuple[bytes, str]:
        data, peer = self.udp.recvfrom(2048)
        return data, peer[0]

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def test_the_wheel_without_bcc_is_a_client(dist, tmp_path):
    bin_ = venv(tmp_path / "client-venv", system_site=False)
    # Dependencies from PyPI (pip's cache makes a second run quick); never the PyPI "bcc".
    r = run([str(bin_ / "pip"), "install", "-q", "--disable-pip-version-check",
             str(dist["wheel"])])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    py = str(bin_ / "python")
    r = run([py, "-c", "import bcc"], cwd=tmp_path)
    assert r.returncode != 0 and "No module named 'bcc'" in r.stderr
    r = run([py, "-c", "import spagate; print(spagate.__file__)"], cwd=tmp_path)
    assert r.stdout.startswith(str(tmp_path / "client-venv")), r.stdout + r.stderr

    spagate = str(bin_ / "spagate")
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    r = run([spagate, "keygen"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(" = ") for line in r.stdout.splitlines())
    keys = KeyPair(parse_hex_key(fields["key"]), parse_hex_key(fields["hmac-key"]))
    (home / ".spagate.ini").write_text(r.stdout)
    (home / ".spagate.ini").chmod(0o600)

    net = Loopback()
    try:
        spa_port, tcp_port = net.udp.getsockname()[1], net.tcp.getsockname()[1]
        r = run([spagate, "send", "127.0.0.1", "-p", str(spa_port)], env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        data, src = net.packet()
        got = decode(data, [keys])
        assert isinstance(got, Decoded), got
        assert len(data) == 96 and src == "127.0.0.1"
        assert str(got.message.ip) == "127.0.0.1"
        assert abs(got.message.ts_ms / 1000 - time.time()) < 30

        # connect without ProxyUseFdpass (stdout a pipe): knock, connect, relay both ways.
        argv = [spagate, "connect", "-h", "127.0.0.1", "-P", str(tcp_port), "-p", str(spa_port)]
        r = run(argv, env=env, cwd=tmp_path, input="hello\n", timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "echo hello\n"
        data, _ = net.packet()
        got = decode(data, [keys])
        assert isinstance(got, Decoded) and str(got.message.ip) == "127.0.0.1", got
    finally:
        net.close()


def test_the_wheel_with_system_site_packages_attaches_a_gate(dist, gate, tmp_path, monkeypatch):
    bin_ = venv(tmp_path / "gate-venv", system_site=True)
    r = run([str(bin_ / "pip"), "install", "-q", "--no-deps", "--disable-pip-version-check",
             str(dist["wheel"])])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    # Outside the checkout: `python -m spagate` (the supervisor's loader and worker) must import
    # the wheel's package, not the tree's.
    away = tmp_path / "away"
    away.mkdir()
    gate.wrapper = ["env", "-C", str(away)]
    code = "import spagate.gate.kernel.build as b; print(b.GATE_SOURCE)"
    r = gate.lab.run("gate", [*gate.wrapper, str(bin_ / "python"), "-c", code], mounts=False)
    site = tmp_path / "gate-venv" / "lib"
    assert r.returncode == 0 and r.stdout.strip().startswith(str(site)), r.stdout + r.stderr
    assert r.stdout.strip().endswith("spagate/bpf/gate.c")
    monkeypatch.setattr(lab_gate, "_spagate", lambda: [str(bin_ / "python"), "-m", "spagate"])

    gate.configure()
    gate.service()
    gate.start(timeout=120)
    assert gate.probe() == "timeout"
    assert gate.send("client", "--ip", "source").returncode == 0
    assert wait_for(lambda: gate.probe().startswith("connected"))
    assert gate.probe("flood") == "timeout"
