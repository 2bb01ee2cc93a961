"""spagate and Debian's real fwknop, both ways, on one access.conf that both read unchanged.

- fwknopd (UDP server mode, in a lab namespace) opens, in that namespace's iptables, exactly
  what spagate's encoder asks for, and refuses spagate-made forgeries, stale packets and
  replays; its digest cache holds the replay keys spagate computes.
- Packets sent live by the real `fwknop` client verify with spagate's codec, and spagate's
  policy grants what the stanza allows.
- fwknopd's own dump of the access.conf (two key stanzas, %include_keys) matches spagate's.
"""

from __future__ import annotations

import base64
import os
import re
import sys
import time
from ipaddress import ip_address

import pytest

from spagate.gate.core.fwknop_access import FwknopGrant, decide, load_access
from spagate.lab.fwknop import FWKNOPD_PORT, Fwknopd, Receiver, keygen, send_from
from spagate.lab.netns import Lab
from spagate.protocol import Reason
from spagate.protocol.fwknop import (
    FwknopAccepted,
    FwknopKey,
    FwknopVerifier,
    ProtoPort,
    access_request,
    encode,
    replay_key,
)

P = ProtoPort
PASS_KEY, PASS_HMAC = "a passphrase for stanza three", "another passphrase"
K2, H2 = base64.b64encode(os.urandom(32)).decode(), base64.b64encode(os.urandom(128)).decode()


@pytest.fixture(scope="module")
def lab():
    with Lab(("gate", "client")) as lab:
        yield lab


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fwknop")
    d.chmod(0o700)
    return d


@pytest.fixture(scope="module")
def alice_keys(workdir):
    return keygen(workdir / "alice.keys")


@pytest.fixture(scope="module")
def access_conf(workdir, alice_keys):
    path = workdir / "access.conf"
    path.write_text(
        "# read unchanged by fwknopd and by spagate\n"
        "SOURCE              ANY\n"
        "OPEN_PORTS          tcp/22, udp/53\n"
        "MAX_FW_TIMEOUT      600\n"
        f"%include_keys       {workdir}/alice.keys\n"
        "\n"
        "SOURCE              192.0.2.0/24\n"
        "OPEN_PORTS          tcp/2222\n"
        "HMAC_DIGEST_TYPE    sha512\n"
        "FW_ACCESS_TIMEOUT   20\n"
        f"KEY_BASE64          {K2}\n"
        f"HMAC_KEY_BASE64     {H2}\n"
        "\n"
        "SOURCE              ANY\n"
        f"KEY                 {PASS_KEY}\n"
        f"HMAC_KEY            {PASS_HMAC}\n"
        "HMAC_DIGEST_TYPE    sha384\n"
        "OPEN_PORTS          udp/51820\n"
        "REQUIRE_USERNAME    alice\n"
        "ACCESS_EXPIRE       01/19/2038\n"
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def config(access_conf):
    return load_access(str(access_conf))


@pytest.fixture(scope="module")
def fwknopd(lab, workdir, access_conf):
    return Fwknopd(lab, "gate", workdir, access_conf).start()


def gate_ip(lab) -> str:
    return lab["gate"].v4


def request(key: FwknopKey, ip: str, ports, user="alice", ts=None, timeout=0) -> bytes:
    ts = int(time.time()) if ts is None else ts
    return encode(key, access_request(ip, ports, user, ts, timeout), os.urandom(8))


def test_the_access_conf_reads_the_same_in_fwknopd(fwknopd, config, alice_keys):
    dump = fwknopd.dump()
    blocks = re.split(r"^SOURCE \(\d+\):", dump, flags=re.M)[1:]
    assert len(blocks) == len(config.stanzas) == 3, dump
    hmac_numbers = {"sha256": "3", "sha384": "4", "sha512": "5"}
    for stanza, block in zip(config.stanzas, blocks, strict=True):
        got = dict(re.findall(r"^\s*([A-Z_]+(?: \(\w+\))?):\s+(.*)$", block, re.M))
        ports = got["OPEN_PORTS"].replace(" ", "").split(",")
        assert ports == [str(p) for p in stanza.open_ports]
        assert int(got["KEY_LEN"]) == len(stanza.key.key)
        assert int(got["HMAC_KEY_LEN"]) == len(stanza.key.hmac_key)
        assert got["HMAC_DIGEST_TYPE"] == hmac_numbers[stanza.key.hmac_type]
        assert int(got["FW_ACCESS_TIMEOUT"]) == stanza.fw_access_timeout
        assert int(got["MAX_FW_TIMEOUT"]) == stanza.max_fw_timeout
        assert got["REQUIRE_USERNAME"] == (stanza.require_username or "<not set>")
        if stanza.expires is not None:
            assert got["ACCESS_EXPIRE"] == time.asctime(time.localtime(stanza.expires))
    assert config.stanzas[0].key == FwknopKey.from_base64(*alice_keys)


def test_fwknopd_opens_what_spagate_asks_for(lab, fwknopd, config):
    s = config.stanzas
    t = int(time.time())
    send_from(lab, "client", gate_ip(lab), FWKNOPD_PORT,
              request(s[0].key, "10.9.0.1", [P("tcp", 22), P("udp", 53)], timeout=45))  # fmt: skip
    send_from(lab, "client", gate_ip(lab), FWKNOPD_PORT,
              request(s[1].key, "10.9.0.2", [P("tcp", 2222)], user="bob"))  # fmt: skip
    # The third one is built in the client host by spagate's client code, on its own clock.
    code = (
        "import sys; from spagate.client.fwknop import *; "
        "from spagate.protocol.fwknop import FwknopKey; "
        "k = FwknopKey(sys.argv[1].encode(), sys.argv[2].encode(), 'sha384'); "
        "send_fwknop(sys.argv[3], int(sys.argv[4]), "
        "make_packet(k, '10.9.0.3', parse_access('udp/51820'), user='alice'))"
    )
    lab.run("client", [sys.executable, "-c", code, PASS_KEY, PASS_HMAC, gate_ip(lab),
                       str(FWKNOPD_PORT)], check=True)  # fmt: skip
    want = {
        ("10.9.0.1", "tcp", 22): 45,
        ("10.9.0.1", "udp", 53): 45,
        ("10.9.0.2", "tcp", 2222): 20,  # FW_ACCESS_TIMEOUT of its stanza
        ("10.9.0.3", "udp", 51820): 30,  # fwknopd's default
    }
    rules = fwknopd.wait(lambda: want.keys() <= (r := fwknopd.rules()).keys() and r)
    assert rules, fwknopd.log()
    for rule, seconds in want.items():
        # fwknopd stamps the rule with its own clock when the packet arrives, just after t
        assert -1 <= rules[rule] - (t + seconds) <= 5, (rule, rules[rule] - t)
    assert "Added access rule to FWKNOP_INPUT for 10.9.0.1 -> 0.0.0.0/0 tcp/22,udp/53" in (
        fwknopd.log()
    )


def test_fwknopd_refuses_forgeries_stale_packets_and_replays(lab, fwknopd, config):
    key = config.stanzas[0].key
    good = request(key, "10.9.0.7", [P("tcp", 22)])
    forged = request(FwknopKey(os.urandom(32), os.urandom(64)), "10.9.0.5", [P("tcp", 22)])
    wrong_aes = request(FwknopKey(os.urandom(32), key.hmac_key), "10.9.0.4", [P("tcp", 22)])
    stale = request(key, "10.9.0.6", [P("tcp", 22)], ts=int(time.time()) - 300)
    barrier = request(key, "10.9.0.8", [P("tcp", 22)])
    send = lambda p: send_from(lab, "client", gate_ip(lab), FWKNOPD_PORT, p)  # noqa: E731
    send(good)
    assert fwknopd.wait(lambda: ("10.9.0.7", "tcp", 22) in fwknopd.rules()), fwknopd.log()
    for p in (good, forged, wrong_aes, stale, barrier):
        send(p)
    assert fwknopd.wait(lambda: ("10.9.0.8", "tcp", 22) in fwknopd.rules()), fwknopd.log()
    opened = {ip for ip, _, _ in fwknopd.rules()}
    assert not opened & {"10.9.0.4", "10.9.0.5", "10.9.0.6"}
    log = fwknopd.log()
    assert "Replay detected" in log and "time difference is too great" in log
    # fwknopd's digest cache holds the replay key spagate derives from the same packet
    assert replay_key(good) in {d[:16] for d in fwknopd.digests()}
    # and spagate's verifier reaches the same verdicts on the same packets
    v = FwknopVerifier(config.keys())
    now = int(time.time() * 1000)
    src = ip_address(lab["client"].v4)
    verdict = lambda p: v.verify(p, now, config.candidates(src))  # noqa: E731
    assert isinstance(verdict(good), FwknopAccepted)
    assert verdict(good).reason is Reason.REPLAY
    assert verdict(forged).reason is Reason.MAC
    assert verdict(wrong_aes).reason in (Reason.PADDING, Reason.FIELD)
    assert verdict(stale).reason is Reason.STALE


CLIENT_CASES = {
    "sha256, two ports, client timeout": (
        ["-A", "tcp/22,udp/53", "-a", "10.9.1.1", "-f", "45", "-U", "alice"],
        "alice-keys", 0, "10.9.1.1", ["tcp/22", "udp/53"], [], 45,
    ),
    "sha512, -s (source address), SOURCE subnet": (
        ["-A", "tcp/2222", "-s", "-U", "bob", "--hmac-digest-type", "sha512"],
        "k2", 1, "client", ["tcp/2222"], [], 20,
    ),
    "sha384 passphrases, one port refused": (
        ["-A", "tcp/22,udp/51820", "-a", "10.9.1.3", "-U", "alice", "--hmac-digest-type",
         "sha384"],
        "passphrase", 2, "10.9.1.3", ["udp/51820"], ["tcp/22"], 30,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CLIENT_CASES))
def test_real_fwknop_client_packets_verify_with_spagate(lab, workdir, config, alice_keys, case):
    args, keys, stanza, ip, opens, denied, seconds = CLIENT_CASES[case]
    key_args = {
        "alice-keys": ["--key-base64-rijndael", alice_keys[0], "--key-base64-hmac", alice_keys[1]],
        "k2": ["--key-base64-rijndael", K2, "--key-base64-hmac", H2],
        "passphrase": ["--key-rijndael", PASS_KEY, "--key-hmac", PASS_HMAC],
    }[keys]
    rx = Receiver(lab, "gate", 62202)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    sent = lab.run(
        "client",
        ["env", f"HOME={home}", "fwknop", *args, "-D", gate_ip(lab), "-p", "62202",
         "--use-hmac", *key_args, "--no-rc-file", "--no-save-args"],
        timeout=30,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    src, payload = rx.get()
    assert src == lab["client"].v4
    now = time.time()
    v = FwknopVerifier(config.keys())
    acc = v.verify(payload, int(now * 1000), config.candidates(ip_address(src)))
    assert isinstance(acc, FwknopAccepted), acc
    m = acc.message
    assert acc.key_index == stanza and m.user == ("bob" if keys == "k2" else "alice")
    assert abs(m.timestamp - now) < 30
    g = decide(config, acc.key_index, m, ip_address(src), now)
    assert isinstance(g, FwknopGrant), g
    want_ip = lab["client"].v4 if ip == "client" else ip
    assert str(g.ip) == want_ip and g.seconds == seconds
    assert [str(p) for p in g.ports] == opens and [str(p) for p in g.denied] == denied
    assert v.verify(payload, int(now * 1000)).reason is Reason.REPLAY


def test_spagate_send_protocol_fwknop_opens_fwknopd(lab, workdir, fwknopd, alice_keys):
    """The CLI end to end: `spagate send --protocol fwknop -A ...` from a client profile's
    fwknop keys; fwknopd opens exactly that, for the asked seconds."""
    home = workdir / "cli-home"
    home.mkdir()
    ini = home / ".spagate.ini"
    ini.write_text(
        f"fwknop-key-base64 = {alice_keys[0]}\nfwknop-hmac-key-base64 = {alice_keys[1]}\n"
        "fwknop-user = alice\n"
    )
    ini.chmod(0o600)
    env = {**os.environ, "HOME": str(home)}
    t = int(time.time())
    sent = lab.run("client", [sys.executable, "-m", "spagate", "send", gate_ip(lab),
                              "--protocol", "fwknop", "-A", "udp/53", "--ip", "10.9.2.1",
                              "--timeout", "40"], env=env, timeout=30)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    rule = ("10.9.2.1", "udp", 53)
    rules = fwknopd.wait(lambda: rule in (r := fwknopd.rules()) and r)
    assert rules, fwknopd.log()
    assert -1 <= rules[rule] - (t + 40) <= 5
    assert not {k for k in rules if k[0] == "10.9.2.1"} - {rule}  # nothing else opened
