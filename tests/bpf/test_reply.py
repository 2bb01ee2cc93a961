"""The closed disguise through BPF_PROG_TEST_RUN: the gate's own answers, field by field.

A gate compiled with disguise closed turns each dropped packet into the reply Linux sends for a
port nobody listens on (bpf/reply.h, xdp_reply in gate.c): the frame that comes back (XDP_TX)
is dissected and checked against the kernel's rules (tcp_v4_send_reset, icmp_send, ...). The
e2e test (tests/e2e/test_disguise.py) compares with the kernel's own replies on the wire.
"""

from __future__ import annotations

import os
import struct

import pytest
from conftest import PROTECTED, SPA_KEYS, pin_dir_for_test

from spagate.gate.kernel.abi import ReplyParams, XdpAction
from spagate.gate.kernel.build import GateOptions, load
from spagate.gate.kernel.pins import unpin
from spagate.lab.packets import (
    ACK,
    DST_MAC,
    DSTOPTS,
    ETH_8021AD,
    ETH_8021Q,
    ETH_IP6,
    FIN,
    ICMP,
    ICMP6,
    PSH,
    RST,
    SRC_MAC,
    SYN,
    TCP,
    UDP,
    UDPLITE,
    chain6,
    checksum,
    dissect,
    eth,
    ipv4,
    ipv6,
    tcp,
    udp,
)
from spagate.lab.util import run_counted

S4, D4 = "10.1.2.3", "10.9.9.9"
S6, D6 = "2001:db8::1", "2001:db8:ffff::2"
REPLY = ReplyParams(ttl=61, hop_limit=59, icmp_ratelimit_ns=10**9, icmp6_ratelimit_ns=10**9)
P, D, TX = XdpAction.PASS, XdpAction.DROP, XdpAction.TX


@pytest.fixture(scope="module")
def closed():
    pin_dir = pin_dir_for_test()
    g = load(GateOptions(spa_burst=3, ringbuf_pages=1, disguise="closed", reply=REPLY), pin_dir)
    g.on_spa(lambda rec: None)
    try:
        yield g
    finally:
        g.close()
        unpin(pin_dir)


@pytest.fixture
def gate(closed):
    closed.poll(0)
    closed.maps.clear()
    closed.forget_seen()
    closed.forget_icmp()
    closed.maps.set_protected(PROTECTED)
    closed.maps.set_spa_keys([SPA_KEYS.hmac_key])
    return closed


def v4(l4proto, l4, tos=0, src=S4, **kw):
    pkt = bytearray(ipv4(src, D4, l4proto, l4, l4_checksum=True, **kw))
    pkt[1] = tos
    pkt[10:12] = b"\0\0"
    pkt[10:12] = struct.pack("!H", checksum(bytes(pkt[: (pkt[0] & 15) * 4])))
    return bytes(pkt)


def v6(l4proto, l4, exts=(), src=S6, dst=D6):
    return ipv6(src, dst, l4proto, l4, exts, l4_checksum=True)


def run(gate, frame):
    res, moved = run_counted(gate, frame)
    return res, moved, (dissect(res.data_out) if res.retval == TX else None)


def check_eth(r, vlans=()):
    assert r["dst_mac"] == SRC_MAC and r["src_mac"] == DST_MAC  # swapped
    assert [t for t, _ in r["vlans"]] == list(vlans)


# --- TCP: the RST of tcp_v4_send_reset / tcp_v6_send_reset --------------------------------------


def test_syn_gets_rst_ack(gate):
    frame = eth(v4(TCP, tcp(40000, 22, SYN, seq=1000), tos=0x2B, df=True))
    res, moved, r = run(gate, frame)
    assert (res.retval, moved) == (TX, {"tcp_dropped_new": 1, "reply_rst": 1})
    check_eth(r)
    assert (r["version"], r["ihl"], r["tot_len"], r["ttl"], r["proto"]) == (4, 20, 40, 61, TCP)
    assert r["tos"] == 0x28  # the segment's TOS without its ECN bits
    assert (r["frag"], r["ip_id"]) == (0x4000, 0)  # DF, IP ID 0 (ip_select_ident with DF)
    assert (str(r["src"]), str(r["dst"])) == (D4, S4)
    assert (r["sport"], r["dport"], r["seq"], r["ack"]) == (22, 40000, 0, 1001)
    assert (r["flags"], r["window"], r["doff"], r["urg"], r["options"]) == (RST | ACK, 0, 5, 0, b"")
    assert r["ip_csum_ok"] and r["l4_csum_ok"]
    assert len(res.data_out) <= len(frame)  # never larger than what came in


def test_ack_gets_rst_with_its_ack_number(gate):
    frame = eth(v4(TCP, tcp(40000, 22, ACK, seq=5, ack=0xDEADBEEF)))
    res, moved, r = run(gate, frame)
    assert (res.retval, moved) == (TX, {"tcp_dropped_stray": 1, "reply_rst": 1})
    assert (r["seq"], r["ack"], r["flags"]) == (0xDEADBEEF, 0, RST)
    assert r["l4_csum_ok"]


@pytest.mark.parametrize("flags, extra", [(FIN, 1), (FIN | PSH | 0x20, 1), (0, 0), (PSH, 0)])
def test_scan_flags_get_rst_ack_covering_the_segment(gate, flags, extra):
    frame = eth(v4(TCP, tcp(40000, 22, flags, seq=0xFFFFFFF0, payload=b"abcdefgh" * 4)))
    res, moved, r = run(gate, frame)
    assert res.retval == TX and moved["reply_rst"] == 1
    assert (r["seq"], r["flags"]) == (0, RST | ACK)
    assert r["ack"] == (0xFFFFFFF0 + 32 + extra) & 0xFFFFFFFF  # wraps like the kernel's
    assert r["tot_len"] == 40 and r["l4_csum_ok"]


def test_rst_is_never_answered(gate):
    res, moved, _ = run(gate, eth(v4(TCP, tcp(40000, 22, RST | ACK, ack=9))))
    assert (res.retval, moved) == (D, {"tcp_dropped_stray": 1, "reply_skipped": 1})


def test_bad_tcp_checksum_is_not_answered(gate):
    frame = bytearray(eth(v4(TCP, tcp(40000, 22, SYN))))
    frame[14 + 20 + 16] ^= 0xFF  # the TCP checksum: Linux drops such a segment silently
    res, moved, _ = run(gate, bytes(frame))
    assert (res.retval, moved) == (D, {"tcp_dropped_new": 1, "reply_skipped": 1})


def test_syn6_through_a_chain_gets_rst(gate):
    frame = eth(v6(TCP, tcp(40000, 22, SYN, seq=7), chain6([DSTOPTS] * 7, TCP)), ETH_IP6)
    frame = frame[:15] + bytes([frame[15] | 0xB0]) + frame[16:]  # traffic class 0x0b.
    res, moved, r = run(gate, frame)
    assert (res.retval, moved) == (TX, {"tcp_dropped_new": 1, "reply_rst": 1})
    check_eth(r)
    assert (r["version"], r["payload_len"], r["hop_limit"], r["proto"]) == (6, 20, 59, TCP)
    assert (str(r["src"]), str(r["dst"])) == (D6, S6)
    assert r["flow_label"] != 0  # an auto flow label, as the kernel's
    assert (r["seq"], r["ack"], r["flags"], r["window"]) == (0, 8, RST | ACK, 0)
    assert r["l4_csum_ok"]
    again = run(gate, frame)[2]
    assert again["flow_label"] == r["flow_label"]  # stable per flow


def test_vlan_tags_stay(gate):
    for vlans in ((ETH_8021Q,), (ETH_8021AD, ETH_8021Q)):
        frame = eth(v4(TCP, tcp(40000, 22, SYN)), vlans=vlans)
        res, _, r = run(gate, frame)
        assert res.retval == TX
        check_eth(r, vlans)
        assert [v for _, v in r["vlans"]] == [100 + i for i in range(len(vlans))]
        assert r["tot_len"] == 40 and r["l4_csum_ok"]


def test_no_reply_where_linux_sends_none(gate):
    cases = {
        "multicast dst MAC": eth(v4(TCP, tcp(1, 22, SYN)), dst_mac=b"\x01\x00\x5e\0\0\1"),
        "broadcast source": eth(v4(TCP, tcp(1, 22, SYN), src="255.255.255.255")),
        "first fragment": eth(v4(TCP, tcp(1, 22, SYN), mf=True)),
        "IPv4 options": eth(v4(TCP, tcp(1, 22, SYN), options=b"\x07\x07\x04\x00\0\0\0\0")),
        "IPv6 multicast source": eth(v6(TCP, tcp(1, 22, SYN), src="ff02::1"), ETH_IP6),
    }
    for what, frame in cases.items():
        res, moved, _ = run(gate, frame)
        assert res.retval == D and moved.get("reply_skipped") == 1, what


# --- UDP: ICMP / ICMPv6 port unreachable ---------------------------------------------------------


def test_udp_gets_port_unreachable_quoting_the_datagram(gate):
    dgram = v4(UDP, udp(40000, 51820, b"hello"), tos=0x2B)
    res, moved, r = run(gate, eth(dgram))
    assert (res.retval, moved) == (TX, {"udp_dropped": 1, "reply_icmp": 1})
    check_eth(r)
    assert (r["proto"], r["icmp_type"], r["icmp_code"], r["icmp_rest"]) == (ICMP, 3, 3, bytes(4))
    assert r["tos"] == 0xC0 | (0x2B & 0x1E)  # precedence internetwork control + TOS bits
    assert (r["frag"], r["ttl"], r["tot_len"]) == (0, 61, 28 + len(dgram))  # no DF
    assert r["quote"] == dgram  # the whole datagram, as it came
    assert r["ip_csum_ok"] and r["l4_csum_ok"]


def test_long_udp_quotes_548_bytes(gate):
    dgram = v4(UDP, udp(40000, 51820, os.urandom(1400)))
    res, _, r = run(gate, eth(dgram))
    assert res.retval == TX
    assert r["tot_len"] == 576 and r["quote"] == dgram[:548] and r["l4_csum_ok"]


def test_udp6_gets_icmp6_port_unreachable(gate):
    for size, quoted in ((5, None), (1400, 1232)):
        dgram = v6(UDP, udp(40000, 51820, os.urandom(size)), chain6([DSTOPTS] * 3, UDP))
        res, moved, r = run(gate, eth(dgram, ETH_IP6))
        assert (res.retval, moved) == (TX, {"udp_dropped": 1, "reply_icmp": 1})
        assert (r["proto"], r["icmp_type"], r["icmp_code"], r["hop_limit"]) == (ICMP6, 1, 4, 59)
        assert (r["tclass"], r["flow_label"] != 0) == (0, True)
        assert r["quote"] == dgram[:quoted] and r["payload_len"] == 8 + len(r["quote"])
        assert r["l4_csum_ok"]
        gate.forget_icmp()


def test_spa_port_answers_like_a_closed_port(gate):
    for payload, reason in ((os.urandom(96), "spa_bad_mac"), (b"x" * 10, "spa_bad_size")):
        res, moved, r = run(gate, eth(v4(UDP, udp(40000, 8484, payload))))
        assert (res.retval, moved) == (TX, {reason: 1, "reply_icmp": 1})
        assert r["quote"][20:24] == struct.pack("!HH", 40000, 8484)


def test_udp_checksum_rules(gate):
    bad = bytearray(eth(v4(UDP, udp(1, 51820, b"abc"))))
    bad[14 + 20 + 6] ^= 0xFF
    res, moved, _ = run(gate, bytes(bad))
    assert (res.retval, moved) == (D, {"udp_dropped": 1, "reply_skipped": 1})
    none = eth(ipv4(S4, D4, UDP, udp(1, 51820, b"abc")))  # IPv4 UDP may carry no checksum
    assert run(gate, none)[0].retval == TX


def test_udplite_gets_port_unreachable(gate):
    res, moved, r = run(gate, eth(ipv4(S4, D4, UDPLITE, udp(1, 51820, b"x" * 8, 0))))
    assert (res.retval, moved) == (TX, {"udp_dropped": 1, "reply_icmp": 1})


def test_icmp_rate_limit_per_destination_and_global(gate):
    """inet_peer_xrlim_allow: a burst of 6 per destination, then one per ratelimit (1 s here);
    icmp_global_allow: about icmp_msgs_burst (50) in a burst across destinations."""
    frame = eth(v4(UDP, udp(1, 51820, b"x")))
    got = [run(gate, frame)[1] for _ in range(8)]
    assert [m.get("reply_icmp", 0) for m in got] == [1] * 6 + [0, 0]
    assert all(m.get("reply_ratelimited", 0) == 1 for m in got[6:])
    other = eth(v4(UDP, udp(1, 51820, b"x"), src="10.1.2.4"))
    assert run(gate, other)[1].get("reply_icmp") == 1  # another destination has its own
    gate.forget_icmp()
    sent = 0
    for i in range(300):
        src = f"10.2.{i // 200}.{i % 200 + 1}"
        sent += run(gate, eth(v4(UDP, udp(1, 51820, b"x"), src=src)))[1].get("reply_icmp", 0)
    assert 20 <= sent < 300  # the global credit ran out (random 0-2 per message, refills)


def test_replies_never_exceed_the_kernels_sizes(gate):
    """RST: never larger than the segment; ICMP: the request + 28 (IPv4) / 48 (IPv6) bytes,
    capped at 576 / 1280 bytes of IP: what Linux sends for an unused port."""
    for n in (0, 1, 100, 1400):
        frame = eth(v4(TCP, tcp(1, 22, SYN, payload=bytes(n))))
        assert len(run(gate, frame)[0].data_out) <= len(frame)
        gate.forget_icmp()
        frame = eth(v4(UDP, udp(1, 51820, bytes(n))))
        out = run(gate, frame)[0].data_out
        assert len(out) - 14 == min(len(frame) - 14 + 28, 576)
