"""The XDP HMAC-SHA256 of bpf/sha256.h, run through BPF_PROG_TEST_RUN (spagate.lab.hmac)."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from spagate.gate.kernel.abi import SPA_KEYS_MAX, XdpAction
from spagate.lab.hmac import HmacProgram
from spagate.lab.hmac import mac_packet as spa_packet
from spagate.lab.vectors import vectors_dir


@pytest.fixture(scope="module")
def prog():
    p = HmacProgram()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def key(prog) -> bytes:
    k = os.urandom(32)
    prog.set_keys([k])
    return k


def test_valid_packets_pass(prog, key):
    for _ in range(64):
        assert prog.verdict(spa_packet(key)) == XdpAction.PASS


def test_every_single_bit_flip_drops(prog, key):
    packet = spa_packet(key)
    assert prog.verdict(packet) == XdpAction.PASS
    for bit in range(len(packet) * 8):  # mac, iv and ct
        bad = bytearray(packet)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert prog.verdict(bytes(bad)) == XdpAction.DROP, f"bit {bit} flipped still passes"


def test_random_packets_drop(prog, key):
    for _ in range(200):
        assert prog.verdict(os.urandom(96)) == XdpAction.DROP


def test_wrong_key_drops(prog, key):
    other = os.urandom(32)
    assert prog.verdict(spa_packet(other)) == XdpAction.DROP
    prog.set_keys([other])
    assert prog.verdict(spa_packet(other)) == XdpAction.PASS
    assert prog.verdict(spa_packet(key)) == XdpAction.DROP


def test_no_keys_drops_everything(prog, key):
    packet = spa_packet(key)
    prog.set_keys([key], count=0)
    assert prog.verdict(packet) == XdpAction.DROP


def test_key_ring_tries_every_key_up_to_the_count(prog):
    ring = [os.urandom(32) for _ in range(SPA_KEYS_MAX)]
    prog.set_keys(ring)
    for k in ring:
        assert prog.verdict(spa_packet(k)) == XdpAction.PASS
    last = spa_packet(ring[-1])
    prog.set_keys(ring, count=SPA_KEYS_MAX - 1)  # last slot filled but not counted
    assert prog.verdict(last) == XdpAction.DROP
    assert prog.verdict(spa_packet(ring[0])) == XdpAction.PASS


def test_real_sparoid_vectors_pass(prog):
    vdir = vectors_dir("sparoid")
    if not vdir.is_dir():
        pytest.fail(
            f"sparoid test vectors not found at {vdir}: clone shared/ beside the repo "
            "or set SPAGATE_VECTORS to the directory holding sparoid/"
        )
    fields = {}
    for line in (vdir / "keys.ini").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields[name.strip()] = value.strip()
    hmac_key = bytes.fromhex(fields["hmac-key"])
    packets = sorted(vdir.glob("*.bin"))
    assert len(packets) >= 14, f"expected the 14 sparoid vectors in {vdir}"
    prog.set_keys([os.urandom(32), hmac_key])  # second slot: the loop must reach it
    for path in packets:
        data = path.read_bytes()
        assert len(data) == 96, path.name
        assert hmac.compare_digest(
            hmac.new(hmac_key, data[32:], hashlib.sha256).digest(), data[:32]
        ), f"{path.name}: vector itself does not verify"
        assert prog.verdict(data) == XdpAction.PASS, path.name
        assert prog.verdict(data[:95] + bytes([data[95] ^ 0x80])) == XdpAction.DROP, path.name
