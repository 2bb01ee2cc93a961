"""The maps that keep the common paths short: allow_hint, the protected bitmaps, static_count.

Each is derived state kept by GateMaps; these cases check that the verdicts follow the allow
map, the port list and the static list through every write, revoke and reload."""

from __future__ import annotations

import os
import time

import pytest
from conftest import TEST_OPTIONS, pin_dir_for_test

from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import ALLOW_HINT as HINT
from spagate.gate.kernel.abi import XdpAction
from spagate.gate.kernel.build import load
from spagate.gate.kernel.pins import unpin
from spagate.lab.packets import SYN, TCP, UDP, eth, ipv4, tcp, udp
from spagate.lab.util import run_counted
from spagate.net import addr16

SEC = 1_000_000_000
SRC = "10.4.4.4"


def syn(dport=22, src=SRC):
    return eth(ipv4(src, "10.0.0.1", TCP, tcp(40000, dport, SYN)))


def dgram(dport, src=SRC):
    return eth(ipv4(src, "10.0.0.1", UDP, udp(40000, dport, b"x" * 8)))


def verdict(gate, packet):
    res, moved = run_counted(gate, packet)
    assert len(moved) == 1, moved
    return res.retval, next(iter(moved))


def hint(gate, ip=SRC):
    raw = bpfsys.lookup(gate.maps.fd("allow_hint"), addr16(ip), HINT.size)
    return None if raw is None else HINT.unpack(raw)


def test_whole_host_grant_shortened_closes(fresh):
    now = time.monotonic_ns()
    fresh.maps.allow(SRC, now + 60 * SEC)
    assert verdict(fresh, syn()) == (XdpAction.PASS, "protected_allowed")
    fresh.maps.allow(SRC, now - SEC)  # the same entry, rewritten as expired
    assert verdict(fresh, syn()) == (XdpAction.DROP, "tcp_dropped_new")
    assert hint(fresh) == (now - SEC, now + 60 * SEC)  # exact host grant, upper bound kept


def test_revoke_whole_host_keeps_port_grant(fresh):
    now = time.monotonic_ns()
    fresh.maps.allow(SRC, now + 60 * SEC)
    fresh.maps.allow(SRC, now + 60 * SEC, "tcp", 443)
    assert verdict(fresh, syn(22)) == (XdpAction.PASS, "protected_allowed")
    assert fresh.maps.revoke(SRC)
    assert verdict(fresh, syn(22)) == (XdpAction.DROP, "tcp_dropped_new")
    assert verdict(fresh, syn(443)) == (XdpAction.PASS, "protected_allowed")
    assert fresh.maps.revoke(SRC, "tcp", 443)
    assert verdict(fresh, syn(443)) == (XdpAction.DROP, "tcp_dropped_new")


def test_port_grant_then_whole_host(fresh):
    now = time.monotonic_ns()
    fresh.maps.allow(SRC, now + 60 * SEC, "tcp", 443)
    assert hint(fresh) == (0, now + 60 * SEC)
    assert verdict(fresh, syn(22)) == (XdpAction.DROP, "tcp_dropped_new")
    fresh.maps.allow(SRC, now + 5 * SEC)
    assert hint(fresh) == (now + 5 * SEC, now + 60 * SEC)
    assert verdict(fresh, syn(22)) == (XdpAction.PASS, "protected_allowed")


def test_revoke_ip_drops_the_hint(fresh):
    fresh.maps.allow(SRC, time.monotonic_ns() + 60 * SEC, "udp", 0)
    assert verdict(fresh, dgram(51820)) == (XdpAction.PASS, "protected_allowed")
    assert fresh.maps.revoke_ip(SRC) == (1, 1)  # the window and the flow it created
    assert hint(fresh) is None
    assert verdict(fresh, dgram(51820)) == (XdpAction.DROP, "udp_dropped")


def test_clear_empties_the_hint(fresh):
    fresh.maps.allow(SRC, time.monotonic_ns() + 60 * SEC)
    fresh.maps.clear("allow")
    assert hint(fresh) is None
    assert verdict(fresh, syn()) == (XdpAction.DROP, "tcp_dropped_new")


@pytest.mark.parametrize(
    "ports",
    [
        [("tcp", 1), ("tcp", 63), ("tcp", 64), ("tcp", 65535), ("udp", 65535), ("udp", 1)],
        [("udp", 64)],
        [],
    ],
)
def test_protected_bitmap_round_trip(fresh, ports):
    fresh.maps.set_protected(ports)
    assert fresh.maps.protected() == sorted(ports)
    for proto in ("tcp", "udp"):
        for port in (1, 2, 62, 63, 64, 65, 1023, 1024, 65534, 65535):
            pkt = syn(port) if proto == "tcp" else dgram(port)
            got = verdict(fresh, pkt)
            if (proto, port) in ports:
                assert got[1] in ("tcp_dropped_new", "udp_dropped"), (proto, port)
            else:
                assert got == (XdpAction.PASS, "pass_unrelated"), (proto, port)


def test_protected_replaced_exactly(fresh):
    fresh.maps.set_protected([("tcp", 22), ("tcp", 23), ("udp", 22)])
    fresh.maps.set_protected([("tcp", 23), ("tcp", 2222)])
    assert fresh.maps.protected() == [("tcp", 23), ("tcp", 2222)]
    assert verdict(fresh, syn(22)) == (XdpAction.PASS, "pass_unrelated")
    assert verdict(fresh, dgram(22)) == (XdpAction.PASS, "pass_unrelated")
    assert verdict(fresh, syn(2222)) == (XdpAction.DROP, "tcp_dropped_new")


def test_static_count_follows_the_list(fresh):
    src = "10.60.1.1"
    fresh.maps.set_static(["10.60.0.0/16"])
    assert verdict(fresh, syn(src=src)) == (XdpAction.PASS, "protected_static")
    fresh.maps.set_static(["10.60.0.0/16", "10.61.0.0/16"])
    fresh.maps.set_static(["10.61.0.0/16"])
    assert verdict(fresh, syn(src="10.61.0.9")) == (XdpAction.PASS, "protected_static")
    assert verdict(fresh, syn(src=src)) == (XdpAction.DROP, "tcp_dropped_new")
    fresh.maps.set_static([])
    assert verdict(fresh, syn(src="10.61.0.9")) == (XdpAction.DROP, "tcp_dropped_new")


def test_reload_rebuilds_derived_maps():
    """An allow map and static list kept from before allow_hint/static_count existed (their
    pins removed here) keep working after the reload: the loader rebuilds both."""
    pin_dir = pin_dir_for_test()
    until = time.monotonic_ns() + 60 * SEC
    try:
        with load(TEST_OPTIONS, pin_dir) as g1:
            g1.maps.set_protected([("tcp", 22), ("tcp", 443)])
            g1.maps.set_static(["10.70.0.0/16"])
            g1.maps.allow(SRC, until)
            g1.maps.allow("10.4.4.5", until, "tcp", 443)
        os.unlink(f"{pin_dir}/allow_hint")
        os.unlink(f"{pin_dir}/static_count")
        with load(TEST_OPTIONS, pin_dir) as g2:
            assert g2.pin_actions["allow_hint"] == "created"
            assert g2.pin_actions["static_count"] == "created"
            assert g2.pin_actions["allow"] == "kept"
            assert hint(g2) == (until, until)
            assert hint(g2, "10.4.4.5") == (0, until)
            assert verdict(g2, syn()) == (XdpAction.PASS, "protected_allowed")
            assert verdict(g2, syn(443, "10.4.4.5")) == (XdpAction.PASS, "protected_allowed")
            assert verdict(g2, syn(22, "10.4.4.5")) == (XdpAction.DROP, "tcp_dropped_new")
            assert verdict(g2, syn(src="10.70.3.3")) == (XdpAction.PASS, "protected_static")
    finally:
        unpin(pin_dir)


def test_revoke_counts_only_live_windows_and_revoke_all_empties_every_window(fresh):
    now = time.monotonic_ns()
    fresh.maps.allow(SRC, now - 1)  # expired: removed, not counted
    fresh.maps.allow(SRC, now + 60 * SEC, "tcp", 22)
    assert fresh.maps.revoke_ip(SRC) == (1, 0)
    assert fresh.maps.revoke_ip(SRC) == (0, 0)
    for i in range(5):
        fresh.maps.allow(f"192.0.2.{10 + i}", now + 60 * SEC)
    fresh.maps.allow(SRC, now + 60 * SEC, "udp", 0)
    assert verdict(fresh, dgram(51820)) == (XdpAction.PASS, "protected_allowed")  # a flow
    assert fresh.maps.revoke_all() == (6, 1)
    assert fresh.maps.allowed(include_expired=True) == [] and fresh.maps.udp_flows() == []
    assert hint(fresh) is None
    assert verdict(fresh, syn(22)) == (XdpAction.DROP, "tcp_dropped_new")


def test_batched_walk_sees_every_entry_once(fresh):
    now = time.monotonic_ns()
    for i in range(100):
        fresh.maps.allow(f"10.9.{i // 250}.{i % 250}", now + (i + 1) * SEC, "tcp", 22)
    fd = fresh.maps.fd("allow")
    walked = list(bpfsys.items(fd, 20, 8, chunk=7))
    assert len(walked) == 100 == len({k for k, _ in walked})
    assert {k for k, _ in walked} == set(bpfsys.keys(fd, 20))
    assert fresh.maps.live_windows() == 100
