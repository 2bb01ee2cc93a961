"""Packets captured from the real sparoid client decode to exactly the recorded fields."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from spagate.lab.vectors import vectors_dir as _vectors_dir
from spagate.protocol import Accepted, Decoded, KeyPair, Message, Reason, Verifier, decode, encode


def vectors_dir() -> Path:
    return _vectors_dir("sparoid")


def _load() -> tuple[dict, list[dict]] | None:
    path = vectors_dir() / "vectors.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data, data["vectors"]


_DATA = _load()
_IDS = [v["name"] for v in _DATA[1]] if _DATA else ["missing"]


def _require() -> tuple[dict, list[dict]]:
    if _DATA is None:
        pytest.fail(
            f"sparoid test vectors not found at {vectors_dir()}: clone shared/ beside the repo "
            "or set SPAGATE_VECTORS to the directory holding sparoid/vectors.json"
        )
    return _DATA


@pytest.fixture(params=_IDS)
def vector(request) -> dict:
    return next(v for v in _require()[1] if v["name"] == request.param)


@pytest.fixture
def keys() -> KeyPair:
    k = _require()[0]["keys"]
    return KeyPair.from_hex(k["key"], k["hmac_key"])


def test_all_vectors_present():
    assert len(_require()[1]) == 14
    for v in _DATA[1]:
        assert (vectors_dir() / v["file"]).read_bytes().hex() == v["packet_hex"]


def test_vector_decodes_exactly(vector, keys):
    packet = (vectors_dir() / vector["file"]).read_bytes()
    result = decode(packet, [keys])
    assert isinstance(result, Decoded), result
    msg = result.message
    assert result.key_index == 0
    assert msg.version == vector["version"] == 1
    assert msg.ts_ms == vector["ts_ms"]
    assert msg.nonce.hex() == vector["nonce"]
    assert msg.ip == ip_address(vector["ip"])
    # ::ffff:a.b.c.d arrives as 4 bytes and is an IPv4Address either way
    assert isinstance(msg.ip, IPv4Address if len(vector["ip_bytes"]) == 8 else IPv6Address)
    if len(vector["ip_bytes"]) == 32:
        assert msg.ip.packed.hex() == vector["ip_bytes"]


def test_vector_reencodes_to_the_same_bytes(vector, keys):
    packet = (vectors_dir() / vector["file"]).read_bytes()
    msg = decode(packet, [keys]).message
    assert encode(keys, msg, bytes.fromhex(vector["iv"])) == packet


def test_vector_verifies_with_injected_clock(vector, keys):
    packet = (vectors_dir() / vector["file"]).read_bytes()
    v = Verifier([keys])
    ok = v.verify(packet, vector["ts_ms"] + 1000)
    assert isinstance(ok, Accepted)
    assert ok.replay_until_ms == vector["ts_ms"] + 5000
    assert v.verify(packet, vector["ts_ms"] + 1001).reason is Reason.REPLAY
    # today the capture is old: a live gate rejects it as stale
    assert Verifier([keys]).verify(packet, vector["ts_ms"] + 5001).reason is Reason.STALE


def test_v4_mapped_vector_equals_plain_ipv4(keys):
    (v,) = [v for v in _require()[1] if v["ip"] == "192.0.2.33"]
    packet = (vectors_dir() / v["file"]).read_bytes()
    msg = decode(packet, [keys]).message
    mapped = Message(msg.ts_ms, msg.nonce, IPv6Address("::ffff:192.0.2.33"))
    assert encode(keys, mapped, bytes.fromhex(v["iv"])) == packet
