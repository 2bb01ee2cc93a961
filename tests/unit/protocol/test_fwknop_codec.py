"""fwknop codec: round trips, the wire form, tampering, every field check, the encoder's limits."""

from __future__ import annotations

import os
from ipaddress import IPv4Address

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from fwknop_helpers import T0, b64, new_key, plaintext, sealed, with_digest

from spagate.protocol import Reason, Rejected
from spagate.protocol.fwknop import (
    HMAC_TYPES,
    FwknopDecoded,
    FwknopKey,
    FwknopMessage,
    MessageType,
    ProtoPort,
    access_request,
    b64_decode,
    build_plaintext,
    decode,
    encode,
)
from spagate.protocol.fwknop.codec import MAX_PACKET, MIN_PACKET, _derive
from spagate.protocol.fwknop.keys import b64_unpadded

KEY = new_key()
B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def request(**kw) -> FwknopMessage:
    args = dict(ip="10.1.2.3", ports=[("tcp", 22)], user="bob", timestamp=T0)
    args.update(kw)
    return access_request(**args)


def pkt(key: FwknopKey = KEY, **kw) -> bytes:
    return encode(key, request(**kw), os.urandom(8))


def reason(packet: bytes, keys=(KEY,)) -> Reason:
    r = decode(packet, list(keys))
    assert isinstance(r, Rejected), r
    assert r.detail
    return r.reason


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("hmac_type", sorted(HMAC_TYPES))
def test_round_trip_every_hmac_type(hmac_type):
    key = new_key(hmac_type)
    msg = request(ports=[("tcp", 22), ("udp", 53)], client_timeout=45)
    r = decode(encode(key, msg, os.urandom(8)), [new_key(hmac_type), key])
    assert r == FwknopDecoded(msg, 1)
    assert r.message.message_type is MessageType.CLIENT_TIMEOUT_ACCESS


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512", "sha1", "sha3_256", "sha3_512"])
def test_round_trip_every_inner_digest(digest):
    msg = FwknopMessage(IPv4Address("192.0.2.7"), (ProtoPort("udp", 51820),), "alice", T0,
                        digest_type=digest, server_auth="crypt,pw")  # fmt: skip
    assert decode(encode(KEY, msg, os.urandom(8)), [KEY]).message == msg


def test_md5_inner_digest_is_read_as_fwknop_does():
    # libfko can still send an MD5 inner digest; it sits inside the HMAC, so it is harmless.
    r = decode(sealed(KEY, plaintext(digest="md5")), [KEY])
    assert isinstance(r, FwknopDecoded) and r.message.digest_type == "md5"


def test_wire_form_is_fwknop_s():
    p = pkt()
    assert MIN_PACKET <= len(p) <= MAX_PACKET and not p.translate(None, B64)
    assert not p.startswith(b"U2FsdGVkX1") and b"=" not in p
    data = b64_decode(b"U2FsdGVkX1" + p[:-43])
    assert data[:8] == b"Salted__" and (len(data) - 16) % 16 == 0
    assert build_plaintext(request()).count(":") == 6


def test_type_1_and_type_3_plaintext_layout():
    one = build_plaintext(request()).split(":")
    three = build_plaintext(request(client_timeout=60)).split(":")
    assert one[4] == "1" and len(one) == 7
    assert three[4] == "3" and three[6] == "60" and len(three) == 8
    assert b64_decode(one[5]) == b"10.1.2.3,tcp/22" and b64_decode(one[1]) == b"bob"
    assert one[0].isdigit() and len(one[0]) == 16


def test_server_auth_and_timeout_order():
    # server auth comes before the client timeout, as libfko writes and reads them
    text = plaintext(mtype=3, extra=(b64("crypt,secret"), "33"))
    m = decode(sealed(KEY, text), [KEY]).message
    assert (m.server_auth, m.client_timeout) == ("crypt,secret", 33)
    m = decode(sealed(KEY, plaintext(mtype=1, extra=(b64("x"),))), [KEY]).message
    assert m.server_auth == "x" and m.client_timeout == 0


def test_duplicate_ports_collapse():
    text = plaintext(access="10.1.2.3,tcp/22,udp/53,tcp/22")
    assert decode(sealed(KEY, text), [KEY]).message.ports == (
        ProtoPort("tcp", 22),
        ProtoPort("udp", 53),
    )


def test_zero_address_means_the_packet_source():
    m = decode(pkt(ip="0.0.0.0"), [KEY]).message
    assert m.ip.is_unspecified


# --- tampering and the wire form ----------------------------------------------------------


@pytest.mark.parametrize("hmac_type", ["sha256", "sha512"])
def test_each_hmac_character_matters(hmac_type):
    key = new_key(hmac_type)
    p = pkt(key)
    n = HMAC_TYPES[hmac_type]
    for pos in range(len(p) - n, len(p)):
        for sub in (B64[(B64.index(p[pos]) + 1) % 64], B64[(B64.index(p[pos]) + 37) % 64]):
            bad = p[:pos] + bytes([sub]) + p[pos + 1 :]
            assert reason(bad, [key]) is Reason.MAC, pos


def test_a_second_spelling_of_the_same_tag_is_refused():
    # The last character of a 32-byte tag carries 2 unused bits: a spelling that decodes to
    # the same bytes is another packet to the replay cache, so only the exact text may pass.
    p = pkt()
    last = B64.index(p[-1])
    for unused in (1, 2, 3):
        twin = p[:-1] + bytes([B64[last ^ unused]])
        assert b64_decode(twin[-43:]) == b64_decode(p[-43:])
        assert reason(twin) is Reason.MAC


def test_each_ciphertext_character_matters():
    p = pkt()
    for pos in range(0, len(p) - 43, 7):
        bad = p[:pos] + bytes([B64[(B64.index(p[pos]) + 1) % 64]]) + p[pos + 1 :]
        assert reason(bad) is Reason.MAC, pos


@pytest.mark.parametrize(
    "mangle, why",
    [
        (lambda p: p + b"=", Reason.FORMAT),
        (lambda p: p + b"\n", Reason.FORMAT),
        (lambda p: p[:50] + b"!" + p[51:], Reason.FORMAT),
        (lambda p: p[:50] + b"\0" + p[51:], Reason.FORMAT),
        (lambda p: p[:50] + b"\xc3\xa9" + p[52:], Reason.FORMAT),
        (lambda p: b"U2FsdGVkX1" + p, Reason.FORMAT),
        (lambda p: p[:-1], Reason.MAC),
        (lambda p: p + b"A", Reason.MAC),
        (lambda p: p[1:], Reason.MAC),
        (lambda p: p[: MIN_PACKET - 1], Reason.SIZE),
        (lambda p: p * 10, Reason.SIZE),
        (lambda p: b"", Reason.SIZE),
    ],
)
def test_garbage_is_refused_before_any_decryption(mangle, why):
    assert reason(mangle(pkt())) is why


def test_not_bytes():
    for junk in (None, "text" * 50, 42, ["a"]):
        assert reason(junk) is Reason.SIZE
    assert isinstance(decode(bytearray(pkt()), [KEY]), FwknopDecoded)
    assert isinstance(decode(memoryview(pkt()), [KEY]), FwknopDecoded)


def test_wrong_keys():
    p = pkt()
    assert reason(p, [new_key()]) is Reason.MAC
    assert reason(p, [new_key("sha512")]) is Reason.MAC
    assert reason(p, [FwknopKey(KEY.key, KEY.hmac_key, "sha3_256")]) is Reason.MAC
    # The right HMAC key with another encryption key decrypts to noise.
    assert reason(p, [FwknopKey(os.urandom(32), KEY.hmac_key)]) in (
        Reason.PADDING,
        Reason.FIELD,
    )


def test_candidates_limit_the_keys_tried():
    other = new_key()
    p = pkt()
    assert decode(p, [other, KEY], candidates=[1]).key_index == 1
    assert decode(p, [other, KEY]).key_index == 1
    assert decode(p, [other, KEY], candidates=[0]).reason is Reason.MAC
    assert decode(p, [other, KEY], candidates=[]).reason is Reason.UNKNOWN_SOURCE
    assert decode(p, [other, KEY], candidates=[7, -1]).reason is Reason.UNKNOWN_SOURCE


# --- authenticated but malformed plaintexts ----------------------------------------------


@pytest.mark.parametrize(
    "text, why",
    [
        (plaintext(mtype=0, access="10.1.2.3,rm -rf /"), Reason.COMMAND),
        (plaintext(mtype=2, extra=(b64("192.168.1.5,22"),)), Reason.NAT),
        (plaintext(mtype=5, extra=(b64("192.168.1.5,22"),)), Reason.NAT),
        (plaintext(mtype=4, extra=(b64("192.168.1.5,22"), "60")), Reason.NAT),
        (plaintext(mtype=6, extra=(b64("192.168.1.5,22"), b64("sa"), "60")), Reason.NAT),
        (plaintext(mtype=7), Reason.MESSAGE_TYPE),
        (plaintext(mtype=99), Reason.MESSAGE_TYPE),
        (plaintext(mtype=3), Reason.FIELD),  # no timeout field
        (plaintext(mtype=1, extra=("a", "b")), Reason.FIELD),
        (plaintext(mtype=3, extra=("65537",)), Reason.FIELD),
        (plaintext(mtype=3, extra=("-5",)), Reason.FIELD),
        (plaintext(access="10.1.2.3,icmp/0"), Reason.FIELD),
        (plaintext(access="10.1.2.3,none/0"), Reason.FIELD),
        (plaintext(access="10.1.2.3,tcp/0"), Reason.FIELD),
        (plaintext(access="10.1.2.3,tcp/65536"), Reason.FIELD),
        (plaintext(access="10.1.2.3,TCP/22"), Reason.FIELD),
        (plaintext(access="10.1.2.3"), Reason.FIELD),
        (plaintext(access="10.1.2.3,"), Reason.FIELD),
        (plaintext(access="::1,tcp/22"), Reason.FIELD),
        (plaintext(access="10.1.2.256,tcp/22"), Reason.FIELD),
        (plaintext(access="host.example,tcp/22"), Reason.FIELD),
        (plaintext(rand="12345"), Reason.FIELD),
        (plaintext(rand="123456789012345x"), Reason.FIELD),
        (plaintext(user="a:b"), Reason.FIELD),
        (plaintext(user="a=b"), Reason.FIELD),
        (plaintext(version=""), Reason.FIELD),
        (plaintext(version="123456789"), Reason.FIELD),
        (
            with_digest("1234567890123456:Ym9i:notanumber:3.0.0:1:" + b64("10.1.2.3,tcp/22")),
            Reason.FIELD,
        ),  # fmt: skip
        (with_digest("1234567890123456:!!!:1:3.0.0:1:" + b64("10.1.2.3,tcp/22")), Reason.FIELD),
        (with_digest("a:b:c"), Reason.FIELD),
        (plaintext()[:-1] + ("A" if plaintext()[-1] != "A" else "B"), Reason.DIGEST),
        (plaintext()[:-2], Reason.DIGEST),
        (plaintext() + "\x01", Reason.FIELD),
        ("\xff" * 120, Reason.FIELD),
    ],
)
def test_authentic_but_refused_plaintexts(text, why):
    raw = text.encode("latin-1")
    r = decode(sealed(KEY, raw), [KEY])
    assert isinstance(r, Rejected) and r.reason is why, r
    assert r.detail


def test_refusals_say_what_was_asked():
    r = decode(sealed(KEY, plaintext(mtype=0, access="10.1.2.3,echo hi")), [KEY])
    assert "echo hi" in r.detail and "10.1.2.3" in r.detail
    r = decode(sealed(KEY, plaintext(mtype=5, extra=(b64("192.168.1.5,22"),))), [KEY])
    assert "local NAT" in r.detail and "192.168.1.5,22" in r.detail


def test_bad_padding_is_refused():
    # A ciphertext whose last block decrypts to bad PKCS#7 (sealed by hand with the right keys).
    salt = os.urandom(8)
    k, iv = _derive(KEY.key, salt)
    plain = plaintext().encode().ljust(160, b"x")[:159] + b"\x00"
    ct = Cipher(algorithms.AES(k), modes.CBC(iv)).encryptor().update(plain)
    body = b64_unpadded(b"Salted__" + salt + ct)[10:]
    assert reason(body + KEY.tag(body)) is Reason.PADDING


# --- the encoder refuses what fwknop would not send ---------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(ports=[]),
        dict(ports=[("icmp", 0)]),
        dict(ports=[("tcp", 0)]),
        dict(ports=[("tcp", 65536)]),
        dict(ports=[("tcp", p) for p in range(1, 40)]),
        dict(user=""),
        dict(user="x" * 49),
        dict(user="a:b"),
        dict(user="é"),
        dict(timestamp=-1),
        dict(timestamp=2**32),
        dict(client_timeout=65537),
    ],
)
def test_encoder_limits(kw):
    with pytest.raises(ValueError):
        pkt(**kw)


def test_encoder_refuses_other_types_and_bad_fields():
    base = request()
    for bad in (
        FwknopMessage(base.ip, base.ports, "bob", T0, message_type=MessageType.COMMAND),
        FwknopMessage(base.ip, base.ports, "bob", T0, message_type=MessageType.NAT_ACCESS),
        FwknopMessage(base.ip, base.ports, "bob", T0, client_timeout=5),  # type 1 + timeout
        FwknopMessage(base.ip, base.ports, "bob", T0, rand="12"),
        FwknopMessage(base.ip, base.ports, "bob", T0, version="a:b"),
        FwknopMessage(base.ip, base.ports, "bob", T0, digest_type="md5"),
        FwknopMessage(base.ip, base.ports, "bob", T0, server_auth="\n"),
    ):
        with pytest.raises(ValueError):
            encode(KEY, bad, os.urandom(8))
    with pytest.raises(ValueError):
        encode(KEY, base, b"short")


def test_key_checks():
    with pytest.raises(ValueError, match="differ"):
        FwknopKey(b"same", b"same")
    with pytest.raises(ValueError, match="MD5"):
        FwknopKey(b"k", b"h", "md5")
    with pytest.raises(ValueError, match="unknown"):
        FwknopKey(b"k", b"h", "blake2")
    with pytest.raises(ValueError, match="1 to 32"):
        FwknopKey(b"k" * 33, b"h")
    with pytest.raises(ValueError, match="1 to 128"):
        FwknopKey(b"k", b"h" * 129)
    with pytest.raises(ValueError):
        FwknopKey(b"", b"h")
    assert FwknopKey(b"k", b"h", "SHA512").hmac_type == "sha512"
    assert "secret" not in repr(FwknopKey(b"secretkey", b"secrethmac"))
    with pytest.raises(ValueError):
        FwknopKey.from_base64("not base64!", "aGVsbG8=")


def test_passphrase_keys_work():
    key = FwknopKey(b"correct horse", b"battery staple", "sha384")
    assert decode(pkt(key), [key]).message.user == "bob"
