"""The fwknop port: its own source buckets and budget, the payload queued byte for byte, the
SPA port shared by length, and neither protocol's flood spending the other's budget."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from conftest import SPA_KEYS, TEST_OPTIONS, pin_dir_for_test, spa_payload

from spagate.gate.kernel.abi import XdpAction
from spagate.gate.kernel.build import load
from spagate.gate.kernel.pins import unpin
from spagate.gate.kernel.ringbuf import FwknopRing
from spagate.lab.packets import ETH_IP6, UDP, eth, ipv4, ipv6, udp
from spagate.lab.util import run_counted
from spagate.lab.vectors import vectors_dir

VECTOR = (vectors_dir("fwknop") / "access_bob.spa").read_bytes()


def fw4(payload: bytes, src="198.51.100.7", port=62201) -> bytes:
    return eth(ipv4(src, "203.0.113.1", UDP, udp(40000, port, payload)))


def drain(gate) -> list:
    got = []
    ring = FwknopRing(gate.internal["fwknop_events"], got.append)
    try:
        ring.consume()
    finally:
        ring.close()
    return got


def run(gate, packet):
    res, moved = run_counted(gate, packet, 1)
    assert res.retval == XdpAction.DROP  # nothing ever answers on the fwknop port
    return moved


def test_an_fwknop_packet_is_queued_byte_for_byte(fresh):
    drain(fresh)
    assert run(fresh, fw4(VECTOR)) == {"fwknop_queued": 1}
    (rec,) = drain(fresh)
    assert rec.payload == VECTOR and str(rec.src) == "198.51.100.7" and rec.dport == 62201
    v6 = eth(ipv6("2001:db8::7", "2001:db8::1", UDP, udp(40000, 62201, VECTOR)), ETH_IP6)
    assert run(fresh, v6) == {"fwknop_queued": 1}
    assert str(drain(fresh)[0].src) == "2001:db8::7"


@pytest.mark.parametrize("size", [0, 96, 139, 1501])
def test_sizes_outside_fwknops_are_dropped(fresh, size):
    assert run(fresh, fw4(os.urandom(size))) == {"fwknop_bad_size": 1}


def test_the_source_bucket_and_the_budget_are_fwknops_own(fresh):
    burst = TEST_OPTIONS.spa_burst
    for _ in range(burst):
        assert run(fresh, fw4(VECTOR)) == {"fwknop_queued": 1}
    assert run(fresh, fw4(VECTOR)) == {"fwknop_rate_source": 1}
    # the same source still has its whole sparoid bucket
    spa = eth(ipv4("198.51.100.7", "203.0.113.1", UDP, udp(40000, 8484, spa_payload())))
    assert run(fresh, spa) == {"spa_queued": 1}
    drain(fresh)


def test_an_fwknop_flood_spends_fwknops_budget_only():
    pin = pin_dir_for_test()
    g = load(replace(TEST_OPTIONS, fwknop_budget_per_s=5), pin)
    try:
        g.maps.set_spa_keys([SPA_KEYS.hmac_key])
        g.maps.set_protected([("tcp", 22)])
        moved = {}
        for i in range(20):  # from 20 sources: each bucket has room, the budget does not
            for k, v in run(g, fw4(VECTOR, src=f"100.64.0.{i + 1}")).items():
                moved[k] = moved.get(k, 0) + v
        assert moved == {"fwknop_queued": 5, "fwknop_rate_global": 15}
        spa = eth(ipv4("100.64.1.1", "203.0.113.1", UDP, udp(40000, 8484, spa_payload())))
        assert run(g, spa) == {"spa_queued": 1}  # sparoid's budget untouched
    finally:
        g.close()
        unpin(pin)


def test_one_port_for_both_is_told_apart_by_length():
    pin = pin_dir_for_test()
    g = load(replace(TEST_OPTIONS, fwknop_port=8484), pin)
    try:
        g.maps.set_spa_keys([SPA_KEYS.hmac_key])
        assert run(g, fw4(VECTOR, port=8484)) == {"fwknop_queued": 1}
        spa = eth(ipv4("100.64.1.1", "203.0.113.1", UDP, udp(40000, 8484, spa_payload())))
        assert run(g, spa) == {"spa_queued": 1}
    finally:
        g.close()
        unpin(pin)


def test_fwknop_off_leaves_its_port_untouched():
    pin = pin_dir_for_test()
    g = load(replace(TEST_OPTIONS, fwknop_port=0), pin)
    try:
        g.maps.set_protected([("tcp", 22)])
        res, moved = run_counted(g, fw4(VECTOR), 1)
        assert res.retval == XdpAction.PASS and "fwknop_queued" not in moved, moved
        assert drain(g) == []
    finally:
        g.close()
        unpin(pin)
