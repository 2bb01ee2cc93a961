"""fwknop access.conf: every supported name, includes, what is refused (file:line) or warned
about, and the grant policy (ports per port, timeouts, SOURCE, REQUIRE_*, expiry)."""

from __future__ import annotations

import base64
import os
import re
from datetime import UTC, date, datetime
from ipaddress import IPv4Address, IPv4Network, ip_address

import pytest

from spagate.errors import ConfigError
from spagate.gate.core.fwknop_access import (
    AccessConfig,
    FwknopGrant,
    FwknopRefusal,
    decide,
    grant,
    parse_access,
)
from spagate.protocol import Reason
from spagate.protocol.fwknop import (
    FwknopAccepted,
    FwknopKey,
    FwknopVerifier,
    ProtoPort,
    access_request,
    encode,
)

K1, H1 = os.urandom(32), os.urandom(64)
K2, H2 = os.urandom(32), os.urandom(128)
B = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
P = ProtoPort
T0 = 1_800_000_000


def utc_midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


class Files:
    """An in-memory AccessFiles."""

    def __init__(self, files: dict[str, str]):
        self.files = files

    def read(self, path: str) -> str:
        if path not in self.files:
            raise FileNotFoundError(2, "No such file or directory")
        return self.files[path]

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        names = [p[len(prefix) :] for p in self.files if p.startswith(prefix)]
        if not names:
            raise FileNotFoundError(2, "No such file or directory")
        return [n for n in names if "/" not in n]


def parse(text: str, files: dict[str, str] | None = None) -> AccessConfig:
    return parse_access(text, "/etc/fwknop/access.conf", Files(files or {}), utc_midnight)


def stanza(*lines: str, source: str = "ANY") -> str:
    return "\n".join([f"SOURCE {source}", f"KEY_BASE64 {B(K1)}", f"HMAC_KEY_BASE64 {B(H1)}",
                      *lines]) + "\n"  # fmt: skip


# A real-world layout: two stanzas, the second with its keys in a file of its own, as written
# by `fwknop --key-gen-file` (names with a trailing colon).
REAL = f"""\
#### fwknopd access.conf stanzas ###

SOURCE              192.0.2.0/24, 198.51.100.7
OPEN_PORTS          tcp/22
KEY_BASE64          {B(K1)}
HMAC_KEY_BASE64     {B(H1)}
FW_ACCESS_TIMEOUT   20
REQUIRE_SOURCE_ADDRESS  Y

SOURCE              ANY
OPEN_PORTS          tcp/22, udp/51820
RESTRICT_PORTS      tcp/23
HMAC_DIGEST_TYPE    sha512
MAX_FW_TIMEOUT      120
REQUIRE_USERNAME    alice
%include_keys       /home/alice/.fwknop-keys.conf
"""
KEYS_FILE = f"KEY_BASE64: {B(K2)}\nHMAC_KEY_BASE64: {B(H2)}\n"


def test_real_two_stanza_file_with_include_keys():
    cfg = parse(REAL, {"/home/alice/.fwknop-keys.conf": KEYS_FILE})
    a, b = cfg.stanzas
    assert a.where == "/etc/fwknop/access.conf:3" and b.where == "/etc/fwknop/access.conf:10"
    assert a.sources == (IPv4Network("192.0.2.0/24"), IPv4Network("198.51.100.7/32"))
    assert a.open_ports == (P("tcp", 22),) and a.restrict_ports == ()
    assert (a.fw_access_timeout, a.max_fw_timeout, a.require_source_address) == (20, 300, True)
    assert a.key == FwknopKey(K1, H1, "sha256")
    assert b.sources is None and b.open_ports == (P("tcp", 22), P("udp", 51820))
    assert b.restrict_ports == (P("tcp", 23),) and b.require_username == "alice"
    assert (b.fw_access_timeout, b.max_fw_timeout) == (30, 120)
    assert b.key == FwknopKey(K2, H2, "sha512")
    assert cfg.keys() == (a.key, b.key)
    assert cfg.warnings == ()


def test_every_supported_name():
    cfg = parse(
        "SOURCE: 10.0.0.0/255.0.0.0,192.0.2.9 ; a comment after the value\n"
        "DESTINATION 203.0.113.1\n"
        "KEY correct horse battery\n"
        "HMAC_KEY staple gun\n"
        "HMAC_DIGEST_TYPE SHA384\n"
        "ENCRYPTION_MODE cbc\n"
        "OPEN_PORTS TCP/22,udp/53\n"
        "RESTRICT_PORTS udp/53\n"
        "FW_ACCESS_TIMEOUT 0\n"
        "MAX_FW_TIMEOUT 0\n"
        "REQUIRE_USERNAME root\n"
        "REQUIRE_SOURCE yes\n"
        "ACCESS_EXPIRE 12/31/2030\n"
        "\n"
        "   # an indented comment\n"
        "; another comment\n"
        "SOURCE ANY\n"
        f"KEY_BASE64 {B(K2)}\n"
        f"HMAC_KEY_BASE64 {B(H2).rstrip('=')}\n"  # padding is optional
        "REQUIRE_SOURCE_ADDRESS N\n"
        "ACCESS_EXPIRE_EPOCH 1900000000\n"
    )
    a, b = cfg.stanzas
    assert a.sources == (IPv4Network("10.0.0.0/8"), IPv4Network("192.0.2.9/32"))
    assert a.destinations == (IPv4Network("203.0.113.1/32"),)
    assert a.key == FwknopKey(b"correct horse battery", b"staple gun", "sha384")
    assert a.open_ports == (P("tcp", 22), P("udp", 53)) and a.restrict_ports == (P("udp", 53),)
    assert (a.fw_access_timeout, a.max_fw_timeout) == (30, 300)  # 0 means the default
    assert a.require_username == "root" and a.require_source_address
    assert a.expires == utc_midnight(date(2030, 12, 31))
    assert b.key == FwknopKey(K2, H2) and not b.require_source_address
    assert b.expires == 1_900_000_000 and b.destinations is None


@pytest.mark.parametrize(
    "lines, line, match",
    [
        (["OPEN_PORT tcp/22"], 4, "unknown name"),
        (["open_ports tcp/22"], 4, "upper case: OPEN_PORTS"),
        (["OPEN_PORTS"], 4, "expected `NAME value`"),
        (["OPEN_PORTS ;"], 4, "expected `NAME value`"),
        (["OPEN_PORTS tcp/22 # ssh"], 4, "not tcp/PORT"),
        (["OPEN_PORTS icmp/0"], 4, "not tcp/PORT"),
        (["OPEN_PORTS tcp/65536"], 4, "not tcp/PORT"),
        (["RESTRICT_PORTS tcp"], 4, "not tcp/PORT"),
        (["DESTINATION ::1"], 4, "IPv4"),
        (["FW_ACCESS_TIMEOUT soon"], 4, "expected seconds"),
        (["MAX_FW_TIMEOUT 99999999"], 4, "expected seconds"),
        (["REQUIRE_SOURCE_ADDRESS true"], 4, "expected Y or N"),
        (["ACCESS_EXPIRE 2030-12-31"], 4, "MM/DD/YYYY"),
        (["ACCESS_EXPIRE 13/01/2030"], 4, "MM/DD/YYYY"),
        (["ACCESS_EXPIRE_EPOCH soon"], 4, "unix seconds"),
        (["ENCRYPTION_MODE legacy"], 4, "legacy IV mode is refused"),
        (["ENCRYPTION_MODE CTR"], 4, "CBC, fwknop's default, only"),
        (["ENCRYPTION_MODE Asymmetric"], 4, "CBC"),
        (["ENCRYPTION_MODE XYZ"], 4, "unknown mode"),
        (["HMAC_DIGEST_TYPE md5"], 4, "HMAC-MD5 is not supported"),
        (["HMAC_DIGEST_TYPE whirlpool"], 4, "unknown HMAC"),
        (["CMD_CYCLE_OPEN /bin/true"], 4, "command cycles are not supported"),
        (["CMD_CYCLE_CLOSE NONE"], 4, "command cycles"),
        (["CMD_CYCLE_TIMER 10"], 4, "command cycles"),
        (["FORCE_NAT 192.168.1.2 22"], 4, "NAT is not supported"),
        (["FORCE_SNAT 192.168.1.2"], 4, "NAT is not supported"),
        (["FORCE_MASQUERADE Y"], 4, "NAT is not supported"),
        (["FORWARD_ALL Y"], 4, "NAT is not supported"),
        (["DISABLE_DNAT Y"], 4, "NAT is not supported"),
        (["KEY __CHANGEME__"], 4, "still __CHANGEME__"),
        (["HMAC_KEY_BASE64 __changeme__"], 4, "still __CHANGEME__"),
        (["KEY " + "x" * 33], 4, "33 bytes, fwknop takes 1 to 32"),
        (["HMAC_KEY_BASE64 " + B(os.urandom(129))], 4, "129 bytes"),
        (["KEY_BASE64 not*base64"], 4, "KEY_BASE64: not base64"),
        ([f"HMAC_KEY_BASE64 {B(K1)}"], 4, "must differ"),
        (["%include_keys relative/keys.conf"], 4, "use an absolute path"),
        (["%include_keys /missing.conf"], 4, "/missing.conf: No such file"),
        (["%include /missing.conf"], 4, "%include /missing.conf"),
        (["%include_folder /nowhere"], 4, "%include_folder /nowhere"),
    ],
)
def test_refused_lines_name_file_and_line(lines, line, match):
    with pytest.raises(ConfigError, match=match) as e:
        parse(stanza(*lines))
    assert e.value.path == "/etc/fwknop/access.conf" and e.value.line == line


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("", None, "no SOURCE stanza"),
        ("# only comments\n", None, "no SOURCE stanza"),
        (f"KEY_BASE64 {B(K1)}\nSOURCE ANY\n", 1, "before the first SOURCE"),
        ("%include_keys /k.conf\nSOURCE ANY\n", 1, "before the first SOURCE"),
        ("SOURCE ANY\n", 1, "no KEY or KEY_BASE64"),
        ("SOURCE ANY\nGPG_DECRYPT_ID abc\nGPG_DECRYPT_PW x\n", 1, "GPG-only stanzas"),
        (f"SOURCE ANY\nKEY_BASE64 {B(K1)}\n", 1, "no HMAC_KEY or HMAC_KEY_BASE64"),
        ("SOURCE 10.0.0.0/33\n", 1, "SOURCE: '10.0.0.0/33' is not"),
        ("SOURCE gate.example\n", 1, "SOURCE: 'gate.example' is not"),
        ("SOURCE 2001:db8::/32\n", 1, "fwknop addresses are IPv4"),
        ("SOURCE 10.0.0.1,\n", 1, "SOURCE: '' is not"),
        ("SOURCE\n", 1, "expected `NAME value`"),
    ],
)
def test_refused_files(text, line, match):
    with pytest.raises(ConfigError, match=match) as e:
        parse(text)
    assert e.value.line == line


def test_errors_never_echo_a_key_line():
    with pytest.raises(ConfigError) as e:
        parse(stanza("KEY"))
    assert "KEY" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse(f"HMAC_KEY_BASE64 {B(H1)}\n")
    assert B(H1) not in str(e.value)


def test_warnings_for_what_is_ignored():
    cfg = parse(
        stanza(
            "GPG_REMOTE_ID 1234ABCD",
            "ENABLE_CMD_EXEC Y",
            "ENABLE_CMD_EXEC N",
            "CMD_EXEC_USER nobody",
            "HMAC_DIGEST_TYPE sha1",
            "FORWARD_ALL N",
            "FW_ACCESS_TIMEOUT 600",
            "OPEN_PORTS tcp/22",
            "OPEN_PORTS tcp/2222",
        )
    )
    w = "\n".join(cfg.warnings)
    assert "access.conf:4: GPG_REMOTE_ID ignored: GPG-encrypted packets are not supported" in w
    assert "access.conf:5: ENABLE_CMD_EXEC Y ignored" in w and ":6:" not in w
    assert "access.conf:7: CMD_EXEC_USER ignored" in w
    assert "access.conf:8: HMAC_DIGEST_TYPE sha1: accepted for existing clients" in w
    assert "access.conf:12: OPEN_PORTS replaces the value from /etc/fwknop/access.conf:11" in w
    assert "access.conf:1: FW_ACCESS_TIMEOUT 600 > MAX_FW_TIMEOUT 300" in w
    (s,) = cfg.stanzas
    assert s.open_ports == (P("tcp", 2222),) and s.key.hmac_type == "sha1"


def test_include_and_include_folder():
    files = {
        "/etc/fwknop/more.conf": stanza("OPEN_PORTS tcp/1", source="192.0.2.1"),
        "/etc/fwknop/access.d/b.conf": stanza("OPEN_PORTS tcp/3"),
        "/etc/fwknop/access.d/a.conf": stanza("OPEN_PORTS tcp/2", "%include /etc/fwknop/x"),
        "/etc/fwknop/access.d/notes.txt": "not a stanza\n",
        "/etc/fwknop/x": "# nothing here\n",
    }
    text = (
        "%include /etc/fwknop/more.conf\n"
        + stanza("OPEN_PORTS tcp/9")
        + "%include_folder /etc/fwknop/access.d/\n"
        + "RESTRICT_PORTS tcp/9\n"  # fwknopd: still the stanza opened before the include
    )
    cfg = parse(text, files)
    assert [s.open_ports for s in cfg.stanzas] == [
        (P("tcp", 1),),
        (P("tcp", 9),),
        (P("tcp", 2),),
        (P("tcp", 3),),
    ]
    assert [s.where for s in cfg.stanzas] == [
        "/etc/fwknop/more.conf:1",
        "/etc/fwknop/access.conf:2",
        "/etc/fwknop/access.d/a.conf:1",
        "/etc/fwknop/access.d/b.conf:1",
    ]
    assert cfg.stanzas[1].restrict_ports == (P("tcp", 9),)


def test_errors_in_included_files_name_that_file():
    files = {"/etc/fwknop/bad.conf": stanza("OPEN_PORTS tcp/x")}
    with pytest.raises(ConfigError) as e:
        parse("%include /etc/fwknop/bad.conf\n", files)
    assert (e.value.path, e.value.line) == ("/etc/fwknop/bad.conf", 4)
    files = {"/k.conf": f"KEY_BASE64 {B(K2)}\nOPEN_PORTS tcp/22\n"}
    with pytest.raises(ConfigError, match="only KEY, KEY_BASE64") as e:
        parse("SOURCE ANY\n%include_keys /k.conf\n", files)
    assert (e.value.path, e.value.line) == ("/k.conf", 2)


def test_include_depth_is_limited():
    files = {
        "/a.conf": "%include /b.conf\n",
        "/b.conf": "%include /c.conf\n",
        "/c.conf": stanza(),
    }
    assert len(parse("%include /b.conf\n", files).stanzas) == 1  # 3 levels: fine
    with pytest.raises(ConfigError, match="more than 3 levels deep") as e:
        parse("%include /a.conf\n", files)
    assert (e.value.path, e.value.line) == ("/b.conf", 1)
    loop = {"/loop.conf": "%include /loop.conf\n"}
    with pytest.raises(ConfigError, match="levels deep"):
        parse("%include /loop.conf\n", loop)


def test_without_file_access_includes_are_refused():
    with pytest.raises(ConfigError, match="no file access"):
        parse_access("%include /x.conf\n", "access.conf")


def test_include_keys_replaces_keys_given_before_it():
    cfg = parse(stanza("%include_keys /k.conf"), {"/k.conf": KEYS_FILE})
    assert cfg.stanzas[0].key == FwknopKey(K2, H2)
    assert any("KEY_BASE64 replaces" in w for w in cfg.warnings)


# --- policy --------------------------------------------------------------------------------


def one(*lines: str, source: str = "ANY"):
    return parse(stanza(*lines, source=source)).stanzas[0]


def req(ports=(("tcp", 22),), ip="192.0.2.50", user="bob", timeout=0):
    return access_request(ip, list(ports), user, T0, timeout)


SRC = ip_address("192.0.2.50")


@pytest.mark.parametrize(
    "lines, asked, opens, denied",
    [
        ((), [("tcp", 22), ("udp", 53)], ["tcp/22", "udp/53"], []),
        (("OPEN_PORTS tcp/22",), [("tcp", 22), ("udp", 53)], ["tcp/22"], ["udp/53"]),
        (("RESTRICT_PORTS udp/53",), [("tcp", 22), ("udp", 53)], ["tcp/22"], ["udp/53"]),
        (
            ("OPEN_PORTS tcp/22,tcp/80", "RESTRICT_PORTS tcp/22"),
            [("tcp", 22), ("tcp", 80)],
            ["tcp/80"],
            ["tcp/22"],
        ),  # fmt: skip
        (("OPEN_PORTS udp/22",), [("tcp", 22), ("udp", 22)], ["udp/22"], ["tcp/22"]),
    ],
)
def test_ports_are_granted_one_by_one(lines, asked, opens, denied):
    g = grant(one(*lines), req(asked), SRC, T0)
    assert isinstance(g, FwknopGrant)
    assert [str(p) for p in g.ports] == opens and [str(p) for p in g.denied] == denied


def test_no_allowed_port_is_a_refusal():
    r = grant(one("OPEN_PORTS tcp/22"), req([("tcp", 23)]), SRC, T0)
    assert isinstance(r, FwknopRefusal) and r.reason == "ports-not-allowed" and "tcp/23" in r.detail
    r = grant(one("RESTRICT_PORTS tcp/22"), req(), SRC, T0)
    assert r.reason == "ports-not-allowed"


@pytest.mark.parametrize(
    "lines, timeout, seconds",
    [
        ((), 0, 30),
        ((), 45, 45),
        ((), 1000, 300),
        (("FW_ACCESS_TIMEOUT 10",), 0, 10),
        (("FW_ACCESS_TIMEOUT 10",), 200, 200),  # a client timeout replaces FW_ACCESS_TIMEOUT
        (("MAX_FW_TIMEOUT 60",), 61, 60),
        (("FW_ACCESS_TIMEOUT 600",), 0, 300),  # capped by MAX_FW_TIMEOUT too
        (("FW_ACCESS_TIMEOUT 600", "MAX_FW_TIMEOUT 900"), 0, 600),
    ],
)
def test_timeouts(lines, timeout, seconds):
    assert grant(one(*lines), req(timeout=timeout), SRC, T0).seconds == seconds


def test_source_and_destination():
    s = one(source="192.0.2.0/24")
    assert isinstance(grant(s, req(), ip_address("192.0.2.7"), T0), FwknopGrant)
    assert isinstance(grant(s, req(), ip_address("::ffff:192.0.2.7"), T0), FwknopGrant)
    assert grant(s, req(), ip_address("198.51.100.1"), T0).reason == "source-not-allowed"
    assert grant(s, req(), ip_address("2001:db8::1"), T0).reason == "source-not-allowed"
    assert isinstance(grant(one(), req(), ip_address("2001:db8::1"), T0), FwknopGrant)  # ANY
    d = one("DESTINATION 203.0.113.1")
    assert isinstance(grant(d, req(), SRC, T0, ip_address("203.0.113.1")), FwknopGrant)
    assert grant(d, req(), SRC, T0, ip_address("203.0.113.2")).reason == "wrong-destination"


def test_zero_address_and_require_source_address():
    g = grant(one(), req(ip="0.0.0.0"), SRC, T0)
    assert g.ip == SRC and not g.third_party
    g6 = grant(one(), req(ip="0.0.0.0"), ip_address("2001:db8::5"), T0)
    assert g6.ip == ip_address("2001:db8::5")
    r = grant(one("REQUIRE_SOURCE_ADDRESS Y"), req(ip="0.0.0.0"), SRC, T0)
    assert r.reason == "no-source-address"
    g = grant(one("REQUIRE_SOURCE_ADDRESS Y"), req(ip="198.51.100.9"), SRC, T0)
    assert g.ip == IPv4Address("198.51.100.9") and g.third_party


def test_unusable_addresses():
    for ip in ("224.0.0.1", "255.255.255.255"):
        assert grant(one(), req(ip=ip), SRC, T0).reason == "unusable-ip"


def test_require_username_and_expiry():
    assert grant(one("REQUIRE_USERNAME alice"), req(user="bob"), SRC, T0).reason == "wrong-user"
    assert isinstance(grant(one("REQUIRE_USERNAME alice"), req(user="alice"), SRC, T0),
                      FwknopGrant)  # fmt: skip
    s = one(f"ACCESS_EXPIRE_EPOCH {T0}")
    assert isinstance(grant(s, req(), SRC, T0), FwknopGrant)
    assert grant(s, req(), SRC, T0 + 1).reason == "stanza-expired"
    s = one("ACCESS_EXPIRE 01/15/2027")
    day = utc_midnight(date(2027, 1, 15))
    assert isinstance(grant(s, req(), SRC, day), FwknopGrant)
    assert grant(s, req(), SRC, day + 1).reason == "stanza-expired"


def test_decide_falls_through_to_the_next_stanza_with_the_same_keys():
    text = (
        stanza("OPEN_PORTS tcp/22")
        + stanza("OPEN_PORTS tcp/80", source="198.51.100.0/24")
        + f"SOURCE ANY\nKEY_BASE64 {B(K2)}\nHMAC_KEY_BASE64 {B(H2)}\nOPEN_PORTS tcp/443\n"
        + stanza("OPEN_PORTS tcp/8080")
    )
    cfg = parse(text)
    web = req([("tcp", 8080)])
    g = decide(cfg, 0, web, SRC, T0)
    assert isinstance(g, FwknopGrant) and g.stanza_index == 3 and g.ports == (P("tcp", 8080),)
    # a stanza with other keys is never consulted, whatever it allows
    r = decide(cfg, 0, req([("tcp", 443)]), SRC, T0)
    assert isinstance(r, FwknopRefusal) and r.reason == "ports-not-allowed" and ":1 " in r.detail
    # the stanza for 198.51.100.0/24 is skipped for other sources
    assert decide(cfg, 0, req([("tcp", 80)]), SRC, T0).reason == "ports-not-allowed"
    g = decide(cfg, 0, req([("tcp", 80)]), ip_address("198.51.100.3"), T0)
    assert g.stanza_index == 1


def test_candidates():
    cfg = parse(
        stanza(source="192.0.2.0/24")
        + stanza("DESTINATION 203.0.113.1", source="198.51.100.1")
        + stanza()
    )
    assert cfg.candidates(SRC) == (0, 2)
    assert cfg.candidates(ip_address("198.51.100.1")) == (1, 2)
    assert cfg.candidates(ip_address("198.51.100.1"), ip_address("203.0.113.9")) == (2,)
    assert cfg.candidates(ip_address("2001:db8::1")) == (2,)


def test_parse_verify_decide_end_to_end():
    cfg = parse(REAL, {"/home/alice/.fwknop-keys.conf": KEYS_FILE})
    v = FwknopVerifier(cfg.keys())
    now = T0 * 1000
    msg = access_request("0.0.0.0", [("udp", 51820), ("tcp", 23)], "alice", T0, 600)
    pkt = encode(FwknopKey(K2, H2, "sha512"), msg, os.urandom(8))
    src = ip_address("203.0.113.77")
    # From an address outside stanza 1's SOURCE only stanza 2 is tried.
    assert v.check(pkt, now, cfg.candidates(src)).key_index == 1
    acc = v.verify(pkt, now, cfg.candidates(src))
    assert isinstance(acc, FwknopAccepted)
    g = decide(cfg, acc.key_index, acc.message, src, T0)
    assert g.ip == src and g.ports == (P("udp", 51820),) and g.denied == (P("tcp", 23),)
    assert g.seconds == 120
    # stanza 1's keys from a source it does not list: nothing tries them
    pkt1 = encode(FwknopKey(K1, H1), req(), os.urandom(8))
    assert v.verify(pkt1, now, cfg.candidates(src)).reason is Reason.MAC
    assert isinstance(v.verify(pkt1, now, cfg.candidates(SRC)), FwknopAccepted)


def test_docs_table_names_every_access_conf_name():
    from pathlib import Path

    from spagate.gate.core.fwknop_access import KNOWN

    doc = (Path(__file__).parents[4] / "docs" / "fwknop.md").read_text()
    for name in KNOWN:
        assert f"`{name}`" in doc or (name.startswith("GPG_") and "`GPG_*`" in doc), name
    for directive in ("%include", "%include_folder", "%include_keys"):
        assert f"`{directive} " in doc


def test_outcome_names_stay_unique_in_the_gate_vocabulary():
    from spagate.gate.core.fwknop_access import FwknopPolicyReason
    from spagate.gate.core.reasons import PolicyReason, vocabulary

    names = vocabulary()  # raises if a verifier Reason clashes with a kernel or policy name
    assert {r.value for r in Reason} <= names.keys()
    assert not {r.value for r in FwknopPolicyReason} & names.keys()
    assert {PolicyReason.WRONG_DESTINATION, PolicyReason.UNUSABLE_IP} <= names.keys()


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("KEY_BASE64 " + base64.b64encode(bytes(32)).decode(), "KEY_BASE64: one byte repeated"),
        ("HMAC_KEY_BASE64 " + base64.b64encode(b"\xff" * 64).decode(),
         "HMAC_KEY_BASE64: one byte repeated: not a key"),
        ("KEY aaaaaaaaaaaa", "KEY: one byte repeated"),
    ],
)  # fmt: skip
def test_a_placeholder_key_is_refused(line, words):
    good = {"KEY": "KEY correct horse battery", "HMAC": "HMAC_KEY staple gun battery"}
    slot = "HMAC" if line.startswith("HMAC") else "KEY"
    text = "SOURCE ANY\n" + "\n".join(line if k == slot else v for k, v in good.items()) + "\n"
    lineno = 3 if slot == "HMAC" else 2
    with pytest.raises(ConfigError, match=rf"^access.conf:{lineno}: {re.escape(words)}"):
        parse_access(text, "access.conf")


def test_a_short_key_is_said_not_refused():
    # One captured knock lets anyone guess it offline; refusing it would lock its holders
    # out at the next upgrade, so it is a warning at start.
    cfg = parse_access("SOURCE ANY\nKEY pw\nHMAC_KEY staple gun battery\n", "access.conf")
    assert cfg.stanzas[0].key.key == b"pw"
    said = "access.conf:2: KEY of 2 bytes: one captured knock lets anyone guess a key this short"
    assert cfg.warnings == (said + " offline (fwknop --key-gen prints random ones)",)


@pytest.mark.parametrize("breaker", ["\u2028", "\x85", "\x0b"])
def test_a_stanza_cannot_hide_behind_a_comment_on_a_line_break_only_some_tools_see(breaker):
    text = (f"# SOURCE ANY (retired){breaker}SOURCE ANY\nKEY correct horse battery\n"
            "HMAC_KEY staple gun battery\n")  # fmt: skip
    with pytest.raises(ConfigError, match=rf"^access.conf:1: the line holds U\+{ord(breaker):04X}"):
        parse_access(text, "access.conf")
