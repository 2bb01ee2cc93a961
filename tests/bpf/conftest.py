"""One compiled gate per test module (bcc takes a second or two), maps reset between cases."""

from __future__ import annotations

import contextlib
import itertools
import os
import time

import pytest

from spagate.gate.core.hints import tag_table
from spagate.gate.kernel.build import GateOptions, load
from spagate.gate.kernel.pins import unpin
from spagate.gate.kernel.ringbuf import SampleRing
from spagate.protocol import KeyPair, generate_keypair, make_packet

PROTECTED = [("tcp", 22), ("tcp", 443), ("udp", 51820), ("udp", 53)]
# Small SPA limits keep the budget cases quick; one ring page holds 26 records (test_spa).
TEST_OPTIONS = GateOptions(
    spa_burst=3, spa_budget_per_s=40, untagged_budget_per_s=200, ringbuf_pages=1,
    sample_rate_per_s=5,
)  # fmt: skip

# The key the `fresh` gate checks SPA MACs against (spa_keys slot 0).
SPA_KEYS = generate_keypair()

_seq = itertools.count()


def spa_payload(keys: KeyPair = SPA_KEYS, tagged: bool = False) -> bytes:
    """A valid 96-byte SPA packet (fresh nonce and IV) MACed with keys.hmac_key; tagged: with
    spagate's tag in the IV (the gate must hold the identity's hints: set_tags)."""
    return make_packet(keys, "198.51.100.7", int(time.time() * 1000), tagged=tagged)


def set_tags(gate, ring: list[KeyPair]) -> None:
    """The identities' tag hints of now, as the worker keeps them (slot i = ring[i])."""
    table, _ = tag_table(ring, int(time.time() * 1000), 5000)
    gate.maps.set_spa_tags(table)


def pin_dir_for_test() -> str:
    return f"/sys/fs/bpf/spagate-test-{os.getpid()}-{next(_seq)}"


@pytest.fixture(scope="module")
def gate():
    with loaded(TEST_OPTIONS) as g:
        yield g


@contextlib.contextmanager
def loaded(options: GateOptions):
    """A compiled gate with a list of its SPA records (poll() fills it) and drain_samples()."""
    pin_dir = pin_dir_for_test()
    g = load(options, pin_dir)
    records = []
    g.on_spa(records.append)
    g.records = records
    samples = SampleRing(g.internal["spa_samples"])
    g.drain_samples = samples.drain
    try:
        yield g
    finally:
        samples.close()
        g.close()
        unpin(pin_dir)


@pytest.fixture
def fresh(gate):
    """The module's gate with empty state: no windows, flows, static list, MACs seen; default
    ports; SPA_KEYS as the only SPA key."""
    gate.poll(0)
    gate.records.clear()
    gate.maps.clear()
    gate.forget_seen()  # not pinned, not in GateMaps: the program's own map
    gate.maps.set_static([])
    gate.maps.set_protected(PROTECTED)
    gate.maps.set_spa_keys([SPA_KEYS.hmac_key])
    set_tags(gate, [SPA_KEYS])
    gate.drain_samples()
    return gate
