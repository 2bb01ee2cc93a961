"""`spagate send` over loopback against a UDP listener started here, run as a real subprocess
with HOME in a temp dir; the packet choice logic and failure reporting in process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from threading import Thread

import pytest

from spagate.client import publicip
from spagate.client.send import (
    DEFAULT_COPIES,
    SendReport,
    Target,
    check_report,
    packet_ip,
    parse_ip_option,
    resolve,
    send_spa,
)
from spagate.errors import SpagateError
from spagate.protocol import Accepted, KeyPair, Verifier, generate_keypair
from spagate.protocol.tag import tag_keys, tag_ok

KP = generate_keypair()
CONFIG = f"key = {KP.key.hex()}\nhmac-key = {KP.hmac_key.hex()}\n"


@pytest.fixture
def home(tmp_path) -> Path:
    (tmp_path / ".spagate.ini").write_text(CONFIG)
    (tmp_path / ".spagate.ini").chmod(0o600)
    return tmp_path


def spagate(home: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAGATE_", "SPAROID_"))}
    env.pop("XDG_CACHE_HOME", None)
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "spagate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def udp():
    socks = []

    def listen(host: str = "127.0.0.1") -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((host, 0))
        s.settimeout(5)
        socks.append(s)
        return s

    yield listen
    for s in socks:
        s.close()


def copies_of(sock: socket.socket) -> tuple[bytes, int]:
    """The next packet and how many identical copies of it arrived (all left by now)."""
    data, _ = sock.recvfrom(2048)
    n, timeout = 1, sock.gettimeout()
    sock.settimeout(0.2)  # the last copy leaves 2 x 5 ms after the first
    try:
        while sock.recv(2048, socket.MSG_PEEK) == data:
            sock.recv(2048)
            n += 1
    except (BlockingIOError, TimeoutError):
        pass
    finally:
        sock.settimeout(timeout)
    return data, n


def received(sock: socket.socket, keys: KeyPair = KP, copies: int = DEFAULT_COPIES) -> Accepted:
    data, n = copies_of(sock)
    assert len(data) == 96 and n == copies
    result = Verifier([keys]).verify(data, time.time_ns() // 1_000_000)
    assert isinstance(result, Accepted), result
    assert tag_ok(tag_keys(keys), data)  # tagged: the gate finds its key by the hint
    return result


def test_copies_are_identical_tagged_and_configurable(home, udp):
    s = udp()
    port = str(s.getsockname()[1])
    assert spagate(home, "send", "127.0.0.1", "-p", port).returncode == 0
    data, n = copies_of(s)
    assert n == DEFAULT_COPIES == 3
    assert spagate(home, "send", "127.0.0.1", "-p", port, "--copies", "1").returncode == 0
    assert copies_of(s)[1] == 1
    (home / ".spagate.ini").write_text(CONFIG + "copies = 5\ncopy-interval = 1ms\n")
    assert spagate(home, "send", "127.0.0.1", "-p", port).returncode == 0
    assert copies_of(s)[1] == 5
    bad = spagate(home, "send", "127.0.0.1", "-p", port, "--copies", "11")
    assert bad.returncode == 2 and "--copies 11 is out of range 1-10" in bad.stderr
    (home / ".spagate.ini").write_text(CONFIG + "copies = 0\n")
    bad = spagate(home, "send", "127.0.0.1", "-p", port)
    assert bad.returncode == 2 and ".spagate.ini:3: copies: expected a whole number" in bad.stderr


@pytest.mark.parametrize(
    "host, expect", [("127.0.0.1", IPv4Address("127.0.0.1")), ("::1", IPv6Address("::1"))]
)
def test_send_loopback(home, udp, host, expect):
    s = udp(host)
    r = spagate(home, "send", host, "-p", str(s.getsockname()[1]))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert received(s).message.ip == expect


def test_send_localhost_name(home, udp):
    s = udp("127.0.0.1")
    r = spagate(home, "send", "localhost", "--port", str(s.getsockname()[1]))
    assert r.returncode == 0, r.stderr
    assert received(s).message.ip == IPv4Address("127.0.0.1")


@pytest.mark.parametrize(
    "option, host, expect",
    [
        ("198.51.100.4", "127.0.0.1", IPv4Address("198.51.100.4")),
        ("2001:db8::4", "127.0.0.1", IPv6Address("2001:db8::4")),
        ("::ffff:198.51.100.4", "127.0.0.1", IPv4Address("198.51.100.4")),
        ("source", "127.0.0.1", IPv4Address("0.0.0.0")),
        ("source", "::1", IPv6Address("::")),
    ],
)
def test_send_ip_option(home, udp, option, host, expect):
    s = udp(host)
    r = spagate(home, "send", host, "-p", str(s.getsockname()[1]), "--ip", option)
    assert r.returncode == 0, r.stderr
    assert received(s).message.ip == expect
    # where it matters, the client says what a packet naming no address does elsewhere
    assert ("a sparoid server would open 0.0.0.0" in r.stderr) == (option == "source")


def test_sparoid_ini_and_explicit_config(tmp_path, udp):
    other = generate_keypair()
    (tmp_path / ".sparoid.ini").write_text(f"key={KP.key.hex()}\nhmac-key={KP.hmac_key.hex()}\n")
    (tmp_path / ".sparoid.ini").chmod(0o600)
    s = udp()
    port = str(s.getsockname()[1])
    assert spagate(tmp_path, "send", "127.0.0.1", "-p", port).returncode == 0
    received(s)
    f = tmp_path / "other.ini"
    f.write_text(f"[x]\nkey={other.key.hex()}\nhmac-key={other.hmac_key.hex()}\n")
    f.chmod(0o600)
    assert spagate(tmp_path, "send", "127.0.0.1", "-p", port, "-c", str(f)).returncode == 0
    received(s, other)


def test_each_packet_fresh(home, udp):
    s = udp()
    port = str(s.getsockname()[1])
    for _ in range(2):
        assert spagate(home, "send", "127.0.0.1", "-p", port).returncode == 0
    (a, _), (b, _) = copies_of(s), copies_of(s)
    # Fresh apart from the hint (the IV's first 4 bytes: the identity's in this time step).
    assert a != b and a[36:48] != b[36:48]


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_all_addresses_failed(home):
    msg = one_line_error(spagate(home, "send", "255.255.255.255", "--ip", "192.0.2.1"))
    assert msg == (
        "spagate: error: could not send the SPA packet to 255.255.255.255: "
        "255.255.255.255: Permission denied"
    )


def test_unresolvable_host(home):
    msg = one_line_error(spagate(home, "send", "no-such-host.invalid"))
    assert msg.startswith("spagate: error: cannot resolve no-such-host.invalid: ")


def test_bad_ip_option(home):
    msg = one_line_error(spagate(home, "send", "127.0.0.1", "--ip", "nope"))
    assert msg == "spagate: error: --ip 'nope' is not an IP address or 'source'"


def test_group_readable_key_file_refused(home):
    cfg = home / ".spagate.ini"
    cfg.chmod(0o640)
    msg = one_line_error(spagate(home, "send", "127.0.0.1"))
    assert f"{cfg}: holds keys but is accessible by group or others (mode 0640)" in msg
    assert msg.endswith(f"run chmod 600 {cfg}")


def test_bad_key_in_file(home):
    (home / ".spagate.ini").write_text(f"key = {KP.key.hex()}\nhmac-key = 1234\n")
    msg = one_line_error(spagate(home, "send", "127.0.0.1"))
    assert msg == (
        f"spagate: error: {home}/.spagate.ini:2: invalid hmac-key: 4 hex characters, expected 64"
    )


def test_no_keys_anywhere(tmp_path):
    msg = one_line_error(spagate(tmp_path, "send", "127.0.0.1"))
    assert "no client keys" in msg and "spagate keygen" in msg


# --- in process: packet address choice, partial failure, public lookup ----------------------


def _no_lookup(family):
    raise AssertionError("no public lookup expected")


@pytest.mark.parametrize(
    "target, option, expect",
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.1.2.3", None, "127.0.0.1"),
        ("::1", None, "::1"),
        ("::ffff:127.0.0.1", None, "::1"),
        ("203.0.113.1", "source", "0.0.0.0"),
        ("2001:db8::1", "source", "::"),
        ("2001:db8::1", "198.51.100.1", "198.51.100.1"),
    ],
)
def test_packet_ip_choice(target, option, expect):
    t = Target(IPv6Address(target) if ":" in target else IPv4Address(target))
    assert str(packet_ip(t, parse_ip_option(option), _no_lookup)) == expect


def test_packet_ip_public_lookup_per_family():
    asked = []

    def lookup(family):
        asked.append(family)
        return IPv4Address("198.51.100.9") if family == socket.AF_INET else IPv6Address("2001::9")

    assert packet_ip(Target(IPv4Address("203.0.113.1")), None, lookup) == lookup(socket.AF_INET)
    assert packet_ip(Target(IPv6Address("2001:db8::1")), None, lookup) == IPv6Address("2001::9")
    assert asked[0] == socket.AF_INET and asked[2] == socket.AF_INET6


class LocalTarget(Target):
    """A target that claims a public address but is delivered to a local port."""

    def sockaddr(self, port):
        return ("127.0.0.1", port)

    @property
    def family(self):
        return socket.AF_INET


def test_public_ip_from_local_http_server_goes_into_the_packet(udp, tmp_path):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"198.51.100.77\n")

        def log_message(self, *args):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        s = udp()
        targets = [LocalTarget(IPv4Address("203.0.113.1")), LocalTarget(IPv4Address("203.0.113.2"))]
        report = send_spa(
            targets,
            s.getsockname()[1],
            KP,
            None,
            lambda fam: publicip.public_ip(fam, url, tmp_path),
            copies=1,
        )
        assert report.sent == targets and report.failed == []
        assert received(s, copies=1).message.ip == IPv4Address("198.51.100.77")
        assert received(s, copies=1).message.ip == IPv4Address("198.51.100.77")
    finally:
        srv.shutdown()
        srv.server_close()


def test_partial_failure_warns():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        targets = [Target(IPv4Address("255.255.255.255")), Target(IPv4Address("127.0.0.1"))]
        report = send_spa(targets, s.getsockname()[1], KP, IPv4Address("192.0.2.1"), _no_lookup)
        s.recv(200)
    assert report.sent == [targets[1]]
    assert report.failed == [(targets[0], "Permission denied")]
    warnings: list[str] = []
    check_report(report, "gate.example", warnings.append)
    assert warnings == [
        "spagate: warning: could not send the SPA packet to 255.255.255.255 "
        "(gate.example): Permission denied"
    ]


def test_failed_lookup_is_a_per_address_failure_suggesting_ip():
    def lookup(family):
        raise SpagateError("cannot find this host's public IPv6 address via U: x; pass --ip ADDR")

    report = send_spa([Target(IPv6Address("2001:db8::1"))], 9, KP, None, lookup)
    with pytest.raises(SpagateError, match="2001:db8::1: cannot find .* pass --ip ADDR"):
        check_report(report, "h", print)


def test_resolve_dedups_and_keeps_families():
    assert resolve("127.0.0.1") == [Target(IPv4Address("127.0.0.1"))]
    assert resolve("::1") == [Target(IPv6Address("::1"))]
    assert resolve("localhost")[0].ip.is_loopback
    with pytest.raises(SpagateError, match="cannot resolve"):
        resolve("no-such-host.invalid")
    assert isinstance(SendReport().sent, list)


def test_send_protocol_fwknop_over_loopback_and_its_errors(home, udp):
    from spagate.gate.core.fwknop_access import parse_access
    from spagate.protocol.fwknop import FwknopAccepted, FwknopVerifier

    # random-looking: access.conf refuses a key of one byte repeated
    k = "P5ocDnstT2qMHjtdf5osTmuNDxo8Xnud0vSmyOCx0/U="
    h = "fB6aO10vTmqLDB0+X3qbLE1ujwobPF1+nypLbI0OHzp8HpqLDB0+X3qbLE1ujwobPF1+nyA="
    # sparoid keys only: -A needs fwknop, fwknop needs its keys
    msg = one_line_error(spagate(home, "send", "127.0.0.1", "-A", "tcp/22"))
    assert "-A and --timeout need --protocol fwknop" in msg
    msg = one_line_error(spagate(home, "send", "127.0.0.1", "--protocol", "fwknop"))
    assert "no fwknop-key-base64" in msg
    assert "--protocol must be" in one_line_error(
        spagate(home, "send", "127.0.0.1", "--protocol", "knock")
    )
    (home / ".spagate.ini").write_text(
        CONFIG + f"fwknop-key-base64 = {k}\nfwknop-hmac-key-base64 = {h}\nfwknop-user = al\n"
    )
    s = udp()
    port = str(s.getsockname()[1])
    r = spagate(home, "send", "127.0.0.1", "--protocol", "fwknop", "-p", port,
                "-A", "tcp/22,udp/53", "--timeout", "90")  # fmt: skip
    assert r.returncode == 0, r.stderr
    access = parse_access(f"SOURCE ANY\nKEY_BASE64 {k}\nHMAC_KEY_BASE64 {h}\n", "a")
    got = FwknopVerifier(access.keys()).verify(s.recv(2000), time.time_ns() // 10**6)
    assert isinstance(got, FwknopAccepted), got
    m = got.message
    assert m.user == "al" and [str(p) for p in m.ports] == ["tcp/22", "udp/53"]
    assert m.client_timeout == 90 and str(m.ip) == "127.0.0.1"


WORK, LAB = generate_keypair(), generate_keypair()


def profiles(home: Path, port: int) -> None:
    (home / ".spagate.ini").write_text(
        CONFIG
        + f"\n[work]\nhost = local*\nkey = {WORK.key.hex()}\nhmac-key = {WORK.hmac_key.hex()}\n"
        + f"\n[lab]\nkey = {LAB.key.hex()}\nhmac-key = {LAB.hmac_key.hex()}\nport = {port}\n"
        + "ip = 198.51.100.9\n"
    )


def test_send_picks_the_profile_by_host_and_by_name(home, udp):
    s = udp("127.0.0.1")
    port = str(s.getsockname()[1])
    profiles(home, s.getsockname()[1])
    r = spagate(home, "send", "localhost", "-p", port, "-v")  # host = local*: [work]
    assert r.returncode == 0, r.stderr
    assert received(s, WORK).message.ip == IPv4Address("127.0.0.1")
    assert r.stderr == (
        f"sent 3 copies of 96 bytes to 127.0.0.1 udp/{port}, opening 127.0.0.1 "
        f"(keys: {home}/.spagate.ini [work])\n"
    )
    assert spagate(home, "send", "127.0.0.1", "-p", port).returncode == 0  # no match: the top
    assert received(s, KP).message.ip == IPv4Address("127.0.0.1")
    r = spagate(home, "send", "localhost", "-n", "lab")  # its port and its ip
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert received(s, LAB).message.ip == IPv4Address("198.51.100.9")
    msg = one_line_error(spagate(home, "send", "localhost", "-n", "nope"))
    assert msg.endswith("no profile [nope] (profiles: default, work, lab)")


def test_connect_picks_the_profile_too(home, udp):
    s = udp("127.0.0.1")
    profiles(home, s.getsockname()[1])
    r = spagate(home, "connect", "-h", "localhost", "-P", "9", "-p", str(s.getsockname()[1]),
                "--timeout", "0.2", "-v")  # fmt: skip
    assert received(s, WORK).message.ip == IPv4Address("127.0.0.1")
    assert "(keys: " in r.stderr and "[work])" in r.stderr  # then nothing listens on 9


def test_no_keys_says_where_keys_come_from(tmp_path):
    msg = one_line_error(spagate(tmp_path, "send", "127.0.0.1"))
    assert "get the two lines `key = ...` and `hmac-key = ...` from the gate's operator" in msg
    assert "chmod 600 ~/.spagate.ini" in msg and "keygen >" not in msg


def test_unknown_client_key_is_a_file_line_error(home):
    (home / ".spagate.ini").write_text(CONFIG + "protectd = tcp/22\n")
    msg = one_line_error(spagate(home, "send", "127.0.0.1"))
    assert msg.startswith(f"spagate: error: {home}/.spagate.ini:3: unknown key 'protectd'")
