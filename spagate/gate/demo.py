"""`spagate demo`: the whole story between two network namespaces, narrated, then cleaned up.

gate (192.0.2.1) runs a TCP service on protected port 22 behind `spagate attach eth0`;
client (192.0.2.2) knocks with `spagate send`. Nothing on this machine outside the two
namespaces (and a bridge between them) is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from spagate.errors import SpagateError
from spagate.lab import Lab
from spagate.protocol import generate_keypair

OPEN_SECONDS = 5
SERVICE_PORT = 22


def _spagate() -> list[str]:
    return [sys.executable, "-m", "spagate"]


def _say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def _show(prefix: str, text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"    {prefix} {line}", flush=True)


class Demo:
    def __init__(self, lab: Lab, workdir: Path, family: int = 4):
        self.lab, self.work, self.family = lab, workdir, family
        self.pin_dir = f"/sys/fs/bpf/spagate-{lab.prefix}"
        self.gate_ip = lab["gate"].v4 if family == 4 else lab["gate"].v6
        self.gate_log: list[str] = []
        self.attached = threading.Event()

    def start_gate(self) -> subprocess.Popen:
        keys = generate_keypair()
        conf = self.work / "spagate.ini"
        conf.write_text(
            f"key = {keys.key.hex()}\nhmac-key = {keys.hmac_key.hex()}\n"
            f"protected = tcp/{SERVICE_PORT}\nopen-seconds = {OPEN_SECONDS}\n"
        )
        conf.chmod(0o600)
        home = self.work / "client-home"
        home.mkdir()
        client_conf = home / ".spagate.ini"
        client_conf.write_text(f"key = {keys.key.hex()}\nhmac-key = {keys.hmac_key.hex()}\n")
        client_conf.chmod(0o600)
        self.client_env = {**os.environ, "HOME": str(home)}
        argv = [*_spagate(), "attach", "eth0", "-c", str(conf), "--pin-dir", self.pin_dir]
        # Only the network namespace is entered: the gate pins its maps in this /sys/fs/bpf.
        proc = self.lab.spawn(
            "gate", argv, mounts=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._follow, args=(proc,), daemon=True).start()
        if not self.attached.wait(60):
            proc.kill()
            raise SpagateError("the gate did not attach:\n" + "\n".join(self.gate_log[-10:]))
        return proc

    def _follow(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            line = line.rstrip()
            self.gate_log.append(line)
            _show("gate |", line.split(" ", 2)[-1] if line[:2] == "20" else line)
            if "attached" in line:
                self.attached.set()

    def start_service(self) -> None:
        proc = self.lab.spawn(
            "gate",
            [sys.executable, "-m", "spagate.probe", "serve", "tcp", str(SERVICE_PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        if proc.stdout.readline().strip() != "ready":
            raise SpagateError("the demo service did not start")

    def probe(self, timeout: float = 2.0) -> str:
        out = self.lab.run(
            "client",
            [
                sys.executable,
                "-m",
                "spagate.probe",
                "connect",
                self.gate_ip,
                str(SERVICE_PORT),
                "-t",
                str(timeout),
            ],  # fmt: skip
        )
        return out.stdout.strip()

    def send(self) -> subprocess.CompletedProcess:
        return self.lab.run(
            "client", [*_spagate(), "send", self.gate_ip], env=self.client_env, timeout=30
        )


def run_demo() -> None:
    if shutil.which("ip") is None:
        raise SpagateError("iproute2 (ip) is needed: run sudo ./setup")
    work = Path(tempfile.mkdtemp(prefix="spagate-demo-"))
    lab = Lab(("gate", "client"))
    gate = None
    try:
        _say("Building two network namespaces joined by a bridge")
        lab.open()
        print(f"    {lab.describe()}")
        demo = Demo(lab, work)
        _say(f"gate: a TCP service on port {SERVICE_PORT}, then `spagate attach eth0`")
        demo.start_service()
        gate = demo.start_gate()

        _say(f"client: connect to {demo.gate_ip}:{SERVICE_PORT} without knocking")
        got = demo.probe()
        _show("client |", got)
        if got != "timeout":
            raise SpagateError(f"expected a silent drop, got {got!r}")
        print("    (no SYN-ACK, no RST: the port is invisible)")

        _say(f"client: spagate send {demo.gate_ip}")
        sent = demo.send()
        _show("client |", (sent.stdout + sent.stderr) or f"exit {sent.returncode}")
        if sent.returncode != 0:
            raise SpagateError("spagate send failed")

        _say(f"client: connect again (the window is open for {OPEN_SECONDS}s)")
        hold = lab.spawn(
            "client",
            [sys.executable, "-m", "spagate.probe", "hold", demo.gate_ip, str(SERVICE_PORT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        first = hold.stdout.readline().strip()
        _show("client |", first)
        if not first.startswith("connected"):
            raise SpagateError(f"expected to connect after the knock, got {first!r}")

        _say(f"waiting {OPEN_SECONDS + 1}s for the window to close")
        time.sleep(OPEN_SECONDS + 1)
        hold.stdin.write("still here after the window closed\n")
        hold.stdin.flush()
        reply = hold.stdout.readline().strip()
        _show("client |", reply)
        if not reply.startswith("echo still here"):
            raise SpagateError(f"the open connection did not survive: {reply!r}")
        print("    (the connection opened in the window keeps working)")

        _say("client: a new connect after the window")
        got = demo.probe()
        _show("client |", got)
        if got != "timeout":
            raise SpagateError(f"expected a silent drop after the window, got {got!r}")
        hold.stdin.close()

        _say("spagate status")
        st = lab.run("gate", [*_spagate(), "status", "--pin-dir", demo.pin_dir], mounts=False)
        _show("|", st.stdout + st.stderr)
        _say("Demo complete: invisible, opened by one packet, closed on time.")
    finally:
        if gate is not None and gate.poll() is None:
            gate.terminate()
            try:
                gate.wait(10)
            except subprocess.TimeoutExpired:
                gate.kill()
        lab.close()
        shutil.rmtree(f"/sys/fs/bpf/spagate-{lab.prefix}", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        print("\ncleaned up: namespaces, pinned maps and temporary files removed", flush=True)
