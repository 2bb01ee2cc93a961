"""Shared by the fwknop protocol tests: keys, the captured vectors, plaintext builders."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from spagate.lab.vectors import vectors_dir as _vectors_dir
from spagate.protocol.fwknop import FwknopKey, seal
from spagate.protocol.fwknop.keys import b64_unpadded

T0 = 1_795_305_700  # a timestamp near the vectors' capture time (unix seconds)


def vectors_dir() -> Path:
    return _vectors_dir("fwknop")


def vector_keys() -> dict[str, str]:
    """KEY_BASE64 and HMAC_KEY_BASE64 from keys.txt (fwknop --key-gen output)."""
    keys = {}
    for line in (vectors_dir() / "keys.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            keys[parts[0]] = parts[1]
    return keys


def b64(text: str) -> str:
    return b64_unpadded(text.encode()).decode()


def with_digest(body: str, digest: str = "sha256") -> str:
    """body + ':' + its unpadded base64 digest: an fwknop plaintext."""
    d = hashlib.new(digest, body.encode()).digest()
    return f"{body}:{b64_unpadded(d).decode()}"


def plaintext(
    mtype: int = 1,
    access: str = "10.1.2.3,tcp/22",
    extra: tuple[str, ...] = (),
    user: str = "bob",
    ts: int = T0,
    rand: str = "1234567890123456",
    version: str = "3.0.0",
    digest: str = "sha256",
) -> str:
    """An fwknop plaintext with any fields; extra are the raw fields after the access field."""
    fields = [rand, b64(user), str(ts), version, str(mtype), b64(access), *extra]
    return with_digest(":".join(fields), digest)


def sealed(key: FwknopKey, text: str | bytes) -> bytes:
    """A packet the key authenticates, whatever its plaintext."""
    raw = text.encode() if isinstance(text, str) else text
    return seal(key, raw, os.urandom(8))


def new_key(hmac_type: str = "sha256") -> FwknopKey:
    return FwknopKey(os.urandom(32), os.urandom(64), hmac_type)
