"""Packets captured from the real fwknop client (2.6.10) decode to their documented fields, or
are refused for their documented reason (command, NAT, legacy no-HMAC mode)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from fwknop_helpers import vector_keys, vectors_dir

from spagate.errors import ConfigError
from spagate.gate.core.fwknop_access import parse_access
from spagate.protocol import Reason, Rejected
from spagate.protocol.fwknop import (
    FwknopAccepted,
    FwknopDecoded,
    FwknopKey,
    FwknopVerifier,
    ProtoPort,
    b64_decode,
    decode,
)
from spagate.protocol.fwknop.codec import _derive

TCP22 = (ProtoPort("tcp", 22),)
# file -> (user, message type, address, ports, client timeout, inner digest, HMAC type)
ACCESS = {
    "access_bob.spa": ("bob", 1, "10.1.2.3", TCP22, 0, "sha256", "sha256"),
    "access_alice_1.2.3.4.spa": ("alice", 1, "1.2.3.4", TCP22, 0, "sha256", "sha256"),
    "access_timeout45_two_ports.spa": (
        "root",
        3,
        "10.1.2.3",
        (ProtoPort("tcp", 22), ProtoPort("udp", 53)),
        45,
        "sha256",
        "sha256",
    ),  # fmt: skip
    "inner_digest_sha512.spa": ("root", 1, "10.1.2.3", TCP22, 0, "sha512", "sha256"),
    "hmac_sha512.spa": ("root", 1, "10.1.2.3", TCP22, 0, "sha256", "sha512"),
    "access_realclient_tcp2222.spa": (
        "realclient",
        1,
        "127.0.0.10",
        (ProtoPort("tcp", 2222),),
        0,
        "sha256",
        "sha256",
    ),  # fmt: skip
}
REFUSED = {
    "command_message.spa": (Reason.COMMAND, "echo hi"),
    "nat_access_timeout60.spa": (Reason.NAT, "192.168.1.5,22"),
}
LEGACY = "legacy_iv_no_hmac.spa"


def _require() -> dict[str, str]:
    if not (vectors_dir() / "keys.txt").is_file():
        pytest.fail(
            f"fwknop test vectors not found at {vectors_dir()}: clone shared/ beside the repo "
            "or set SPAGATE_VECTORS to the directory holding fwknop/"
        )
    return vector_keys()


def keys(hmac_type: str = "sha256") -> FwknopKey:
    k = _require()
    return FwknopKey.from_base64(k["KEY_BASE64"], k["HMAC_KEY_BASE64"], hmac_type)


def packet(name: str) -> bytes:
    """The UDP payload. Files saved by `fwknop --save-packet` end with a newline the client
    never sends; the payload is the line without it."""
    raw = (vectors_dir() / name).read_bytes()
    return raw[:-1] if raw.endswith(b"\n") else raw


def test_every_vector_is_covered():
    _require()
    names = {p.name for p in vectors_dir().glob("*.spa")}
    assert names == set(ACCESS) | set(REFUSED) | {LEGACY}


@pytest.mark.parametrize("name", sorted(ACCESS))
def test_access_vector_decodes_to_its_fields(name):
    user, mtype, ip, ports, timeout, digest, hmac_type = ACCESS[name]
    ring = [keys("sha384"), keys(hmac_type)]  # the wrong HMAC type first: tried, then skipped
    r = decode(packet(name), ring)
    assert isinstance(r, FwknopDecoded), r
    m = r.message
    assert r.key_index == 1
    assert (m.user, int(m.message_type), m.ip, m.ports) == (user, mtype, IPv4Address(ip), ports)
    assert (m.client_timeout, m.digest_type, m.version) == (timeout, digest, "3.0.0")
    assert len(m.rand) == 16 and m.rand.isdigit() and m.server_auth is None


@pytest.mark.parametrize("name", sorted(ACCESS))
def test_access_vector_verifies_once_within_120_s_of_its_timestamp(name):
    hmac_type = ACCESS[name][6]
    p = packet(name)
    ts = decode(p, [keys(hmac_type)]).message.timestamp
    v = FwknopVerifier([keys(hmac_type)])
    assert v.verify(p, ts * 1000 + 121_000).reason is Reason.STALE
    assert v.verify(p, ts * 1000 - 121_000).reason is Reason.FUTURE
    ok = v.verify(p, ts * 1000 + 120_000)
    assert isinstance(ok, FwknopAccepted) and ok.replay_until_ms == ts * 1000 + 120_000
    assert v.verify(p, ts * 1000 + 1).reason is Reason.REPLAY


def test_vectors_were_captured_in_one_session():
    stamps = [decode(packet(n), [keys(ACCESS[n][6])]).message.timestamp for n in ACCESS]
    assert max(stamps) - min(stamps) < 600


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_command_and_nat_vectors_are_refused_for_their_type(name):
    reason, asked = REFUSED[name]
    r = decode(packet(name), [keys()])
    assert isinstance(r, Rejected) and r.reason is reason and asked in r.detail
    ts = 1_795_305_723_000
    v = FwknopVerifier([keys()])
    assert v.verify(packet(name), ts).reason is reason
    assert len(v.replay) == 0  # a refused message uses up nothing


def test_saved_newline_is_not_part_of_a_packet():
    raw = (vectors_dir() / "access_alice_1.2.3.4.spa").read_bytes()
    assert raw.endswith(b"\n")
    r = decode(raw, [keys()])
    assert isinstance(r, Rejected) and r.reason is Reason.FORMAT


def test_legacy_vector_is_a_real_legacy_packet():
    """Decrypted here the way fwknop's legacy mode does it (passphrase padded with '0' to 16
    bytes, no HMAC), to show that what spagate refuses is the mode, not a broken file."""
    text = b"U2FsdGVkX1" + packet(LEGACY)
    data = b64_decode(text)
    assert data[:8] == b"Salted__"
    aes_key, iv = _derive(b"shortpw".ljust(16, b"0"), data[8:16])
    plain = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor().update(data[16:])
    fields = plain.split(b":")
    assert fields[4] == b"1" and b64_decode(fields[5]) == b"10.1.2.3,tcp/22"


def test_legacy_vector_is_refused():
    # With any identity spagate can hold (it always has an HMAC key), the packet has no tag.
    for hmac_type in ("sha256", "sha512", "sha1"):
        r = FwknopVerifier([keys(hmac_type)]).verify(packet(LEGACY), 1_795_305_723_000)
        assert isinstance(r, Rejected) and r.reason is Reason.MAC
    shortpw = FwknopKey(b"shortpw", b"any hmac key")
    assert decode(packet(LEGACY), [shortpw]).reason is Reason.MAC
    # And the access.conf stanza that would accept it is refused, with the reason.
    stanza = "SOURCE ANY\nKEY shortpw\nENCRYPTION_MODE legacy\n"
    with pytest.raises(ConfigError, match=r"access.conf:3: ENCRYPTION_MODE: legacy IV mode"):
        parse_access(stanza, "access.conf")
    with pytest.raises(ConfigError, match=r"access.conf:1: stanza has no HMAC_KEY.*no-HMAC"):
        parse_access("SOURCE ANY\nKEY shortpw\n", "access.conf")
