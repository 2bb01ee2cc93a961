"""`spagate demo`: the whole story between two network namespaces, narrated, then cleaned up.

gate (192.0.2.1) runs a TCP service on protected port 22 behind `spagate attach eth0`;
client (192.0.2.2) knocks with `spagate send`. Nothing on this machine outside the two
namespaces (and a bridge between them) is touched.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from spagate.errors import SpagateError
from spagate.lab.gate import LabGate, show
from spagate.lab.netns import Lab
from spagate.term import bold

OPEN_SECONDS = 5
SERVICE_PORT = 22


def _say(text: str) -> None:
    # No ANSI escapes in a file or a pipe, nor with NO_COLOR.
    print("\n" + bold(f"==> {text}", sys.stdout), flush=True)


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
        gate = LabGate(lab, work)
        gate.echo = True
        gate.configure(f"protected = tcp/{SERVICE_PORT}\nopen-seconds = {OPEN_SECONDS}\n")
        _say(f"gate: a TCP service on port {SERVICE_PORT}, then `spagate attach eth0`")
        gate.service()
        gate.start()

        _say(f"client: connect to {gate.ip()}:{SERVICE_PORT} without knocking")
        got = gate.probe()
        show("client |", got)
        if got != "timeout":
            raise SpagateError(f"expected a silent drop, got {got!r}")
        print("    (no SYN-ACK, no RST: the port is invisible)")

        _say(f"client: spagate send {gate.ip()} --ip source")
        print("    (--ip source: open for the address the packet comes from; the lab has no")
        print("     public address to look up)")
        sent = gate.send("client", "--ip", "source")
        show("client |", (sent.stdout + sent.stderr) or "sent one SPA packet (exit 0)")
        if sent.returncode != 0:
            raise SpagateError("spagate send failed")

        _say(f"client: connect again (the window is open for {OPEN_SECONDS}s)")
        hold = gate.hold()
        first = hold.stdout.readline().strip()
        show("client |", first)
        if not first.startswith("connected"):
            raise SpagateError(f"expected to connect after the knock, got {first!r}")

        _say(f"waiting {OPEN_SECONDS + 1}s for the window to close")
        time.sleep(OPEN_SECONDS + 1)
        hold.stdin.write("still here after the window closed\n")
        hold.stdin.flush()
        reply = hold.stdout.readline().strip()
        show("client |", reply)
        if not reply.startswith("echo still here"):
            raise SpagateError(f"the open connection did not survive: {reply!r}")
        print("    (the connection opened in the window keeps working)")

        _say("client: a new connect after the window")
        got = gate.probe()
        show("client |", got)
        if got != "timeout":
            raise SpagateError(f"expected a silent drop after the window, got {got!r}")
        hold.stdin.close()

        _say("spagate status")
        st = gate.spagate("status")
        show("|", st.stdout + st.stderr)
        _say("Demo complete: invisible, opened by one packet, closed on time.")
    finally:
        if gate is not None:
            gate.cleanup()
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
        print("\ncleaned up: namespaces, pinned maps and temporary files removed", flush=True)
