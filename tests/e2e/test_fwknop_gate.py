"""Debian's real `fwknop` client through a real spagate gate reading fwknopd's access.conf.

The gate protects tcp/22, tcp/2222 and tcp/3333 on lab host "gate"; access.conf (two key
stanzas, the first through %include_keys) allows tcp/22 to anyone with alice's keys and
tcp/2222 to bob's keys from the lab's subnet. A request opens exactly the ports it asks for
and its stanza allows, for the stanza's seconds; the others stay shut; the packet replayed,
before and after a restart of the gate, opens nothing.
"""

from __future__ import annotations

import base64
import os
import re
import sys
import time
from pathlib import Path

import pytest

from spagate.lab.fwknop import keygen, send_from
from spagate.lab.util import spa_verdicts, wait_for

K2, H2 = base64.b64encode(os.urandom(32)).decode(), base64.b64encode(os.urandom(64)).decode()
PORTS = (22, 2222, 3333)


@pytest.fixture
def fwgate(gate, tmp_path):
    tmp_path.chmod(0o700)
    alice = keygen(tmp_path / "alice.keys")
    access = tmp_path / "access.conf"
    access.write_text(
        "SOURCE              ANY\n"
        "OPEN_PORTS          tcp/22\n"
        "FW_ACCESS_TIMEOUT   3\n"
        f"%include_keys       {tmp_path}/alice.keys\n"
        "\n"
        "SOURCE              192.0.2.0/24\n"
        "OPEN_PORTS          tcp/2222, tcp/3333\n"
        "REQUIRE_USERNAME    bob\n"
        "HMAC_DIGEST_TYPE    sha512\n"
        f"KEY_BASE64          {K2}\n"
        f"HMAC_KEY_BASE64     {H2}\n"
    )
    access.chmod(0o600)
    gate.configure(
        "protected = " + ", ".join(f"tcp/{p}" for p in PORTS) + f"\nfwknop-access = {access}\n"
    )
    for p in PORTS:
        gate.service("tcp", p)
    gate.start()
    gate.wait_whole_second()  # a fresh replay memory: fwknop's stamps have whole seconds
    gate.alice = alice
    return gate


def fwknop(gate, *args: str, keys=None, save: str | None = None):
    """The real client, run on lab host "client"; returns its CompletedProcess."""
    k, h = keys or gate.alice
    home = gate.work / "fwhome"
    home.mkdir(exist_ok=True)
    argv = ["env", f"HOME={home}", "fwknop", *args, "-D", gate.ip(), "--use-hmac",
            "--key-base64-rijndael", k, "--key-base64-hmac", h, "--no-rc-file",
            "--no-save-args", *(["-B", save] if save else [])]  # fmt: skip
    out = gate.lab.run("client", argv, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def open_ports(gate, host: str = "client") -> set[int]:
    return {p for p in PORTS if gate.probe(host, port=p, timeout=1) != "timeout"}


def verdict_count(gate, reason: str) -> int:
    return spa_verdicts(gate).get(reason, 0)


def test_a_real_fwknop_request_opens_what_it_asks_and_nothing_else(fwgate):
    g = fwgate
    assert open_ports(g) == set()
    saved = str(g.work / "alice.spa")
    # -a: the address to open, here lab host "flood"'s, sent from "client"
    fwknop(g, "-A", "tcp/22", "-a", g.lab["flood"].v4, save=saved)
    assert wait_for(lambda: open_ports(g, "flood") == {22}, 5), g.log[-5:]
    assert open_ports(g) == set()  # the sender's own address stays shut
    assert any("fwknop" in ln and "tcp/22" in ln for ln in g.log), g.log[-5:]
    # the stanza's FW_ACCESS_TIMEOUT: shut again after 3 s
    assert wait_for(lambda: open_ports(g, "flood") == set(), 8)

    # the same packet again: a replay, before and after a restart of the gate
    packet = Path(saved).read_bytes().strip()  # the wire payload is fwknop's base64 text
    for restart in (False, True):
        if restart:
            g.stop()
            g.start()
        replays = verdict_count(g, "replay")
        send_from(g.lab, "client", g.ip(), 62201, packet)
        assert wait_for(lambda: verdict_count(g, "replay") > replays, 5)  # noqa: B023, g.log[-5:]
        assert open_ports(g, "flood") == set()


def test_the_second_stanza_opens_only_its_allowed_protected_ports(fwgate):
    g = fwgate
    # bob's keys ask for tcp/2222 and tcp/22: the stanza allows only 2222 (and 3333)
    fwknop(g, "-A", "tcp/2222,tcp/22", "-s", "-U", "bob", "--hmac-digest-type", "sha512",
           keys=(K2, H2))  # fmt: skip
    assert wait_for(lambda: open_ports(g) == {2222}, 5), g.log[-5:]
    # alice's keys asking for a port her stanza does not allow: refused, nothing opens
    fwknop(g, "-A", "tcp/3333", "-s")
    assert wait_for(lambda: verdict_count(g, "ports-not-allowed") == 1, 5), g.log[-5:]
    assert 3333 not in open_ports(g)


def test_spagate_send_speaks_fwknop_to_the_gate(fwgate):
    g = fwgate
    k, h = g.alice
    home = g.work / "sghome"
    home.mkdir()
    ini = home / ".spagate.ini"
    ini.write_text(f"protocol = fwknop\nfwknop-key-base64 = {k}\nfwknop-hmac-key-base64 = {h}\n")
    ini.chmod(0o600)
    sent = g.send("client", "-A", "tcp/22", "--ip", "source", env={**os.environ, "HOME": str(home)})
    assert sent.returncode == 0, sent.stderr
    assert wait_for(lambda: open_ports(g) == {22}, 5), g.log[-5:]


def test_a_knock_stamped_in_the_second_the_replay_memory_began_is_refused_the_next_opens(fwgate):
    """fwknop stamps whole seconds, so a knock sent in the second a fresh replay memory began
    carries a stamp before it and may be a replay the gate cannot recognise: refused, saying
    by how many ms; one stamped the second after opens. The real client, with its own
    --time-offset-minus to pick the stamp's second."""
    from spagate.gate.kernel.maps import GateMaps

    g = fwgate
    with GateMaps.from_pin_dir(g.pin_dir) as maps:
        since_ns = maps.replay_since()
    assert since_ns, "the gate's replay memory began with this start"
    began_ms = int(
        (time.time() - (time.clock_gettime_ns(time.CLOCK_BOOTTIME) - since_ns) / 1e9) * 1000
    )
    first = began_ms // 1000  # the second it began in

    def knock_stamped(second: int) -> None:
        while time.time() % 1 > 0.3:  # early in a second: the client stamps in this one
            time.sleep(0.05)
        back = int(time.time()) - second
        fwknop(g, "-A", "tcp/22", "-s", *([f"--time-offset-minus={back}sec"] if back else []))

    if began_ms % 1000:  # (a memory begun on a whole second has no such knock)
        knock_stamped(first)
        assert wait_for(lambda: verdict_count(g, "before-replay-memory") == 1, 5), g.log[-5:]
        line = next(x for x in reversed(g.log) if "before the gate's replay memory" in x)
        ms = int(re.search(r"stamped (\d+) ms before", line)[1])
        assert abs(ms - began_ms % 1000) <= 20, (line, began_ms)
        assert open_ports(g) == set()
    knock_stamped(first + 1)
    assert wait_for(lambda: open_ports(g) == {22}, 5), g.log[-5:]
    assert verdict_count(g, "before-replay-memory") == int(began_ms % 1000 != 0)


def test_a_bad_access_conf_is_refused_before_the_gate_attaches(gate, tmp_path):
    """access.conf was read only by the worker, after the loader attached: a stanza without an
    HMAC key left an attached gate whose worker died every second, taking no knock at all
    (sparoid's either). The loader reads it first now: one line, nothing attached."""
    tmp_path.chmod(0o700)
    access = tmp_path / "access.conf"
    access.write_text(f"SOURCE ANY\nOPEN_PORTS tcp/22\nKEY_BASE64 {K2}\n")
    access.chmod(0o600)
    gate.configure(f"fwknop-access = {access}\n")
    for command in ("attach", "load"):
        out = gate.lab.run(
            "gate",
            [sys.executable, "-m", "spagate", command, "eth0", "-c", str(gate.conf),
             "--pin-dir", gate.pin_dir],
            mounts=False, timeout=60,
        )  # fmt: skip
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        assert out.stderr.strip().splitlines()[-1] == (
            f"spagate: error: {access}:1: stanza has no HMAC_KEY or HMAC_KEY_BASE64: spagate "
            "refuses fwknop's no-HMAC mode, where a packet is decrypted before anything "
            "authenticates it"
        ), (command, out.stderr)
        assert "xdp" not in gate.lab.sh("gate", "ip -d link show eth0").stdout, command
