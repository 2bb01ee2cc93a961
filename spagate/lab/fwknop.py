"""Debian's real fwknopd and fwknop in the lab: the server in UDP mode in the foreground, with
its pid file, run dir and digest cache in a temp dir, opening ports in the lab host's own
iptables (a network namespace: the machine's firewall is never touched); a UDP receiver to
catch what a real client sends; a sender that uses spagate's client code."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
from pathlib import Path

from spagate.lab.netns import Lab

FWKNOPD_PORT = 62201
_RULE = re.compile(
    r"-A FWKNOP_INPUT -s (\S+)/32 -p (tcp|udp) -m \2 --dport (\d+) "
    r"-m comment --comment _exp_(\d+) -j ACCEPT"
)


def keygen(path: Path) -> tuple[str, str]:
    """Keys from the real client (`fwknop --key-gen-file`): KEY_BASE64, HMAC_KEY_BASE64."""
    subprocess.run(
        ["fwknop", "--key-gen", "--key-gen-file", str(path), "--no-rc-file"],
        check=True,
        capture_output=True,
        env={"HOME": str(path.parent), "PATH": "/usr/bin:/bin"},
    )
    path.chmod(0o600)
    values = dict(re.findall(r"^(\w+): (\S+)$", path.read_text(), re.M))
    return values["KEY_BASE64"], values["HMAC_KEY_BASE64"]


class Fwknopd:
    def __init__(self, lab: Lab, host: str, workdir: Path, access_conf: Path):
        self.lab, self.host, self.dir = lab, host, workdir
        self.conf = workdir / "fwknopd.conf"
        self.conf.write_text(f"ENABLE_UDP_SERVER Y;\nUDPSERV_PORT {FWKNOPD_PORT};\n")
        self.conf.chmod(0o600)
        self.access = access_conf
        self.digest_file = workdir / "digest.cache"
        self.logfile = workdir / "fwknopd.log"
        self.proc: subprocess.Popen | None = None

    def argv(self, *extra: str) -> list[str]:
        d = self.dir
        return ["fwknopd", "-f", "-U", "-c", str(self.conf), "-a", str(self.access),
                "-d", str(self.digest_file), "-p", str(d / "fwknopd.pid"),
                "-r", str(d / "run"), *extra]  # fmt: skip

    def start(self, timeout: float = 15) -> Fwknopd:
        log = self.logfile.open("ab")
        self.proc = self.lab.spawn(
            self.host, self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        end = time.monotonic() + timeout
        while "Kicking off UDP server" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"fwknopd did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def dump(self) -> str:
        """fwknopd -D: its own reading of the configuration and the access stanzas."""
        proc = self.lab.run(self.host, self.argv("-D"), timeout=30)
        return proc.stdout + proc.stderr

    def rules(self) -> dict[tuple[str, str, int], int]:
        """The ACCEPT rules fwknopd added: (source, proto, port) -> expiry (unix seconds)."""
        out = self.lab.run(self.host, ["iptables", "-S", "FWKNOP_INPUT"]).stdout
        return {(ip, proto, int(port)): int(exp) for ip, proto, port, exp in _RULE.findall(out)}

    def digests(self) -> list[bytes]:
        """The SHA-256 digests in fwknopd's replay cache file."""
        if not self.digest_file.exists():
            return []
        lines = self.digest_file.read_text().splitlines()
        return [base64.b64decode(ln.split()[0] + "==") for ln in lines if ln[:1] not in "#"]

    def wait(self, pred, timeout: float = 10.0):
        end = time.monotonic() + timeout
        while True:
            got = pred()
            if got or time.monotonic() > end:
                return got
            time.sleep(0.05)


def send_from(lab: Lab, host: str, target: str, port: int, packet: bytes) -> None:
    """Send one packet from a lab host with spagate's client code."""
    code = (
        "import sys; from spagate.client.fwknop import send_fwknop; "
        "send_fwknop(sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]))"
    )
    lab.run(host, [sys.executable, "-c", code, target, str(port), packet.hex()], check=True)


class Receiver:
    """A UDP socket in a lab host that keeps the first datagram it gets (payload, source)."""

    CODE = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
        "print('ready', flush=True)\n"
        "data, addr = s.recvfrom(65535)\n"
        "print(addr[0], data.hex(), flush=True)\n"
    )

    def __init__(self, lab: Lab, host: str, port: int):
        self.proc = lab.spawn(
            host, [sys.executable, "-c", self.CODE, str(port)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def get(self, timeout: float = 10) -> tuple[str, bytes]:
        out, _ = self.proc.communicate(timeout=timeout)
        src, hexdata = out.split()
        return src, bytes.fromhex(hexdata)
