"""The sparoid v1 wire format (sans-IO: bytes in, a typed result out; never raises on input).

packet    = HMAC-SHA256(hmac_key, iv || ct)[32] || iv[16] || ct[48]      (96 bytes)
ct        = AES-256-CBC(key, iv, PKCS7(plaintext))
plaintext = int32 BE version || int64 BE unix ms || nonce[16] || ip[4 or 16]
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from spagate.net import packed, unmap
from spagate.net import parse_address as unmap_text
from spagate.protocol import tag
from spagate.protocol.keys import KeyPair
from spagate.protocol.messages import SPAROID_VERSION as VERSION
from spagate.protocol.messages import Decoded, Message, Reason, Rejected

PACKET_SIZE = 96
MAC_SIZE = 32
IV_SIZE = 16
NONCE_SIZE = 16
BLOCK = 16
_HEADER = 4 + 8 + NONCE_SIZE  # version, timestamp, nonce
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

_compare = hmac.compare_digest
_from_bytes = int.from_bytes


def encode(keys: KeyPair, msg: Message, iv: bytes) -> bytes:
    """The 96-byte packet for msg; iv must be 16 fresh random bytes."""
    if len(iv) != IV_SIZE:
        raise ValueError(f"iv must be {IV_SIZE} bytes, got {len(iv)}")
    if len(msg.nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes, got {len(msg.nonce)}")
    if not _INT32[0] <= msg.version <= _INT32[1]:
        raise ValueError(f"version {msg.version} does not fit in int32")
    if not _INT64[0] <= msg.ts_ms <= _INT64[1]:
        raise ValueError(f"timestamp {msg.ts_ms} does not fit in int64")
    plain = (
        msg.version.to_bytes(4, "big", signed=True)
        + msg.ts_ms.to_bytes(8, "big", signed=True)
        + bytes(msg.nonce)
        + packed(msg.ip)  # ::ffff:a.b.c.d travels as the IPv4 address
    )
    pad = BLOCK - len(plain) % BLOCK
    plain += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(keys.key), modes.CBC(bytes(iv))).encryptor()
    body = bytes(iv) + enc.update(plain) + enc.finalize()
    mac = keys._mac.copy()
    mac.update(body)
    return mac.digest() + body


def make_packet(
    keys: KeyPair,
    ip: IPv4Address | IPv6Address | str,
    now_ms: int,
    rand: Callable[[int], bytes] = os.urandom,
    tagged: bool = False,
) -> bytes:
    """A fresh packet opening ip, stamped now_ms: random nonce and IV from rand(n). The one
    SPA packet maker of the client, the lab, the tests and the benches. tagged: the IV carries
    spagate's keyed tag (spagate.protocol.tag), which a spagate gate checks before any HMAC;
    still a plain sparoid packet to every receiver."""
    msg = Message(int(now_ms), rand(NONCE_SIZE), unmap_text(ip))
    if tagged:
        return tag.seal(keys, msg.version, msg.ts_ms, msg.nonce, packed(msg.ip), rand)
    return encode(keys, msg, rand(IV_SIZE))


_REJECT_MAC = Rejected(Reason.MAC, "no key's HMAC matches")
_REJECT_NO_KEYS = Rejected(Reason.MAC, "no keys configured")
_PADS = {n: bytes([n]) * n for n in range(1, BLOCK + 1)}


def decode(packet: bytes, keyring: Sequence[KeyPair]) -> Decoded | Rejected:
    """Authenticate and decrypt one packet against a key ring tried in order.

    The key is chosen by its MAC (constant-time compare) before anything is decrypted.
    Never raises for any input: every failure is a Rejected with a Reason.
    """
    if type(packet) is not bytes:
        if not isinstance(packet, bytes | bytearray | memoryview):
            return Rejected(Reason.SIZE, f"not bytes: {type(packet).__name__}")
        packet = bytes(packet)
    n = len(packet)
    if n != PACKET_SIZE:
        return Rejected(Reason.SIZE, f"{n} bytes, expected {PACKET_SIZE}")
    if not keyring:
        return _REJECT_NO_KEYS
    tag = packet[:MAC_SIZE]
    body = packet[MAC_SIZE:]
    index = 0
    for keys in keyring:
        mac = keys._mac.copy()
        mac.update(body)
        if _compare(mac.digest(), tag):
            break
        index += 1
    else:
        return _REJECT_MAC
    # CBC decryption: P_i = D(C_i) xor C_(i-1), with C_0 = iv.
    raw = keys._ecb.update(body[IV_SIZE:])
    plain = (_from_bytes(raw, "big") ^ _from_bytes(body[:-BLOCK], "big")).to_bytes(48, "big")
    pad = plain[-1]
    if not 0 < pad <= BLOCK or not plain.endswith(_PADS[pad]):
        return Rejected(Reason.PADDING, f"bad PKCS#7 padding (last byte {pad})")
    size = len(plain) - pad  # >= 32: the version and header are always there
    version = _from_bytes(plain[:4], "big", signed=True)
    if version != VERSION:
        return Rejected(Reason.VERSION, f"version {version}, expected {VERSION}")
    ip_len = size - _HEADER
    if ip_len == 4:
        ip: IPv4Address | IPv6Address = IPv4Address(plain[_HEADER:size])
    elif ip_len == 16:
        ip = unmap(IPv6Address(plain[_HEADER:size]))
    else:
        return Rejected(Reason.IP_LENGTH, f"address of {ip_len} bytes, expected 4 or 16")
    ts = _from_bytes(plain[4:12], "big", signed=True)
    return Decoded(Message(ts, plain[12:_HEADER], ip, version), index)
