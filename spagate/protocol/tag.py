"""spagate's keyed tag inside the sparoid IV (sans-IO): what the gate's kernel checks before any
HMAC. A sparoid receiver never looks inside the IV, so a tagged packet is an ordinary sparoid
packet to it (docs/admission.md has the threat analysis).

    iv   = hint[4] || rand[8] || tag[4]
    hint = HMAC-SHA256(k_hint, "spagate hint" || u64be(step))[0:4],  step = ts_ms // STEP_MS
    tag  = u32le(SipHash-2-4(k_mac, iv[0:12] || ct[48]) mod 2^32)
    T    = HMAC-SHA256(hmac_key, "spagate tag v1" || key);  k_mac = T[0:16], k_hint = T[16:32]

The tag covers the ciphertext, and the ciphertext depends on the whole IV, tag included. The
circle is broken in the first plaintext block: P1 = version || ts || nonce[0:4], and CBC
encrypts P1 xor IV. The client picks Z = 4 random bytes, encrypts with the IV's tag bytes
zero and nonce[0:4] = Z (so the cipher input's last 4 bytes are Z), computes the tag over that
ciphertext, then sets the IV's tag bytes to it and the nonce's first 4 bytes to Z xor tag: the
cipher input, and so the ciphertext, is unchanged. A receiver decrypts nonce[0:4] = Z xor tag,
random like the rest of the nonce (which only ever serves as a replay key).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from spagate.protocol.keys import KeyPair

STEP_MS = 30_000  # a hint lives for one step of the packet's timestamp
HINT_SIZE, RAND_SIZE, TAG_SIZE = 4, 8, 4
LABEL_KEYS = b"spagate tag v1"
LABEL_HINT = b"spagate hint"

_M64 = (1 << 64) - 1


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 (Aumasson, Bernstein) of data under a 16-byte key, as a 64-bit integer."""
    if len(key) != 16:
        raise ValueError(f"a SipHash key is 16 bytes, got {len(key)}")
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573
    n = len(data)
    end = n - n % 8
    blocks = [int.from_bytes(data[i : i + 8], "little") for i in range(0, end, 8)]
    blocks.append(((n & 0xFF) << 56) | int.from_bytes(data[end:], "little"))
    m64 = _M64
    # (message word or None for the finalisation, rounds): 2 per block, then 4.
    for m, k in [(b, 2) for b in blocks] + [(None, 4)]:
        if m is None:
            v2 ^= 0xFF
        else:
            v3 ^= m
        for _ in range(k):  # SipRound, rotations written out (this is the client's hot path)
            v0 = (v0 + v1) & m64
            v1 = ((v1 << 13 | v1 >> 51) & m64) ^ v0
            v0 = (v0 << 32 | v0 >> 32) & m64
            v2 = (v2 + v3) & m64
            v3 = ((v3 << 16 | v3 >> 48) & m64) ^ v2
            v0 = (v0 + v3) & m64
            v3 = ((v3 << 21 | v3 >> 43) & m64) ^ v0
            v2 = (v2 + v1) & m64
            v1 = ((v1 << 17 | v1 >> 47) & m64) ^ v2
            v2 = (v2 << 32 | v2 >> 32) & m64
        if m is not None:
            v0 ^= m
    return v0 ^ v1 ^ v2 ^ v3


@dataclass(frozen=True, slots=True)
class TagKeys:
    """An identity's tag keys, derived from its KeyPair (never configured apart)."""

    mac: bytes = field(repr=False)  # SipHash-2-4 key of the tag
    hint: bytes = field(repr=False)  # HMAC key of the hints

    @property
    def k0k1(self) -> tuple[int, int]:
        """The SipHash key as the kernel holds it (struct spa_tag k0, k1)."""
        return struct.unpack("<QQ", self.mac)


@lru_cache(maxsize=64)
def _derive(key: bytes, hmac_key: bytes) -> TagKeys:
    t = hmac.new(hmac_key, LABEL_KEYS + key, hashlib.sha256).digest()
    return TagKeys(t[:16], t[16:])


def tag_keys(keys: KeyPair) -> TagKeys:
    return _derive(keys.key, keys.hmac_key)


def step_of(ts_ms: int) -> int:
    return int(ts_ms) // STEP_MS


def hint(tk: TagKeys, step: int) -> bytes:
    """The 4 hint bytes of an identity in one time step."""
    msg = LABEL_HINT + (step & _M64).to_bytes(8, "big")
    return hmac.new(tk.hint, msg, hashlib.sha256).digest()[:HINT_SIZE]


def tag_of(tk: TagKeys, iv12: bytes, ct: bytes) -> bytes:
    """The 4 tag bytes over the IV's first 12 bytes and the 48-byte ciphertext."""
    return (siphash24(tk.mac, bytes(iv12) + bytes(ct)) & 0xFFFFFFFF).to_bytes(4, "little")


def tag_ok(tk: TagKeys, packet: bytes) -> bool:
    """True when a 96-byte packet carries tk's tag (what the kernel checks, hint aside)."""
    iv = packet[32:48]
    return len(packet) == 96 and hmac.compare_digest(tag_of(tk, iv[:12], packet[48:]), iv[12:])


def steps_around(now_ms: int, skew_ms: int) -> range:
    """Every step a packet stamped within now +- skew can fall in (the hints a gate keeps)."""
    return range(step_of(now_ms - skew_ms), step_of(now_ms + skew_ms) + 1)


def seal(
    keys: KeyPair,
    version: int,
    ts_ms: int,
    nonce: bytes,
    ip: bytes,
    rand: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """A tagged 96-byte sparoid packet. nonce[0:4] is the random Z of the module doc: the
    packet's nonce becomes (Z xor tag) || nonce[4:16]."""
    tk = tag_keys(keys)
    iv12 = hint(tk, step_of(ts_ms)) + rand(RAND_SIZE)
    plain = version.to_bytes(4, "big", signed=True) + ts_ms.to_bytes(8, "big", signed=True)
    plain += bytes(nonce) + bytes(ip)
    pad = 16 - len(plain) % 16
    plain += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(keys.key), modes.CBC(iv12 + bytes(TAG_SIZE))).encryptor()
    ct = enc.update(plain) + enc.finalize()
    body = iv12 + tag_of(tk, iv12, ct) + ct
    mac = keys._mac.copy()
    mac.update(body)
    return mac.digest() + body
