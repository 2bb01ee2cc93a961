"""A tiny XDP program around the gate's in-kernel MAC check (bpf/spa_mac.h, bpf/sha256.h).

It reads a bare 96-byte SPA payload (no headers), tries the keys of an array map as
xdp_spa_verify does, and returns XDP_PASS when a key's MAC matches, XDP_DROP otherwise. For
the tests of the HMAC and its benchmark.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from spagate.gate.kernel import bpfsys, spakeys
from spagate.gate.kernel.abi import SPA_KEYS_MAX, U32, XdpAction
from spagate.gate.kernel.build import Program

# The key loop (spa_mac.h) is the one gate.c's verifier program uses.
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
	__u32 digest[8];

	return spa_mac_any(&wire, digest) >= 0 ? XDP_PASS : XDP_DROP;
}
"""


def mac_packet(hmac_key: bytes, body: bytes | None = None) -> bytes:
    """A 96-byte payload whose MAC (not its content) is valid for hmac_key."""
    body = os.urandom(64) if body is None else body
    return hmac.new(hmac_key, body, hashlib.sha256).digest() + body


class HmacProgram:
    """PROGRAM compiled and loaded; set_keys() fills spa_keys and spa_key_count."""

    def __init__(self):
        self._prog = Program(PROGRAM)
        self.fd = self._prog.fd("xdp_hmac")
        self.keys_fd = self._prog.map_fd("spa_keys")
        self.count_fd = self._prog.map_fd("spa_key_count")

    def set_keys(self, hmac_keys, count: int | None = None) -> None:
        for i in range(SPA_KEYS_MAX):
            value = spakeys.pack_key(hmac_keys[i]) if i < len(hmac_keys) else bytes(64)
            bpfsys.update(self.keys_fd, U32.pack(i), value)
        n = len(hmac_keys) if count is None else count
        bpfsys.update(self.count_fd, U32.pack(0), U32.pack(n))

    def run(self, packet: bytes, repeat: int = 1) -> bpfsys.TestRun:
        return bpfsys.prog_test_run(self.fd, packet, repeat=repeat)

    def verdict(self, packet: bytes) -> XdpAction:
        return XdpAction(self.run(packet).retval)

    def close(self) -> None:
        self._prog.close()
