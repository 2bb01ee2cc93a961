"""SPA key midstates: HMAC finished from them equals hmac.new, and the C tables agree."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct

import pytest

from spagate.gate.kernel import abi, spakeys
from spagate.gate.kernel.build import BPF_DIR


def _c_table(name: str) -> tuple[int, ...]:
    """The numbers of a `#define NAME ...` table in bpf/sha256.h."""
    text = (BPF_DIR / "sha256.h").read_text()
    m = re.search(rf"#define {name}\s*\\\n((?:.*\\\n)*.*)\n", text)
    assert m, f"{name} not found in sha256.h"
    return tuple(int(x, 16) for x in re.findall(r"0x[0-9a-fA-F]+", m.group(1)))


@pytest.mark.parametrize("key_len", [0, 1, 16, 32, 63, 64, 65, 100])
def test_midstate_hmac_matches_hmac_new(key_len):
    for _ in range(20):
        key, body = os.urandom(key_len), os.urandom(64)
        inner, outer = spakeys.midstates(key)
        want = hmac.new(key, body, hashlib.sha256).digest()
        assert spakeys.hmac_from_midstates(inner, outer, body) == want


def test_compress_matches_hashlib():
    msg = os.urandom(64 * 3 - 20)
    padded = msg + spakeys.padding(len(msg))
    assert len(padded) % 64 == 0
    st = spakeys.IV
    for i in range(0, len(padded), 64):
        st = spakeys.compress(st, padded[i : i + 64])
    assert struct.pack(">8I", *st) == hashlib.sha256(msg).digest()


def test_pack_key_layout():
    key = os.urandom(32)
    inner, outer = spakeys.midstates(key)
    packed = spakeys.pack_key(key)
    assert len(packed) == spakeys.SPA_KEY_SIZE == 64
    assert struct.unpack("=16I", packed) == inner + outer
    # An ipad midstate differs from the opad one and from the IV for any real key.
    assert inner != outer and spakeys.IV not in (inner, outer)


def test_wrong_block_size_is_an_error():
    with pytest.raises(ValueError, match="64 bytes"):
        spakeys.compress(spakeys.IV, b"\0" * 63)


def test_c_constants_match_python():
    assert _c_table("SHA_K") == spakeys.K
    assert _c_table("SHA_KW_PAD128") == spakeys.kw_pad128()


def test_c_keys_max_matches_python():
    text = (BPF_DIR / "consts.h").read_text()
    assert re.search(rf"#define SPA_KEYS_MAX {abi.SPA_KEYS_MAX}\b", text)
