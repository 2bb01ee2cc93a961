"""Property tests: no input makes the fwknop codec or verifier raise; every failure has a Reason;
what the encoder writes decodes to the same message."""

from __future__ import annotations

import os
from ipaddress import IPv4Address

from fwknop_helpers import T0, new_key, sealed, with_digest
from hypothesis import given, settings
from hypothesis import strategies as st

from spagate.protocol import Reason, Rejected
from spagate.protocol.fwknop import (
    HMAC_TYPES,
    FwknopAccepted,
    FwknopDecoded,
    FwknopMessage,
    FwknopVerifier,
    MessageType,
    ProtoPort,
    decode,
    encode,
)
from spagate.protocol.fwknop.codec import MIN_PACKET
from spagate.protocol.fwknop.keys import b64_unpadded

RING = [new_key("sha512"), new_key()]
NOW = T0 * 1000
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
PRE_AUTH = (Reason.SIZE, Reason.FORMAT, Reason.MAC)


def valid() -> bytes:
    msg = FwknopMessage(IPv4Address("192.0.2.1"), (ProtoPort("tcp", 22),), "bob", T0)
    return encode(RING[1], msg, os.urandom(8))


@settings(max_examples=400)
@given(st.binary(max_size=1600))
def test_random_bytes(data):
    r = decode(data, RING)
    assert isinstance(r, Rejected) and r.reason in PRE_AUTH
    assert FwknopVerifier(RING).verify(data, NOW).reason in PRE_AUTH


@settings(max_examples=300)
@given(st.text(alphabet=B64, min_size=100, max_size=1600))
def test_random_base64_text(text):
    r = FwknopVerifier(RING).verify(text.encode(), NOW)
    assert isinstance(r, Rejected) and r.reason in PRE_AUTH


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.sampled_from(B64)), min_size=1, max_size=6),
    st.integers(0, 400),
    st.text(alphabet=B64 + "=\n:", max_size=4),
)
def test_mutated_valid_packets(subs, cut, tail):
    original = valid()
    p = bytearray(original)
    for pos, ch in subs:
        p[pos % len(p)] = ord(ch)
    for v in (bytes(p), original[:cut] + tail.encode(), bytes(p) + tail.encode()):
        if v == original:
            continue
        r = FwknopVerifier(RING).verify(v, NOW)
        assert isinstance(r, Rejected) and r.reason in PRE_AUTH


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=600))
def test_authentic_arbitrary_plaintext_never_raises(plain):
    p = sealed(RING[0], plain)
    r = FwknopVerifier(RING).verify(p, NOW)
    assert isinstance(r, FwknopAccepted | Rejected)
    if isinstance(r, Rejected):
        assert r.reason not in PRE_AUTH or (r.reason is Reason.SIZE and len(p) < MIN_PACKET)


_field = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@settings(max_examples=400)
@given(st.lists(_field, min_size=0, max_size=11), st.sampled_from(["sha256", "sha512", "md5"]))
def test_authentic_field_soup_never_raises(fields, digest):
    """Colon-separated printable fields with a correct digest: every field check is reached."""
    text = with_digest(":".join(fields), digest)
    p = sealed(RING[1], text)
    r = decode(p, RING)
    assert isinstance(r, FwknopDecoded | Rejected)
    if isinstance(r, Rejected):
        assert r.reason not in PRE_AUTH or (r.reason is Reason.SIZE and len(p) < MIN_PACKET)
        assert r.detail


_b64_field = st.text(alphabet=B64, min_size=1, max_size=40)


@settings(max_examples=300)
@given(
    st.sampled_from(["1234567890123456", "0000000000000000"]),
    _b64_field,
    st.integers(0, 2**32),
    st.integers(0, 9),
    st.lists(_b64_field | st.integers(0, 70000).map(str), max_size=4),
)
def test_authentic_plausible_messages_never_raise(rand, user, ts, mtype, extra):
    access = b64_unpadded(b"10.1.2.3,tcp/22").decode()
    body = ":".join([rand, user, str(ts), "3.0.0", str(mtype), access, *extra])
    r = decode(sealed(RING[1], with_digest(body)), RING)
    assert isinstance(r, FwknopDecoded | Rejected)


_USER_BAD = '"/\\[]:;|=,+*?<>'
_user = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=_USER_BAD),
    min_size=1,
    max_size=48,
)


@settings(max_examples=300)
@given(
    st.integers(0, 2**32 - 1).map(IPv4Address),
    st.lists(
        st.tuples(st.sampled_from(["tcp", "udp"]), st.integers(1, 65535)).map(
            lambda t: ProtoPort(*t)
        ),
        min_size=1,
        max_size=8,
        unique=True,
    ),
    _user,
    st.integers(0, 2**32 - 1),
    st.integers(0, 65536),
    st.sampled_from(sorted(HMAC_TYPES)),
    st.sampled_from(["sha256", "sha384", "sha512", "sha1", "sha3_256", "sha3_512"]),
    st.none() | st.text(alphabet=B64 + ", ", min_size=1, max_size=40),
)
def test_round_trip(ip, ports, user, ts, timeout, hmac_type, digest, server_auth):
    key = new_key(hmac_type)
    mtype = MessageType.CLIENT_TIMEOUT_ACCESS if timeout else MessageType.ACCESS
    msg = FwknopMessage(ip, tuple(ports), user, ts, timeout, mtype, digest_type=digest,
                        server_auth=server_auth)  # fmt: skip
    r = decode(encode(key, msg, os.urandom(8)), [RING[0], key])
    assert r == FwknopDecoded(msg, 1)
