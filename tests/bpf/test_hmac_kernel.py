"""The XDP HMAC-SHA256 of bpf/sha256.h, run through BPF_PROG_TEST_RUN.

A tiny XDP program (PROGRAM below) reads a bare 96-byte SPA payload (no headers), tries the
keys of an array map with bpf/spa_mac.h (as bpf/gate.c does), and returns XDP_PASS when a
key's MAC matches, XDP_DROP otherwise. Keys are the midstates from spagate.gate.spakeys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path

import pytest

from spagate.gate import bpfsys, spakeys

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"

# The key loop (bpf/spa_mac.h) is the one bpf/gate.c's verifier program uses.
PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include "spa_keys.h"

BPF_ARRAY(spa_keys, struct spa_key, SPA_KEYS_MAX);
BPF_ARRAY(spa_key_count, __u32, 1);

static __always_inline struct spa_key *spa_key_at(__u32 *slot)
{
	return spa_keys.lookup(slot);
}

static __always_inline __u32 *spa_key_count_get(void)
{
	__u32 zero = 0;

	return spa_key_count.lookup(&zero);
}

#include "spa_mac.h"

int xdp_hmac(struct xdp_md *ctx)
{
	struct spa_wire wire;

	if (ctx->data_end - ctx->data != SPA_PACKET_SIZE)
		return XDP_DROP;
	if (bpf_xdp_load_bytes(ctx, 0, &wire, sizeof(wire)) < 0)
		return XDP_DROP;
	return spa_mac_any(&wire) >= 0 ? XDP_PASS : XDP_DROP;
}
"""
CFLAGS = [f"-I{BPF_DIR}", "-Wno-ignored-attributes", "-Wno-duplicate-decl-specifier"]


class HmacProgram:
    """PROGRAM compiled and loaded with bcc; set_keys() fills spa_keys and spa_key_count."""

    def __init__(self):
        import bcc

        self.bpf = bcc.BPF(text=PROGRAM.encode(), cflags=CFLAGS)
        self.fd = self.bpf.load_func(b"xdp_hmac", bcc.BPF.XDP).fd
        self.keys_fd = self.bpf.get_table(b"spa_keys").get_fd()
        self.count_fd = self.bpf.get_table(b"spa_key_count").get_fd()

    def set_keys(self, hmac_keys, count: int | None = None) -> None:
        for i in range(spakeys.SPA_KEYS_MAX):
            value = spakeys.pack_key(hmac_keys[i]) if i < len(hmac_keys) else bytes(64)
            bpfsys.update(self.keys_fd, struct.pack("=I", i), value)
        n = len(hmac_keys) if count is None else count
        bpfsys.update(self.count_fd, struct.pack("=I", 0), struct.pack("=I", n))

    def run(self, packet: bytes, repeat: int = 1) -> bpfsys.TestRun:
        return bpfsys.prog_test_run(self.fd, packet, repeat=repeat)

    def verdict(self, packet: bytes) -> int:
        return self.run(packet).retval

    def close(self) -> None:
        self.bpf.cleanup()


def spa_packet(hmac_key: bytes, body: bytes | None = None) -> bytes:
    body = os.urandom(64) if body is None else body
    return hmac.new(hmac_key, body, hashlib.sha256).digest() + body


def vectors_dir() -> Path:
    base = os.environ.get("SPAGATE_VECTORS")
    root = Path(base) if base else Path(__file__).parents[3] / "shared" / "vectors"
    return root / "sparoid"


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
        assert prog.verdict(spa_packet(key)) == bpfsys.XDP_PASS


def test_every_single_bit_flip_drops(prog, key):
    packet = spa_packet(key)
    assert prog.verdict(packet) == bpfsys.XDP_PASS
    for bit in range(len(packet) * 8):  # mac, iv and ct
        bad = bytearray(packet)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert prog.verdict(bytes(bad)) == bpfsys.XDP_DROP, f"bit {bit} flipped still passes"


def test_random_packets_drop(prog, key):
    for _ in range(200):
        assert prog.verdict(os.urandom(96)) == bpfsys.XDP_DROP


def test_wrong_key_drops(prog, key):
    other = os.urandom(32)
    assert prog.verdict(spa_packet(other)) == bpfsys.XDP_DROP
    prog.set_keys([other])
    assert prog.verdict(spa_packet(other)) == bpfsys.XDP_PASS
    assert prog.verdict(spa_packet(key)) == bpfsys.XDP_DROP


def test_no_keys_drops_everything(prog, key):
    packet = spa_packet(key)
    prog.set_keys([key], count=0)
    assert prog.verdict(packet) == bpfsys.XDP_DROP


def test_key_ring_tries_every_key_up_to_the_count(prog):
    ring = [os.urandom(32) for _ in range(spakeys.SPA_KEYS_MAX)]
    prog.set_keys(ring)
    for k in ring:
        assert prog.verdict(spa_packet(k)) == bpfsys.XDP_PASS
    last = spa_packet(ring[-1])
    prog.set_keys(ring, count=spakeys.SPA_KEYS_MAX - 1)  # last slot filled but not counted
    assert prog.verdict(last) == bpfsys.XDP_DROP
    assert prog.verdict(spa_packet(ring[0])) == bpfsys.XDP_PASS


def test_real_sparoid_vectors_pass(prog):
    vdir = vectors_dir()
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
        assert prog.verdict(data) == bpfsys.XDP_PASS, path.name
        assert prog.verdict(data[:95] + bytes([data[95] ^ 0x80])) == bpfsys.XDP_DROP, path.name
