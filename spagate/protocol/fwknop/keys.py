"""fwknop key material: a Rijndael key, an HMAC key and the HMAC's digest type.

fwknop's KEY is a passphrase (or KEY_BASE64 raw bytes) of 1 to 32 bytes that is never used
directly as the AES key: every packet carries a random 8-byte salt, and the AES-256 key and IV
are derived from key || salt with MD5 (OpenSSL's EVP_BytesToKey, one round), as fwknop's
cipher_funcs.c does. The HMAC key (HMAC_KEY or HMAC_KEY_BASE64) is 1 to 128 bytes.
"""

from __future__ import annotations

import binascii
import hmac
from dataclasses import dataclass, field
from typing import Any

KEY_MAX = 32  # RIJNDAEL_MAX_KEYSIZE: fwknop refuses longer keys
HMAC_KEY_MAX = 128  # MAX_DIGEST_BLOCK_LEN (the SHA-512 block)
DEFAULT_HMAC = "sha256"
SALTED_B64 = b"U2FsdGVkX1"  # base64 of "Salted__" (its first 10 characters), stripped on the wire

# Supported HMAC digest types -> length of the unpadded base64 tag on the wire.
# md5 is refused (see docs/fwknop.md); sha1 is kept for deployed clients: HMAC-SHA1 is still a
# sound MAC, its weakness is collisions, which an HMAC does not rely on.
HMAC_TYPES: dict[str, int] = {
    "sha1": 27,
    "sha256": 43,
    "sha384": 64,
    "sha512": 86,
    "sha3_256": 43,
    "sha3_512": 86,
}


def b64_unpadded(data: bytes) -> bytes:
    """Base64 without '=' padding, as fwknop writes every field (strip_b64_eq)."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=")


def b64_decode(text: str | bytes) -> bytes:
    """Strict base64 with or without padding; ValueError otherwise."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    raw = raw.rstrip(b"=")
    if len(raw) % 4 == 1:
        raise ValueError("not base64 (bad length)")
    try:
        return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
    except binascii.Error:
        raise ValueError("not base64") from None


def hmac_type(name: str) -> str:
    """Normalise an HMAC digest type name (case-insensitive, as fwknop); ValueError if refused."""
    low = name.strip().lower()
    if low == "md5":
        raise ValueError("HMAC-MD5 is not supported: use sha256 (fwknop's default)")
    if low not in HMAC_TYPES:
        raise ValueError(f"unknown HMAC digest type {name!r}: use one of {', '.join(HMAC_TYPES)}")
    return low


@dataclass(frozen=True, slots=True)
class FwknopKey:
    """One identity's keys. Per-key HMAC state (already fed the "Salted__" prefix that every
    packet's HMAC covers) is built once here. Not thread-safe, like KeyPair."""

    key: bytes = field(repr=False)
    hmac_key: bytes = field(repr=False)
    hmac_type: str = DEFAULT_HMAC
    _mac: Any = field(init=False, repr=False, compare=False)
    _tag_chars: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, hi in (("key", KEY_MAX), ("hmac_key", HMAC_KEY_MAX)):
            value = getattr(self, name)
            if not isinstance(value, bytes | bytearray):
                raise ValueError(f"{name} must be bytes, got {type(value).__name__}")
            if not 1 <= len(value) <= hi:
                raise ValueError(f"{name} must be 1 to {hi} bytes, got {len(value)}")
            object.__setattr__(self, name, bytes(value))
        kind = hmac_type(self.hmac_type)
        if self.key == self.hmac_key:
            raise ValueError("the encryption key and the HMAC key must differ (fwknopd agrees)")
        object.__setattr__(self, "hmac_type", kind)
        mac = hmac.new(self.hmac_key, SALTED_B64, kind)
        object.__setattr__(self, "_mac", mac)
        object.__setattr__(self, "_tag_chars", HMAC_TYPES[kind])

    @classmethod
    def from_base64(cls, key: str, hmac_key: str, hmac_type: str = DEFAULT_HMAC) -> FwknopKey:
        """From KEY_BASE64 / HMAC_KEY_BASE64 values (fwknop --key-gen output)."""
        return cls(b64_decode(key), b64_decode(hmac_key), hmac_type)

    def tag(self, ciphertext_b64: bytes) -> bytes:
        """The unpadded base64 HMAC of a packet whose ciphertext text (prefix stripped) is given."""
        mac = self._mac.copy()
        mac.update(ciphertext_b64)
        return b64_unpadded(mac.digest())
