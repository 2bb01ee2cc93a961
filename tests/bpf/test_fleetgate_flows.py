"""A peer's revocation reaches the XDP program as the local `spagate revoke` does: the allow
entry AND the address's live UDP flows to that port go (a live flow passes before the allow
map is looked at); a grant that simply ended leaves the flows opened in it, as everywhere.
Real compiled gate, real maps, FleetBridge's own drain."""

from __future__ import annotations

import logging
import os
import time
from ipaddress import ip_address

from spagate.gate.core.config import parse_config
from spagate.gate.kernel.abi import XdpAction
from spagate.gate.service.fleetgate import FleetBridge
from spagate.lab.packets import UDP, eth, ipv4, udp
from spagate.lab.util import run_counted as run_case

S4, D4 = "10.1.2.3", "10.9.9.9"
SEC = 1_000_000_000


def udp4(dport: int = 51820, sport: int = 40000) -> bytes:
    return eth(ipv4(S4, D4, UDP, udp(sport, dport, b"x" * 32)))


def _bridge(maps) -> FleetBridge:
    text = (
        f"key = {os.urandom(32).hex()}\nhmac-key = {os.urandom(32).hex()}\n"
        "protected = udp/51820, udp/53\ncluster = etcd://127.0.0.1:1\ncluster-name = lab\n"
        "fleet-member = a\n"
    )
    return FleetBridge(parse_config(text, "/etc/spagate.ini"), maps, None,
                       logging.getLogger("test"), ("eth0",))  # fmt: skip


def test_a_peer_revoke_closes_the_live_udp_flow(fresh):
    m = fresh.maps
    bridge = _bridge(m)
    try:
        until = time.monotonic_ns() + 30 * SEC
        m.allow(S4, until, "udp", 51820)
        m.allow(S4, until, "udp", 53)
        for dport in (51820, 53):
            assert fresh.test_run(udp4(dport=dport)).retval == XdpAction.PASS  # flows made
        assert len(m.udp_flows()) == 2
        # a grant that simply ended (its lease ran out): connections opened in it keep working
        bridge.revoke(ip_address(S4), "udp", 51820, flows=False)
        bridge.drain()
        assert len(m.udp_flows()) == 2
        res, moved = run_case(fresh, udp4())
        assert (res.retval, moved) == (XdpAction.PASS, {"udp_flow": 1})
        # revoked before its end (as FleetSync says of a peer's early delete): the flow goes
        m.allow(S4, until, "udp", 51820)
        bridge.revoke(ip_address(S4), "udp", 51820, flows=True)
        bridge.drain()
        res, moved = run_case(fresh, udp4())
        assert (res.retval, moved) == (XdpAction.DROP, {"udp_dropped": 1})
        # the other port's window and flow are untouched
        assert [(f.dport) for f in m.udp_flows()] == [53]
        res, moved = run_case(fresh, udp4(dport=53))
        assert (res.retval, moved) == (XdpAction.PASS, {"udp_flow": 1})
        # the whole-host grant revoked: every flow of the address goes
        m.allow(S4, until)
        bridge.revoke(ip_address(S4), None, 0, flows=True)
        bridge.drain()
        assert m.udp_flows() == []
    finally:
        bridge.stop()
