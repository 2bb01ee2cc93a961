"""Codec: round trips, key rotation, every decode rejection, and an independent implementation
of the wire format (written here from the format description, cryptography primitives only)."""

from __future__ import annotations

import hashlib
import hmac
import os
from ipaddress import IPv4Address, IPv6Address

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from spagate.protocol import (
    Decoded,
    KeyPair,
    Message,
    Reason,
    Rejected,
    decode,
    encode,
    generate_keypair,
    parse_hex_key,
)

# --- independent reference implementation -------------------------------------------------


def ref_seal(key: bytes, hmac_key: bytes, plaintext: bytes, iv: bytes, pad: bool = True) -> bytes:
    """MAC || iv || AES-256-CBC(plaintext), PKCS#7-padded unless pad=False."""
    if pad:
        n = 16 - len(plaintext) % 16
        plaintext += bytes([n]) * n
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = enc.update(plaintext) + enc.finalize()
    return hmac.new(hmac_key, iv + ct, hashlib.sha256).digest() + iv + ct


def ref_encode(key, hmac_key, version, ts, nonce, ip_bytes, iv) -> bytes:
    plain = version.to_bytes(4, "big", signed=True) + ts.to_bytes(8, "big", signed=True)
    return ref_seal(key, hmac_key, plain + nonce + ip_bytes, iv)


def ref_decode(packet: bytes, key: bytes, hmac_key: bytes):
    assert len(packet) == 96
    mac, iv, ct = packet[:32], packet[32:48], packet[48:]
    assert hmac.compare_digest(mac, hmac.new(hmac_key, iv + ct, hashlib.sha256).digest())
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = dec.update(ct) + dec.finalize()
    plain = padded[: -padded[-1]]
    assert padded[-padded[-1] :] == bytes([padded[-1]]) * padded[-1]
    version = int.from_bytes(plain[0:4], "big")
    ts = int.from_bytes(plain[4:12], "big", signed=True)
    return version, ts, plain[12:28], plain[28:]


def msg(ip="198.51.100.7", ts=1_700_000_000_000, nonce=None) -> Message:
    addr = IPv6Address(ip) if ":" in ip else IPv4Address(ip)
    return Message(ts, nonce or os.urandom(16), addr)


@pytest.mark.parametrize(
    "ip, wire",
    [
        ("198.51.100.7", bytes([198, 51, 100, 7])),
        ("2001:db8::1", IPv6Address("2001:db8::1").packed),
        ("::ffff:192.0.2.1", bytes([192, 0, 2, 1])),
        ("0.0.0.0", bytes(4)),
        ("::", bytes(16)),
    ],
)
def test_reference_decodes_what_spagate_encodes(ip, wire):
    kp = generate_keypair()
    m = msg(ip)
    iv = os.urandom(16)
    packet = encode(kp, m, iv)
    assert len(packet) == 96 and packet[32:48] == iv
    assert ref_decode(packet, kp.key, kp.hmac_key) == (1, m.ts_ms, m.nonce, wire)


def test_spagate_decodes_what_the_reference_encodes():
    kp = generate_keypair()
    nonce = os.urandom(16)
    for ip in (IPv4Address("203.0.113.9"), IPv6Address("2001:db8::9")):
        p = ref_encode(kp.key, kp.hmac_key, 1, -5, nonce, ip.packed, os.urandom(16))
        r = decode(p, [kp])
        assert r == Decoded(Message(-5, nonce, ip, 1), 0)


def test_v4_mapped_decodes_as_ipv4():
    kp = generate_keypair()
    mapped = IPv6Address("::ffff:192.0.2.33")
    p = ref_encode(kp.key, kp.hmac_key, 1, 7, bytes(16), mapped.packed, os.urandom(16))
    ip = decode(p, [kp]).message.ip
    assert ip == IPv4Address("192.0.2.33") and isinstance(ip, IPv4Address)


@pytest.mark.parametrize("position", [1, 2])
def test_rotation_right_key_not_first(position):
    ring = [generate_keypair() for _ in range(3)]
    m = msg()
    r = decode(encode(ring[position], m, os.urandom(16)), ring)
    assert r == Decoded(m, position)


def test_key_chosen_by_mac_not_by_padding():
    # Find packets for key B whose CBC decryption under key A happens to have valid PKCS#7
    # padding (~0.4%): a padding-first implementation picks A and rejects them.
    a, b = generate_keypair(), generate_keypair()
    hits = 0
    for _ in range(20_000):
        m = msg()
        p = encode(b, m, os.urandom(16))
        dec = Cipher(algorithms.AES(a.key), modes.CBC(p[32:48])).decryptor()
        padded = dec.update(p[48:]) + dec.finalize()
        n = padded[-1]
        if 0 < n <= 16 and padded.endswith(bytes([n]) * n):
            hits += 1
            assert decode(p, [a, b]) == Decoded(m, 1)
            if hits >= 3:
                break
    assert hits >= 3, "no packet with misleading padding found"


def test_empty_keyring_rejects():
    r = decode(encode(generate_keypair(), msg(), os.urandom(16)), [])
    assert isinstance(r, Rejected) and r.reason is Reason.MAC


@pytest.mark.parametrize("n", [0, 1, 32, 95, 97, 112, 1500, 65536])
def test_size(n):
    r = decode(os.urandom(n), [generate_keypair()])
    assert r.reason is Reason.SIZE and str(n) in r.detail


@pytest.mark.parametrize("value", [None, 5, "x" * 96, [0] * 96, 96.0])
def test_non_bytes_rejected(value):
    r = decode(value, [generate_keypair()])
    assert isinstance(r, Rejected) and r.reason is Reason.SIZE


def test_bytearray_and_memoryview_accepted():
    kp = generate_keypair()
    p = encode(kp, msg(), os.urandom(16))
    assert isinstance(decode(bytearray(p), [kp]), Decoded)
    assert isinstance(decode(memoryview(p), [kp]), Decoded)


@pytest.mark.parametrize("bit", [0, 255, 256, 383, 384, 767])  # in MAC, IV, ciphertext
def test_mac_any_flipped_bit(bit):
    kp = generate_keypair()
    p = bytearray(encode(kp, msg(), os.urandom(16)))
    p[bit // 8] ^= 1 << (bit % 8)
    r = decode(bytes(p), [kp])
    assert r.reason is Reason.MAC


def test_mac_wrong_keys():
    p = encode(generate_keypair(), msg(), os.urandom(16))
    assert decode(p, [generate_keypair(), generate_keypair()]).reason is Reason.MAC


def test_padding():
    kp = generate_keypair()
    for last in (0, 17, 255):
        plain = os.urandom(47) + bytes([last])
        r = decode(ref_seal(kp.key, kp.hmac_key, plain, os.urandom(16), pad=False), [kp])
        assert r.reason is Reason.PADDING
    plain = os.urandom(44) + bytes([1, 4, 4, 4])  # claims 4 but one byte differs
    r = decode(ref_seal(kp.key, kp.hmac_key, plain, os.urandom(16), pad=False), [kp])
    assert r.reason is Reason.PADDING


@pytest.mark.parametrize("version", [0, 2, -1, 2**31 - 1])
def test_version(version):
    kp = generate_keypair()
    m = Message(1, bytes(16), IPv4Address("192.0.2.1"), version)
    r = decode(encode(kp, m, os.urandom(16)), [kp])
    assert r.reason is Reason.VERSION and str(version) in r.detail


@pytest.mark.parametrize("ip_len", [0, 1, 3, 5, 8, 15, 17, 19])
def test_ip_length(ip_len):
    kp = generate_keypair()
    p = ref_encode(kp.key, kp.hmac_key, 1, 1, bytes(16), bytes(ip_len), os.urandom(16))
    if len(p) != 96:  # longer plaintexts make longer packets: the size check catches those
        assert decode(p, [kp]).reason is Reason.SIZE
        return
    r = decode(p, [kp])
    assert r.reason is Reason.IP_LENGTH and str(ip_len) in r.detail


def test_encode_validates():
    kp = generate_keypair()
    with pytest.raises(ValueError, match="iv"):
        encode(kp, msg(), bytes(15))
    with pytest.raises(ValueError, match="nonce"):
        encode(kp, Message(1, bytes(15), IPv4Address("1.2.3.4")), bytes(16))
    with pytest.raises(ValueError, match="int64"):
        encode(kp, Message(2**63, bytes(16), IPv4Address("1.2.3.4")), bytes(16))


def test_parse_hex_key():
    assert parse_hex_key("ab" * 32) == bytes([0xAB]) * 32
    assert parse_hex_key("  " + "AB" * 32 + "\n") == bytes([0xAB]) * 32
    with pytest.raises(ValueError, match="^63 hex characters, expected 64$"):
        parse_hex_key("a" * 63)
    with pytest.raises(ValueError, match="non-hex character 'g' at position 1"):
        parse_hex_key("g" * 64)
    with pytest.raises(ValueError, match="empty"):
        parse_hex_key("")


def test_keypair_validates_and_hides_keys():
    with pytest.raises(ValueError, match="key must be 32 bytes, got 31"):
        KeyPair(bytes(31), bytes(32))
    with pytest.raises(ValueError, match="hmac_key must be 32 bytes"):
        KeyPair(bytes(32), bytes(33))
    kp = generate_keypair()
    assert kp.key.hex() not in repr(kp) and kp.key != kp.hmac_key
    assert kp == KeyPair(kp.key, kp.hmac_key)
