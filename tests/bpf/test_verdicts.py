"""Verdict matrix: crafted packets x map states through BPF_PROG_TEST_RUN.

Each case asserts the XDP action and that exactly one counter moved, by one: its reason.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field

import pytest
from conftest import spa_payload

from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import FLOW_KEY, U64, XdpAction
from spagate.lab.packets import (
    ACK,
    AH,
    DSTOPTS,
    ESP,
    ETH_8021AD,
    ETH_8021Q,
    ETH_ARP,
    ETH_IP,
    ETH_IP6,
    FIN,
    FRAGMENT,
    GRE,
    HOPOPTS,
    ICMP,
    ICMP6,
    NONEXT,
    PSH,
    ROUTING,
    RST,
    SYN,
    TCP,
    UDP,
    UDPLITE,
    chain6,
    eth,
    ext,
    frag6,
    ipv4,
    ipv6,
    tcp,
    udp,
)
from spagate.lab.util import run_counted
from spagate.net import addr16
from spagate.protocol import generate_keypair

S4, D4 = "10.1.2.3", "10.9.9.9"
S6, D6 = "2001:db8::1", "2001:db8:ffff::2"
MAPPED_S4 = "::ffff:10.1.2.3"
SEC = 1_000_000_000
VALID = spa_payload()  # MACed with the fresh gate's key (the kernel does not check replays)


def _now():
    return time.monotonic_ns()


# Map states: each a function of GateMaps.
def allow_any(m, ip=S4):
    m.allow(ip, _now() + 10 * SEC)


def allow6(m):
    allow_any(m, S6)


def allow_port(m):
    m.allow(S4, _now() + 10 * SEC, "tcp", 22)


def allow_proto(m):
    m.allow(S4, _now() + 10 * SEC, "tcp", 0)


def allow_other_port(m):
    m.allow(S4, _now() + 10 * SEC, "tcp", 443)


def allow_udp_only(m):
    m.allow(S4, _now() + 10 * SEC, "udp", 0)


def allow_udp_port(m):
    m.allow(S4, _now() + 10 * SEC, "udp", 51820)


def allow_mapped(m):
    m.allow(MAPPED_S4, _now() + 10 * SEC)


def expired(m):
    m.allow(S4, _now() - SEC)
    m.allow(S4, _now() - SEC, "tcp", 22)
    m.allow(S4, _now() - SEC, "udp", 0)


def static(m):
    m.set_static(["10.1.0.0/16", "2001:db8::/64"])


def static_host(m):
    m.set_static(["10.1.2.3/32"])


def static_other(m):
    m.set_static(["192.0.2.0/24", "2001:db8:1::/48"])


def _flow(m, age_ns, ip=S4, sport=40000, dport=51820):
    key = FLOW_KEY.pack(addr16(ip), sport, dport)
    bpfsys.update(m.fd("udp_flows"), key, U64.pack(_now() - age_ns))


def flow_live(m):
    _flow(m, SEC)


def flow_idle(m):
    _flow(m, 200 * SEC)


@dataclass
class Case:
    id: str
    packet: bytes
    action: int
    reason: str
    state: tuple = field(default=())


P, D = XdpAction.PASS, XdpAction.DROP


def syn4(dport=22, src=S4, flags=SYN, **ip):
    return eth(ipv4(src, D4, TCP, tcp(40000, dport, flags), **ip))


def syn6(dport=22, src=S6, flags=SYN, exts=()):
    return eth(ipv6(src, D6, TCP, tcp(40000, dport, flags), exts), ETH_IP6)


def udp4(dport=51820, payload=b"x" * 32, sport=40000, src=S4, **kw):
    return eth(ipv4(src, D4, UDP, udp(sport, dport, payload, **kw)))


def udp6(dport=51820, payload=b"x" * 32, src=S6):
    return eth(ipv6(src, D6, UDP, udp(40000, dport, payload)), ETH_IP6)


TCP_SYN = tcp(40000, 22, SYN)
OPTS_NOP = b"\x01\x01\x01\x00"  # three NOPs and End of options

CASES = [
    # --- unrelated traffic on every path --------------------------------------------------
    Case("arp", eth(bytes(28), ETH_ARP), P, "pass_not_ip"),
    Case("icmp4", eth(ipv4(S4, D4, ICMP, bytes(8))), P, "pass_unrelated"),
    Case("icmp6", eth(ipv6(S6, D6, ICMP6, bytes(8)), ETH_IP6), P, "pass_unrelated"),
    Case("gre4", eth(ipv4(S4, D4, GRE, bytes(8))), P, "pass_unrelated"),
    Case("esp6", eth(ipv6(S6, D6, ESP, bytes(16)), ETH_IP6), P, "pass_unrelated"),
    Case("nonext6", eth(ipv6(S6, D6, NONEXT, b""), ETH_IP6), P, "pass_unrelated"),
    Case("tcp4-port80-syn", syn4(80), P, "pass_unrelated"),
    Case("tcp6-port80-ack", syn6(80, flags=ACK), P, "pass_unrelated"),
    Case("udp4-port5353", udp4(5353), P, "pass_unrelated"),
    Case("udp6-port8485", udp6(8485), P, "pass_unrelated"),
    Case("tcp-to-spa-port", syn4(8484), P, "pass_unrelated"),
    Case("tcp-to-udp-protected-port", syn4(51820), P, "pass_unrelated"),
    Case("udp-to-tcp-protected-port", udp4(22), P, "pass_unrelated"),
    Case(
        "vlan-unrelated",
        eth(ipv4(S4, D4, TCP, tcp(1, 80, SYN)), vlans=(ETH_8021Q,)),
        P,
        "pass_unrelated",
    ),
    Case("qinq-arp", eth(bytes(28), ETH_ARP, (ETH_8021AD, ETH_8021Q)), P, "pass_not_ip"),
    # --- headers cut short at each boundary / lying lengths --------------------------------
    Case("eth-only-arp-type", eth(b"", ETH_ARP), P, "pass_not_ip"),
    Case("eth-only-ip-type", eth(b""), D, "malformed"),
    Case("vlan-tag-cut", eth(b"", ETH_IP, (ETH_8021Q,))[:16], P, "pass_not_ip"),
    Case(
        "triple-vlan",
        eth(ipv4(S4, D4, TCP, TCP_SYN), vlans=(ETH_8021AD, ETH_8021Q, ETH_8021Q)),
        D,
        "malformed",
    ),
    Case("ipv4-cut-19", eth(ipv4(S4, D4, TCP, b""))[: 14 + 19], D, "malformed"),
    Case(
        "ipv4-options-cut",
        eth(ipv4(S4, D4, TCP, b"", options=OPTS_NOP * 2))[: 14 + 24],
        D,
        "malformed",
    ),
    Case("ipv4-ihl-4", eth(ipv4(S4, D4, TCP, TCP_SYN, ihl=4)), D, "malformed"),
    Case("ipv4-totlen-too-big", eth(ipv4(S4, D4, TCP, TCP_SYN, tot_len=100)), D, "malformed"),
    Case("ipv4-totlen-below-ihl", eth(ipv4(S4, D4, TCP, TCP_SYN, tot_len=16)), D, "malformed"),
    Case("tcp-cut-3", eth(ipv4(S4, D4, TCP, TCP_SYN[:3])), D, "malformed"),
    Case("tcp-cut-10-protected", eth(ipv4(S4, D4, TCP, TCP_SYN[:10])), D, "malformed"),
    Case("tcp-cut-10-unrelated", eth(ipv4(S4, D4, TCP, tcp(1, 80, SYN)[:10])), P, "pass_unrelated"),
    Case("tcp-cut-19-allowed", eth(ipv4(S4, D4, TCP, TCP_SYN[:19])), D, "malformed", (allow_any,)),
    Case(
        "tcp-doff-4",
        eth(ipv4(S4, D4, TCP, tcp(40000, 22, SYN, doff=4))),
        D,
        "malformed",
        (allow_any,),
    ),
    Case(
        "tcp-doff-past-end",
        eth(ipv4(S4, D4, TCP, tcp(40000, 22, SYN, doff=5)[:20].replace(b"\x50", b"\xf0", 1))),
        D,
        "malformed",
        (allow_any,),
    ),
    Case("udp-cut-6", eth(ipv4(S4, D4, UDP, udp(40000, 51820)[:6])), D, "malformed"),
    Case("udp-len-too-big", udp4(length=200), D, "malformed", (allow_any,)),
    Case("udp-len-below-8", udp4(length=4), D, "malformed", (allow_any,)),
    Case("spa-len-lies", udp4(8484, b"y" * 96, length=300), D, "malformed"),
    Case("ipv6-cut-39", eth(ipv6(S6, D6, TCP, b""), ETH_IP6)[: 14 + 39], D, "malformed"),
    Case(
        "ipv6-paylen-too-big",
        eth(ipv6(S6, D6, TCP, TCP_SYN, payload_len=300), ETH_IP6),
        D,
        "malformed",
    ),
    Case(
        "ipv6-ext-cut",
        eth(ipv6(S6, D6, TCP, b"", ((HOPOPTS, ext(TCP, HOPOPTS)[:4]),)), ETH_IP6),
        D,
        "malformed",
    ),
    Case(
        "ipv6-ext-len-past-end",
        eth(ipv6(S6, D6, TCP, TCP_SYN, ((HOPOPTS, bytes([TCP, 10]) + bytes(6)),)), ETH_IP6),
        D,
        "malformed",
    ),
    # IPv6 chains: walked up to SG_IPV6_EXT_MAX (24) headers; only a longer one is dropped
    Case("ipv6-chain-7-protected", syn6(exts=chain6([DSTOPTS] * 7, TCP)), D, "tcp_dropped_new"),
    Case("ipv6-chain-16-protected", syn6(exts=chain6([DSTOPTS] * 16, TCP)), D, "tcp_dropped_new"),
    Case(
        "ipv6-chain-16-allowed",
        syn6(exts=chain6([HOPOPTS] + [DSTOPTS] * 14 + [ROUTING], TCP)),
        P,
        "protected_allowed",
        (allow6,),
    ),
    Case("ipv6-chain-7-unrelated", syn6(80, exts=chain6([DSTOPTS] * 7, TCP)), P, "pass_unrelated"),
    Case(
        "ipv6-chain-16-unrelated", syn6(80, exts=chain6([DSTOPTS] * 16, TCP)), P, "pass_unrelated"
    ),
    Case(
        "ipv6-chain-24-unrelated", syn6(80, exts=chain6([DSTOPTS] * 24, TCP)), P, "pass_unrelated"
    ),
    Case(
        "ipv6-chain-25-unwalked",
        syn6(80, exts=chain6([DSTOPTS] * 25, TCP)),
        D,
        "ipv6_chain_unwalked",
    ),
    Case(
        "ipv6-chain-16-udp-unrelated",
        eth(ipv6(S6, D6, UDP, udp(1, 5353, b"x"), chain6([DSTOPTS] * 16, UDP)), ETH_IP6),
        P,
        "pass_unrelated",
    ),
    Case("ipv6-tcp-cut-10", eth(ipv6(S6, D6, TCP, TCP_SYN[:10]), ETH_IP6), D, "malformed"),
    # --- encapsulations and extension headers -------------------------------------------
    Case("ipv4-options-syn", syn4(options=OPTS_NOP * 3), D, "tcp_dropped_new"),
    Case(
        "ipv4-options-syn-allowed",
        syn4(options=OPTS_NOP * 10),
        P,
        "protected_allowed",
        (allow_any,),
    ),
    Case("ipv6-hbh-allowed", syn6(exts=chain6([HOPOPTS], TCP)), P, "protected_allowed", (allow6,)),
    Case("ipv6-routing", syn6(exts=chain6([ROUTING], TCP)), D, "tcp_dropped_new"),
    Case(
        "ipv6-dstopts-allowed", syn6(exts=chain6([DSTOPTS], TCP)), P, "protected_allowed", (allow6,)
    ),
    Case("ipv6-atomic-fragment", syn6(exts=chain6([FRAGMENT], TCP)), D, "tcp_dropped_new"),
    Case("ipv6-ah-allowed", syn6(exts=chain6([AH], TCP)), P, "protected_allowed", (allow6,)),
    Case(
        "ipv6-chain-allowed",
        syn6(exts=chain6([HOPOPTS, DSTOPTS, ROUTING, FRAGMENT, DSTOPTS], TCP)),
        P,
        "protected_allowed",
        (allow6,),
    ),
    Case(
        "ipv6-chain-dropped",
        syn6(exts=chain6([HOPOPTS, DSTOPTS, ROUTING, FRAGMENT, DSTOPTS], TCP)),
        D,
        "tcp_dropped_new",
    ),
    Case(
        "ipv6-chain-6-unrelated",
        eth(ipv6(S6, D6, TCP, tcp(1, 80, SYN), chain6([DSTOPTS] * 6, TCP)), ETH_IP6),
        P,
        "pass_unrelated",
    ),
    Case("vlan-syn", eth(ipv4(S4, D4, TCP, TCP_SYN), vlans=(ETH_8021Q,)), D, "tcp_dropped_new"),
    Case(
        "vlan-syn-allowed",
        eth(ipv4(S4, D4, TCP, TCP_SYN), vlans=(ETH_8021Q,)),
        P,
        "protected_allowed",
        (allow_any,),
    ),
    Case(
        "qinq-syn",
        eth(ipv4(S4, D4, TCP, TCP_SYN), vlans=(ETH_8021AD, ETH_8021Q)),
        D,
        "tcp_dropped_new",
    ),
    Case(
        "qinq-syn6-allowed",
        eth(ipv6(S6, D6, TCP, TCP_SYN), ETH_IP6, (ETH_8021AD, ETH_8021Q)),
        P,
        "protected_allowed",
        (allow6,),
    ),
    # --- fragments -------------------------------------------------------------------------
    Case("frag4-first-syn", syn4(mf=True), D, "tcp_dropped_new"),
    Case("frag4-first-syn-allowed", syn4(mf=True), P, "protected_allowed", (allow_any,)),
    Case(
        "frag4-middle",
        eth(ipv4(S4, D4, TCP, bytes(64), frag_offset=64, mf=True)),
        P,
        "fragment_passed",
    ),
    Case("frag4-last", eth(ipv4(S4, D4, TCP, bytes(64), frag_offset=128)), P, "fragment_passed"),
    Case(
        "frag4-last-udp-spa-source",
        eth(ipv4(S4, D4, UDP, bytes(64), frag_offset=8)),
        P,
        "fragment_passed",
    ),
    Case(
        "frag4-first-tcp-12-bytes",
        eth(ipv4(S4, D4, TCP, TCP_SYN[:12], mf=True)),
        D,
        "fragment_dropped",
        (allow_any,),
    ),
    Case(
        "frag4-first-3-bytes", eth(ipv4(S4, D4, TCP, TCP_SYN[:3], mf=True)), D, "fragment_dropped"
    ),
    Case(
        "frag4-first-spa",
        eth(ipv4(S4, D4, UDP, udp(40000, 8484, bytes(96), length=1400), mf=True)),
        D,
        "fragment_dropped",
    ),
    Case(
        "frag4-first-udp-allowed",
        eth(ipv4(S4, D4, UDP, udp(40000, 51820, bytes(64), length=1400), mf=True)),
        P,
        "protected_allowed",
        (allow_any,),
    ),
    Case(
        "frag6-middle",
        eth(ipv6(S6, D6, TCP, bytes(64), ((FRAGMENT, frag6(TCP, 64, True)),)), ETH_IP6),
        P,
        "fragment_passed",
    ),
    Case(
        "frag6-first-short",
        eth(ipv6(S6, D6, TCP, TCP_SYN[:8], ((FRAGMENT, frag6(TCP, 0, True)),)), ETH_IP6),
        D,
        "fragment_dropped",
    ),
    Case("frag6-first-syn", syn6(exts=((FRAGMENT, frag6(TCP, 0, True)),)), D, "tcp_dropped_new"),
    Case(
        "frag6-first-udp-allowed",
        eth(
            ipv6(
                S6,
                D6,
                UDP,
                udp(40000, 51820, bytes(64), length=1400),
                ((FRAGMENT, frag6(UDP, 0, True)),),
            ),
            ETH_IP6,
        ),
        P,
        "protected_allowed",
        (allow6,),
    ),
    # --- TCP flags x sources on a protected port -----------------------------------------
    Case("syn-none", syn4(), D, "tcp_dropped_new"),
    Case("syn-allow-any", syn4(), P, "protected_allowed", (allow_any,)),
    Case("syn-allow-port", syn4(), P, "protected_allowed", (allow_port,)),
    Case("syn-allow-proto", syn4(), P, "protected_allowed", (allow_proto,)),
    Case("syn-allow-other-port", syn4(), D, "tcp_dropped_new", (allow_other_port,)),
    Case("syn-allow-udp-only", syn4(), D, "tcp_dropped_new", (allow_udp_only,)),
    Case("syn-allow-other-source", syn4(src="10.1.2.4"), D, "tcp_dropped_new", (allow_any,)),
    Case("syn-expired", syn4(), D, "tcp_dropped_new", (expired,)),
    Case("syn-expired-but-static", syn4(), P, "protected_static", (expired, static)),
    Case("syn-static", syn4(), P, "protected_static", (static,)),
    Case("syn-static-host", syn4(), P, "protected_static", (static_host,)),
    Case("syn-static-other", syn4(), D, "tcp_dropped_new", (static_other,)),
    Case("syn-443-allow-port-22", syn4(443), D, "tcp_dropped_new", (allow_port,)),
    Case("syn-443-allow-other-port", syn4(443), P, "protected_allowed", (allow_other_port,)),
    Case("synack-none", syn4(flags=SYN | ACK), D, "tcp_dropped_stray"),
    Case("synack-allowed", syn4(flags=SYN | ACK), P, "protected_allowed", (allow_any,)),
    Case("ack-none", syn4(flags=ACK), D, "tcp_dropped_stray"),
    Case("ack-expired", syn4(flags=ACK), D, "tcp_dropped_stray", (expired,)),
    Case("ack-allowed", syn4(flags=ACK | PSH), P, "protected_allowed", (allow_port,)),
    Case("ack-static", syn4(flags=ACK), P, "protected_static", (static,)),
    Case("rst-none", syn4(flags=RST), D, "tcp_dropped_stray"),
    Case("rst-allowed", syn4(flags=RST), P, "protected_allowed", (allow_any,)),
    Case("fin-none", syn4(flags=FIN | ACK), D, "tcp_dropped_stray"),
    Case("null-scan", syn4(flags=0), D, "tcp_dropped_stray"),
    Case("xmas-scan", syn4(flags=FIN | PSH | 0x20), D, "tcp_dropped_stray"),
    Case("syn6-none", syn6(), D, "tcp_dropped_new"),
    Case("syn6-allowed", syn6(), P, "protected_allowed", (allow6,)),
    Case("syn6-static", syn6(), P, "protected_static", (static,)),
    Case("ack6-none", syn6(flags=ACK), D, "tcp_dropped_stray"),
    # --- IPv4-mapped addresses ---------------------------------------------------------------
    Case("mapped-allow-v4-packet", syn4(), P, "protected_allowed", (allow_mapped,)),
    Case("v6-packet-mapped-src", syn6(src=MAPPED_S4), D, "tcp_dropped_new", (allow_any,)),
    Case("v6-packet-mapped-src-static", syn6(src=MAPPED_S4), D, "tcp_dropped_new", (static_host,)),
    Case("udp6-mapped-src", udp6(src=MAPPED_S4), D, "udp_dropped", (allow_any,)),
    # --- UDP protected ports -------------------------------------------------------------
    Case("udp-none", udp4(), D, "udp_dropped"),
    Case("udp-allow-any", udp4(), P, "protected_allowed", (allow_any,)),
    Case("udp-allow-port", udp4(), P, "protected_allowed", (allow_udp_port,)),
    Case("udp-allow-tcp-only", udp4(), D, "udp_dropped", (allow_proto,)),
    Case("udp-53-allow-51820", udp4(53), D, "udp_dropped", (allow_udp_port,)),
    Case("udp-flow-live", udp4(), P, "udp_flow", (flow_live,)),
    Case("udp-flow-live-expired-window", udp4(), P, "udp_flow", (flow_live, expired)),
    Case("udp-flow-idle", udp4(), D, "udp_dropped", (flow_idle,)),
    Case("udp-flow-idle-allowed", udp4(), P, "protected_allowed", (flow_idle, allow_any)),
    Case("udp-flow-other-sport", udp4(sport=40001), D, "udp_dropped", (flow_live,)),
    Case("udp-static", udp4(), P, "protected_static", (static,)),
    Case("udp6-allowed", udp6(), P, "protected_allowed", (allow6,)),
    Case("udp6-none", udp6(), D, "udp_dropped"),
    # --- UDP-Lite: held to the protected UDP port's rules ------------------------------------
    Case(
        "udplite-protected",
        eth(ipv4(S4, D4, UDPLITE, udp(1, 51820, b"x" * 8, 0))),
        D,
        "udp_dropped",
    ),  # fmt: skip
    Case(
        "udplite-allowed",
        eth(ipv4(S4, D4, UDPLITE, udp(1, 51820, b"x" * 8, 12))),
        P,
        "protected_allowed",
        (allow_any,),
    ),  # fmt: skip
    Case(
        "udplite6-protected",
        eth(ipv6(S6, D6, UDPLITE, udp(1, 51820, b"x" * 8, 8)), ETH_IP6),
        D,
        "udp_dropped",
    ),  # fmt: skip
    Case(
        "udplite-coverage-lies",
        eth(ipv4(S4, D4, UDPLITE, udp(1, 51820, b"x", 40))),
        D,
        "malformed",
        (allow_any,),
    ),  # fmt: skip
    Case(
        "udplite-unrelated", eth(ipv4(S4, D4, UDPLITE, udp(1, 5353, b"x", 0))), P, "pass_unrelated"
    ),  # fmt: skip
    Case(
        "udplite-spa-port", eth(ipv4(S4, D4, UDPLITE, udp(1, 8484, VALID, 0))), P, "pass_unrelated"
    ),  # fmt: skip
    # --- SPA port (record contents, buckets, budget in test_spa) ----------------------------
    Case("spa4", udp4(8484, VALID), D, "spa_queued"),
    Case("spa6", udp6(8484, VALID), D, "spa_queued"),
    Case("spa-from-allowed", udp4(8484, VALID), D, "spa_queued", (allow_any,)),
    Case(
        "spa-vlan",
        eth(ipv4(S4, D4, UDP, udp(1, 8484, VALID)), vlans=(ETH_8021Q,)),
        D,
        "spa_queued",
    ),
    Case("spa4-zeros", udp4(8484, bytes(96)), D, "spa_bad_mac"),
    Case("spa6-junk", udp6(8484, os.urandom(96)), D, "spa_bad_mac"),
    Case("spa-mac-flipped", udp4(8484, bytes([VALID[0] ^ 1]) + VALID[1:]), D, "spa_bad_mac"),
    Case("spa-body-flipped", udp4(8484, VALID[:95] + bytes([VALID[95] ^ 1])), D, "spa_bad_mac"),
    Case("spa-other-key", udp4(8484, spa_payload(generate_keypair())), D, "spa_bad_mac"),
    Case("spa-empty", udp4(8484, b""), D, "spa_bad_size"),
    Case("spa-95", udp4(8484, VALID[:95]), D, "spa_bad_size"),
    Case("spa-97", udp4(8484, VALID + b"\0"), D, "spa_bad_size"),
    Case("spa-1400", udp4(8484, VALID * 14 + bytes(56)), D, "spa_bad_size"),
    Case("spa6-97", udp6(8484, VALID + b"\0"), D, "spa_bad_size"),
]

assert len({c.id for c in CASES}) == len(CASES)


def run_case(gate, packet):
    return run_counted(gate, packet)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verdict(fresh, case):
    for state in case.state:
        state(fresh.maps)
    res, moved = run_case(fresh, case.packet)
    assert moved == {case.reason: 1}
    assert res.retval == case.action
    if case.action == XdpAction.PASS:
        assert res.data_out == case.packet  # passed untouched


def test_matrix_size():
    assert len(CASES) >= 60


def test_udp_flow_created_then_survives_window(fresh):
    m = fresh.maps
    m.allow(S4, time.monotonic_ns() + 10 * SEC, "udp", 51820)
    assert fresh.test_run(udp4()).retval == XdpAction.PASS
    flows = m.udp_flows()
    assert [(str(f.ip), f.sport, f.dport) for f in flows] == [(S4, 40000, 51820)]
    assert flows[0].idle_s < 1
    assert m.revoke(S4, "udp", 51820)
    res, moved = run_case(fresh, udp4())  # window closed, flow still live
    assert (res.retval, moved) == (XdpAction.PASS, {"udp_flow": 1})
    res, moved = run_case(fresh, udp4(sport=40001))  # a new flow is not
    assert (res.retval, moved) == (XdpAction.DROP, {"udp_dropped": 1})
    assert m.revoke_ip(S4) == (0, 1)  # the window was closed already: the flow
    res, moved = run_case(fresh, udp4())
    assert (res.retval, moved) == (XdpAction.DROP, {"udp_dropped": 1})


def test_udp_flow_refresh_moves_last_seen(fresh):
    flow_idle(fresh.maps)
    fresh.maps.allow(S4, time.monotonic_ns() + 10 * SEC)
    assert fresh.test_run(udp4()).retval == XdpAction.PASS
    (flow,) = fresh.maps.udp_flows()
    assert flow.idle_s < 1  # recreated with a fresh timestamp
    _flow(fresh.maps, 100 * SEC)  # old but within the 120 s idle timeout
    assert fresh.test_run(udp4()).retval == XdpAction.PASS
    (flow,) = fresh.maps.udp_flows()
    assert flow.idle_s < 1


def test_protected_changes_at_run_time(fresh):
    assert fresh.test_run(syn4(2222)).retval == XdpAction.PASS
    fresh.maps.set_protected([("tcp", 2222)])
    assert fresh.maps.protected() == [("tcp", 2222)]
    assert fresh.test_run(syn4(2222)).retval == XdpAction.DROP
    assert fresh.test_run(syn4(22)).retval == XdpAction.PASS


def test_ipv6_packet_struct_sanity():
    pkt = syn6()
    assert struct.unpack_from("!H", pkt, 12)[0] == ETH_IP6
    assert len(eth(b"")) == 14 and struct.unpack_from("!H", eth(b""), 12)[0] == ETH_IP
