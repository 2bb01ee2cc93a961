"""Key material: a KeyPair (AES key + HMAC key) and its hex text form (sparoid format)."""

from __future__ import annotations

import hmac
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An encryption key and an HMAC key, 32 bytes each.

    Per-key state (a keyed HMAC to copy, an AES block decryptor) is built once here so that
    decoding a packet does no key setup. That state is not thread-safe: share a KeyPair
    between threads only if they do not decode at the same time.
    """

    key: bytes = field(repr=False)
    hmac_key: bytes = field(repr=False)
    _mac: Any = field(init=False, repr=False, compare=False)
    _ecb: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("key", "hmac_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes | bytearray) or len(value) != KEY_BYTES:
                got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
                raise ValueError(f"{name} must be {KEY_BYTES} bytes, got {got}")
        object.__setattr__(self, "key", bytes(self.key))
        object.__setattr__(self, "hmac_key", bytes(self.hmac_key))
        mac = hmac.new(self.hmac_key, digestmod="sha256")
        # The keyed state to copy per packet: OpenSSL's own HMAC object where the hmac module
        # wraps one (its copy, update and digest are then C calls only), else the wrapper.
        object.__setattr__(self, "_mac", getattr(mac, "_hmac", None) or mac)
        # ECB over whole blocks is stateless between update() calls, so one decryptor serves
        # every packet; CBC chaining is a XOR done by the codec.
        ecb = Cipher(algorithms.AES(self.key), modes.ECB()).decryptor()
        object.__setattr__(self, "_ecb", ecb)

    @classmethod
    def from_hex(cls, key: str, hmac_key: str) -> KeyPair:
        return cls(parse_hex_key(key), parse_hex_key(hmac_key))


def parse_hex_key(text: str) -> bytes:
    """64 hex characters -> 32 bytes; ValueError with a one-line reason otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"key must be text, got {type(text).__name__}")
    s = text.strip()
    if not s:
        raise ValueError(f"empty, expected {2 * KEY_BYTES} hex characters")
    bad = next((i for i, c in enumerate(s) if c not in _HEX), None)
    if bad is not None:
        raise ValueError(
            f"non-hex character {s[bad]!r} at position {bad + 1}, "
            f"expected {2 * KEY_BYTES} hex characters"
        )
    if len(s) != 2 * KEY_BYTES:
        raise ValueError(f"{len(s)} hex characters, expected {2 * KEY_BYTES}")
    return bytes.fromhex(s)


def generate_keypair() -> KeyPair:
    return KeyPair(secrets.token_bytes(KEY_BYTES), secrets.token_bytes(KEY_BYTES))
