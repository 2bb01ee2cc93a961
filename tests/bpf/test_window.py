"""Time and sockets: a window closes with no userspace action; established sessions pass."""

from __future__ import annotations

import socket
import time

import pytest

from spagate.gate.kernel.abi import XdpAction
from spagate.lab.packets import ACK, ETH_IP6, PSH, SYN, TCP, eth, ipv4, ipv6, tcp
from spagate.lab.util import run_counted


def counters_moved(gate, packet):
    res, moved = run_counted(gate, packet)
    return res.retval, moved


def test_window_closes_on_time(fresh):
    syn = eth(ipv4("10.7.7.7", "10.0.0.1", TCP, tcp(40000, 22, SYN)))
    fresh.maps.allow("10.7.7.7", time.monotonic_ns() + 300_000_000)
    assert counters_moved(fresh, syn) == (XdpAction.PASS, {"protected_allowed": 1})
    (entry,) = fresh.maps.allowed()
    assert 0 < entry.remaining_s <= 0.3
    time.sleep(0.35)  # > 0.3 s plus a coarse clock tick
    assert counters_moved(fresh, syn) == (XdpAction.DROP, {"tcp_dropped_new": 1})
    assert fresh.maps.allowed() == []
    assert len(fresh.maps.allowed(include_expired=True)) == 1


@pytest.fixture
def loopback_session(request):
    """A real TCP connection on loopback: (family, client addr, server addr)."""
    family, host = request.param
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(4)
    cli = socket.create_connection(srv.getsockname()[:2])
    conn, _ = srv.accept()
    try:
        yield family, cli.getsockname()[:2], srv.getsockname()[:2]
    finally:
        for s in (cli, conn, srv):
            s.close()


def _segment(family, src, dst, flags):
    seg = tcp(src[1], dst[1], flags)
    if family == socket.AF_INET:
        return eth(ipv4(src[0], dst[0], TCP, seg))
    return eth(ipv6(src[0], dst[0], TCP, seg), ETH_IP6)


@pytest.mark.parametrize(
    "loopback_session",
    [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")],
    indirect=True,
    ids=["v4", "v6"],
)
def test_established_by_socket_lookup(fresh, loopback_session):
    family, client, server = loopback_session
    fresh.maps.set_protected([("tcp", server[1])])
    # The client's segments find the server's established socket (current netns).
    ack = _segment(family, client, server, ACK | PSH)
    assert counters_moved(fresh, ack) == (XdpAction.PASS, {"tcp_established": 1})
    # Same server port, a source port without a connection: only the listener matches.
    stray = _segment(family, (client[0], client[1] ^ 1), server, ACK)
    assert counters_moved(fresh, stray) == (XdpAction.DROP, {"tcp_dropped_stray": 1})
    # A SYN never rides on the socket lookup, even toward a listening port.
    syn = _segment(family, (client[0], client[1] ^ 1), server, SYN)
    assert counters_moved(fresh, syn) == (XdpAction.DROP, {"tcp_dropped_new": 1})


def test_established_survives_window_close(fresh):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    fresh.maps.set_protected([("tcp", port)])
    fresh.maps.allow("127.0.0.1", time.monotonic_ns() + 10**9)
    syn = _segment(socket.AF_INET, ("127.0.0.1", 45555), ("127.0.0.1", port), SYN)
    assert counters_moved(fresh, syn) == (XdpAction.PASS, {"protected_allowed": 1})
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    try:
        assert fresh.maps.revoke("127.0.0.1")
        me = cli.getsockname()
        ack = _segment(socket.AF_INET, me, ("127.0.0.1", port), ACK)
        assert counters_moved(fresh, ack) == (XdpAction.PASS, {"tcp_established": 1})
        assert counters_moved(fresh, syn)[0] == XdpAction.DROP
    finally:
        for s in (cli, conn, srv):
            s.close()
