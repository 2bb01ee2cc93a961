"""SPA keys for the in-kernel MAC check: HMAC-SHA256 midstates packed as `struct spa_key`.

The XDP program (spagate/bpf/sha256.h) never sees an HMAC key. It gets the SHA-256 state after the
first block of each half of HMAC, one block each:

    inner = compress(IV, key64 ^ 0x36..)    outer = compress(IV, key64 ^ 0x5c..)

(key64: the key zero-padded to 64 bytes), and finishes HMAC-SHA256(key, iv || ct) with three
compressions. Pure Python: hashlib does not expose midstates, so the compression is here.
"""

from __future__ import annotations

import hashlib
import struct

from spagate.gate.kernel.abi import SPA_KEY

SPA_KEY_SIZE = SPA_KEY.size  # struct spa_key: inner[8], outer[8] as host-order u32
BLOCK = 64

_M = 0xFFFFFFFF
IV = (
    0x6A09E667,
    0xBB67AE85,
    0x3C6EF372,
    0xA54FF53A,
    0x510E527F,
    0x9B05688C,
    0x1F83D9AB,
    0x5BE0CD19,
)
K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip

State = tuple[int, ...]  # 8 words


def _ror(x: int, n: int) -> int:
    return (x >> n | x << (32 - n)) & _M


def schedule(block: bytes) -> list[int]:
    """The 64 message words W[t] of one 64-byte block."""
    if len(block) != BLOCK:
        raise ValueError(f"a SHA-256 block is {BLOCK} bytes, got {len(block)}")
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        s0 = _ror(w[t - 15], 7) ^ _ror(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = _ror(w[t - 2], 17) ^ _ror(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M)
    return w


def compress(state: State, block: bytes) -> State:
    """SHA-256 compression function: the state after one more 64-byte block."""
    a, b, c, d, e, f, g, h = state
    for k, w in zip(K, schedule(block), strict=True):
        t1 = h + (_ror(e, 6) ^ _ror(e, 11) ^ _ror(e, 25)) + ((e & f) ^ (~e & g)) + k + w
        t2 = (_ror(a, 2) ^ _ror(a, 13) ^ _ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
        a, b, c, d, e, f, g, h = (t1 + t2) & _M, a, b, c, (d + t1) & _M, e, f, g
    return tuple((x + y) & _M for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True))


def padding(total_len: int) -> bytes:
    """SHA-256 padding for a message of total_len bytes that is a multiple of 64 bytes long
    up to the last partial block (0x80, zeros, 64-bit big-endian bit length)."""
    zeros = (55 - total_len) % 64
    return b"\x80" + bytes(zeros) + struct.pack(">Q", total_len * 8)


def midstates(hmac_key: bytes) -> tuple[State, State]:
    """(inner, outer): SHA-256 states after key^ipad and key^opad (RFC 2104)."""
    key = bytes(hmac_key)
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK, b"\0")
    inner = compress(IV, bytes(x ^ 0x36 for x in key))
    outer = compress(IV, bytes(x ^ 0x5C for x in key))
    return inner, outer


def hmac_from_midstates(inner: State, outer: State, body: bytes) -> bytes:
    """HMAC-SHA256 of a 64-byte body, finished from midstates exactly as the kernel does."""
    st = compress(inner, body)
    st = compress(st, padding(BLOCK + len(body)))
    digest = struct.pack(">8I", *st)
    out = compress(outer, digest + padding(BLOCK + len(digest)))
    return struct.pack(">8I", *out)


def pack_key(hmac_key: bytes) -> bytes:
    """`struct spa_key` for hmac_key, as the bytes of a map value (host byte order)."""
    inner, outer = midstates(hmac_key)
    return SPA_KEY.pack(*inner, *outer)


def kw_pad128() -> tuple[int, ...]:
    """K[t] + W[t] of the padding block of a 128-byte message (SHA_KW_PAD128 in sha256.h)."""
    return tuple((k + w) & _M for k, w in zip(K, schedule(padding(128)), strict=True))
