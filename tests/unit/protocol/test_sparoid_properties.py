"""Property tests: no input of any length or content raises; each failure has a Reason."""

from __future__ import annotations

import hashlib
import hmac
import os
from ipaddress import IPv4Address, IPv6Address

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from spagate.protocol import (
    Accepted,
    Decoded,
    Message,
    Reason,
    Rejected,
    Verifier,
    decode,
    encode,
    generate_keypair,
)

RING = [generate_keypair() for _ in range(2)]
NOW = 1_700_000_000_000


def valid_packet() -> bytes:
    return encode(RING[1], Message(NOW, os.urandom(16), IPv4Address("192.0.2.1")), os.urandom(16))


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_rejected_with_reason(data):
    r = decode(data, RING)
    assert isinstance(r, Rejected) and isinstance(r.reason, Reason)
    r = Verifier(RING).verify(data, NOW)
    assert isinstance(r, Rejected) and r.reason in (Reason.SIZE, Reason.MAC)


@settings(max_examples=500)
@given(
    st.lists(st.tuples(st.integers(0, 95), st.integers(1, 255)), min_size=1, max_size=8),
    st.binary(max_size=4),
    st.integers(0, 96),
)
def test_mutated_valid_packets_rejected(flips, extra, cut):
    original = valid_packet()
    p = bytearray(original)
    for pos, mask in flips:
        p[pos] ^= mask
    for v in (bytes(p), bytes(p[:cut]) + extra, original[:cut] + extra):
        if v == original:
            continue
        r = Verifier(RING).verify(v, NOW)
        assert isinstance(r, Rejected) and r.reason in (Reason.SIZE, Reason.MAC)


@settings(max_examples=300)
@given(st.binary(min_size=48, max_size=48), st.binary(min_size=16, max_size=16))
def test_authentic_but_arbitrary_plaintext_never_raises(plain, iv):
    # Sealed with the right keys: the MAC passes and every later check is exercised.
    kp = RING[0]
    ct = Cipher(algorithms.AES(kp.key), modes.CBC(iv)).encryptor().update(plain)
    p = hmac.new(kp.hmac_key, iv + ct, hashlib.sha256).digest() + iv + ct
    r = Verifier(RING).verify(p, NOW)
    assert isinstance(r, Accepted | Rejected)
    if isinstance(r, Rejected):
        assert r.reason is not Reason.MAC and r.detail


@settings(max_examples=300)
@given(
    st.integers(-(2**63), 2**63 - 1),
    st.binary(min_size=16, max_size=16),
    st.one_of(
        st.integers(0, 2**32 - 1).map(IPv4Address),
        st.integers(0, 2**128 - 1).map(IPv6Address),
    ),
)
def test_round_trip(ts, nonce, ip):
    p = encode(RING[1], Message(ts, nonce, ip), os.urandom(16))
    assert len(p) == 96
    r = decode(p, RING)
    assert isinstance(r, Decoded) and r.key_index == 1
    expect = ip.ipv4_mapped if isinstance(ip, IPv6Address) and ip.ipv4_mapped else ip
    assert r.message == Message(ts, nonce, expect)
