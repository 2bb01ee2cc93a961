"""Pinned maps: reused across reloads, readable from the pin dir without bcc, migrated."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TEST_OPTIONS, pin_dir_for_test

from spagate.errors import SpagateError
from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import MAP_SPECS, MapType, XdpAction
from spagate.gate.kernel.build import load
from spagate.gate.kernel.maps import GateMaps
from spagate.gate.kernel.pins import unpin
from spagate.lab.packets import SYN, TCP, eth, ipv4, tcp

SYN22 = eth(ipv4("10.3.3.3", "10.0.0.1", TCP, tcp(40000, 22, SYN)))


@pytest.fixture
def pin_dir():
    d = pin_dir_for_test()
    try:
        yield d
    finally:
        unpin(d)


def test_reload_reuses_pinned_maps(pin_dir):
    until = time.monotonic_ns() + 60 * 10**9
    with load(TEST_OPTIONS, pin_dir) as g1:
        assert set(g1.pin_actions.values()) == {"created"}
        g1.maps.set_protected([("tcp", 22)])
        g1.maps.set_static(["192.0.2.0/24"])
        g1.maps.allow("10.3.3.3", until)
        g1.maps.replay_remember(b"N" * 16, 1234)
        assert g1.test_run(SYN22).retval == XdpAction.PASS
    assert sorted(os.listdir(pin_dir)) == sorted(MAP_SPECS)
    with load(TEST_OPTIONS, pin_dir) as g2:
        assert set(g2.pin_actions.values()) == {"kept"}
        assert g2.test_run(SYN22).retval == XdpAction.PASS  # window survived the reload
        assert g2.maps.counters()["protected_allowed"] == 2  # counters too
        assert g2.maps.replay_entries() == {b"N" * 16: 1234}
        assert [str(n) for n in g2.maps.static()] == ["192.0.2.0/24"]


def test_pin_dir_view_sees_program_writes(pin_dir):
    with load(TEST_OPTIONS, pin_dir) as g, GateMaps.from_pin_dir(pin_dir) as view:
        view.set_protected([("tcp", 22), ("udp", 51820)])
        assert g.maps.protected() == [("tcp", 22), ("udp", 51820)]
        assert g.test_run(SYN22).retval == XdpAction.DROP
        assert view.counters()["tcp_dropped_new"] == 1
        view.allow("::ffff:10.3.3.3", time.monotonic_ns() + 10**9, "tcp", 22)
        assert g.test_run(SYN22).retval == XdpAction.PASS
        (entry,) = view.allowed()
        assert (str(entry.ip), entry.proto, entry.port) == ("10.3.3.3", "tcp", 22)
        view.replay_remember(bytes(range(16)), 10)
        view.replay_remember(bytes(range(1, 17)), 20)
        assert view.replay_prune(15) == 1
        assert g.maps.replay_entries() == {bytes(range(1, 17)): 20}


def test_missing_pin_dir_is_one_line_error(pin_dir):
    with pytest.raises(SpagateError, match="no spagate map pinned"):
        GateMaps.from_pin_dir(pin_dir)


def test_capacity_change_migrates_entries(pin_dir):
    until = time.monotonic_ns() + 60 * 10**9
    with load(TEST_OPTIONS, pin_dir) as g:
        g.maps.set_protected([("tcp", 22)])
        g.maps.allow("10.3.3.3", until)
    bigger = replace(TEST_OPTIONS, allow_capacity=TEST_OPTIONS.allow_capacity * 2)
    with load(bigger, pin_dir) as g:
        assert g.pin_actions["allow"] == "migrated"
        assert [e.expires_ns for e in g.maps.allowed()] == [until]
        assert g.test_run(SYN22).retval == XdpAction.PASS


def test_layout_change_replaces_map(pin_dir):
    Path(pin_dir).mkdir()
    fd = bpfsys.map_create(MapType.HASH, "allow", 8, 8, 16)  # an old, different layout
    bpfsys.obj_pin(fd, Path(pin_dir) / "allow")
    os.close(fd)
    with load(TEST_OPTIONS, pin_dir) as g:
        assert g.pin_actions["allow"] == "replaced"
        assert g.maps.allowed() == []


def test_spa_seen_is_sized_by_its_option_and_pinned(pin_dir):
    # Pinned: the worker marks a refused copy's real source in it, and a restart keeps the
    # packets seen before it duplicates.
    with load(replace(TEST_OPTIONS, spa_seen_capacity=4096), pin_dir) as g:
        assert bpfsys.map_info(g.maps.fd("spa_seen")).max_entries == 4096
    assert "spa_seen" in os.listdir(pin_dir)
    with pytest.raises(SpagateError, match="spa_seen capacity"):
        load(replace(TEST_OPTIONS, spa_seen_capacity=0), pin_dir)
