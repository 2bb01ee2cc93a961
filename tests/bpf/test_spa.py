"""SPA port, untagged path (deployed sparoid clients): the per-source bucket and the untagged
budget, the MAC of every key in the kernel (tail-called xdp_spa_verify), the identity's budget,
spa_seen, then the ring record (byte for byte). The tagged path: test_admission.py."""

from __future__ import annotations

import mmap
import os
import time
from ipaddress import IPv4Address, IPv6Address

import pytest
from conftest import SPA_KEYS, TEST_OPTIONS, spa_payload

from spagate.errors import SpagateError
from spagate.gate.kernel.abi import SPA_EVENT_HEADER, SPA_PACKET_SIZE, XdpAction
from spagate.lab.packets import ETH_IP6, UDP, eth, ipv4, ipv6, udp
from spagate.lab.util import run_counted
from spagate.protocol import decode, generate_keypair


def spa4(payload: bytes, src="198.51.100.7", sport=50123) -> bytes:
    return eth(ipv4(src, "203.0.113.1", UDP, udp(sport, 8484, payload)))


def spoofed(i: int) -> str:
    return f"100.{64 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def run(gate, packet, ifindex=0):
    res, moved = run_counted(gate, packet, ifindex)
    assert res.retval == XdpAction.DROP
    return moved


def test_record_v4_byte_for_byte(fresh):
    payload = spa_payload()
    before = time.monotonic_ns()
    assert run(fresh, spa4(payload), ifindex=1) == {"spa_queued": 1}
    after = time.monotonic_ns()
    assert fresh.poll(100) == 1
    (rec,) = fresh.records
    assert rec.payload == payload
    assert rec.length == 96
    assert rec.key_index == 0
    assert rec.src == IPv4Address("198.51.100.7")
    assert rec.dst == IPv4Address("203.0.113.1")
    assert (rec.sport, rec.dport, rec.ifindex) == (50123, 8484, 1)
    assert before <= rec.ts_ns <= after  # CLOCK_MONOTONIC, as time.monotonic_ns()
    assert decode(rec.payload, [SPA_KEYS]).key_index == 0  # userspace agrees


def test_record_v6_with_extension_header(fresh):
    from spagate.lab.packets import DSTOPTS, chain6

    payload = spa_payload()
    pkt = eth(
        ipv6("2001:db8::77", "2001:db8::1", UDP, udp(999, 8484, payload), chain6([DSTOPTS], UDP)),
        ETH_IP6,
    )
    assert run(fresh, pkt) == {"spa_queued": 1}
    fresh.poll(100)
    (rec,) = fresh.records
    assert rec.payload == payload
    assert (rec.src, rec.dst) == (IPv6Address("2001:db8::77"), IPv6Address("2001:db8::1"))
    assert (rec.sport, rec.dport) == (999, 8484)


def test_junk_is_dropped_in_the_kernel(fresh):
    valid = spa_payload()
    for i, junk in enumerate(
        (bytes(96), os.urandom(96), valid[:40] + bytes([valid[40] ^ 0x10]) + valid[41:])
    ):
        assert run(fresh, spa4(junk, src=spoofed(i))) == {"spa_bad_mac": 1}
    assert fresh.poll(100) == 0


def test_wrong_sizes_are_dropped_before_the_mac(fresh):
    valid = spa_payload()
    for i, payload in enumerate((b"", b"x", valid[:95], valid + b"\0", valid * 2, bytes(1472))):
        assert run(fresh, spa4(payload, src=spoofed(i))) == {"spa_bad_size": 1}, len(payload)
    assert fresh.poll(100) == 0


def test_key_ring_slot_two_of_three(fresh):
    ring = [generate_keypair() for _ in range(3)]
    fresh.maps.set_spa_keys([k.hmac_key for k in ring])
    assert fresh.maps.spa_key_count() == 3
    packet = spa_payload(ring[2])
    assert run(fresh, spa4(packet)) == {"spa_queued": 1}
    assert run(fresh, spa4(spa_payload(SPA_KEYS), src="192.0.2.9")) == {"spa_bad_mac": 1}
    fresh.poll(100)
    (rec,) = fresh.records
    assert (rec.payload, rec.key_index) == (packet, 2)
    # Rotated out: slot 2 is no longer counted (and zeroed).
    fresh.maps.set_spa_keys([ring[0].hmac_key, ring[1].hmac_key])
    assert run(fresh, spa4(spa_payload(ring[2]), src="192.0.2.10")) == {"spa_bad_mac": 1}
    assert run(fresh, spa4(spa_payload(ring[1]), src="192.0.2.10")) == {"spa_queued": 1}


def test_no_keys_queues_nothing(fresh):
    fresh.maps.set_spa_keys([])
    assert fresh.maps.spa_key_count() == 0
    assert run(fresh, spa4(spa_payload())) == {"spa_bad_mac": 1}


def test_set_spa_keys_refuses_too_many(fresh):
    with pytest.raises(SpagateError, match="at most 8"):
        fresh.maps.set_spa_keys([os.urandom(32) for _ in range(9)])
    with pytest.raises(SpagateError, match="32 bytes"):
        fresh.maps.set_spa_keys([b"short"])
    assert fresh.maps.spa_key_count() == 1  # unchanged
    assert run(fresh, spa4(spa_payload())) == {"spa_queued": 1}


def test_eight_keys_last_slot(fresh):
    ring = [generate_keypair() for _ in range(8)]
    fresh.maps.set_spa_keys([k.hmac_key for k in ring])
    assert run(fresh, spa4(spa_payload(ring[7]))) == {"spa_queued": 1}
    fresh.poll(100)
    assert [r.key_index for r in fresh.records] == [7]


def test_per_source_bucket_comes_before_the_untagged_hmac(fresh):
    burst = TEST_OPTIONS.spa_burst
    for _ in range(burst):  # junk spends the source's tokens...
        assert run(fresh, spa4(os.urandom(96))) == {"spa_bad_mac": 1}
    # ...so an untagged packet from it is now over its bucket (no hashing for it either)...
    assert run(fresh, spa4(spa_payload())) == {"spa_rate_source": 1}
    # ...but a tagged one is judged by its tag, never by the bucket.
    tagged = spa_payload(tagged=True)
    assert run(fresh, spa4(tagged)) == {"spa_queued": 1}
    # Another source still gets through untagged.
    b = spa_payload()
    assert run(fresh, spa4(b, src="198.51.100.8")) == {"spa_queued": 1}
    fresh.poll(100)
    assert [r.payload for r in fresh.records] == [tagged, b]


def test_per_source_bucket_refills(fresh):
    for _ in range(TEST_OPTIONS.spa_burst):
        assert run(fresh, spa4(spa_payload())) == {"spa_queued": 1}
        fresh.poll(0)
    assert run(fresh, spa4(spa_payload())) == {"spa_rate_source": 1}
    time.sleep(1.1)  # one token per second
    assert run(fresh, spa4(spa_payload())) == {"spa_queued": 1}
    assert run(fresh, spa4(spa_payload())) == {"spa_rate_source": 1}


def test_global_budget_counts_only_mac_valid_packets(fresh):
    budget = TEST_OPTIONS.spa_budget_per_s
    # A junk flood from spoofed sources, several budgets' worth: none of it spends the budget.
    for i in range(3 * budget):
        assert run(fresh, spa4(os.urandom(96), src=spoofed(i))) == {"spa_bad_mac": 1}
    valid = spa_payload()
    assert run(fresh, spa4(valid, src="192.0.2.200")) == {"spa_queued": 1}
    fresh.poll(100)
    assert [r.payload for r in fresh.records] == [valid]


def test_identity_budget_stops_distinct_mac_valid_packets(fresh):
    budget = TEST_OPTIONS.spa_budget_per_s
    queued = 0
    for i in range(budget):
        queued += run(fresh, spa4(spa_payload(), src=spoofed(i))).get("spa_queued", 0)
        fresh.poll(0)
    assert queued == budget
    for i in range(5):
        assert run(fresh, spa4(spa_payload(), src=f"100.127.0.{i + 1}")) == {"spa_rate_identity": 1}
    # Junk is still told apart (MAC first), not counted as over budget.
    assert run(fresh, spa4(bytes(96), src="100.127.1.1")) == {"spa_bad_mac": 1}
    fresh.poll(0)
    assert len(fresh.records) == budget


def test_replay_flood_does_not_spend_the_budget(fresh):
    budget = TEST_OPTIONS.spa_budget_per_s
    replay = spa_payload()  # one captured packet replayed from spoofed sources
    assert run(fresh, spa4(replay, src=spoofed(0))) == {"spa_queued": 1}
    for i in range(1, 3 * budget):
        assert run(fresh, spa4(replay, src=spoofed(i))) == {"spa_replay_dup": 1}
    # Also from IPv6 and from the original source: the MAC is the key, not the sender.
    assert run(fresh, spa6(replay, "2001:db8:9::1")) == {"spa_replay_dup": 1}
    assert run(fresh, spa4(replay)) == {"spa_replay_dup": 1}
    # The budget is untouched: a fresh knock from another source is queued, in the same second.
    knock = spa_payload()
    assert run(fresh, spa4(knock, src="192.0.2.200")) == {"spa_queued": 1}
    assert run(fresh, spa4(knock, src="192.0.2.201")) == {"spa_replay_dup": 1}
    fresh.poll(100)
    assert [r.payload for r in fresh.records] == [replay, knock]


def test_variants_of_a_seen_packet_cost_no_hmac(fresh):
    # Junk carrying a seen packet's MAC bytes never reaches userspace: it is that packet's
    # duplicate (spa_seen is looked up before any HMAC); one with the MAC's first half only
    # is known junk (the entry holds the whole right MAC). Neither is hashed.
    valid = spa_payload()
    assert run(fresh, spa4(valid)) == {"spa_queued": 1}
    forged = valid[:32] + os.urandom(64)
    assert run(fresh, spa4(forged, src="192.0.2.9")) == {"spa_replay_dup": 1}
    half = valid[:16] + os.urandom(80)
    assert run(fresh, spa4(half, src="192.0.2.9")) == {"spa_bad_mac": 1}
    assert fresh.poll(100) == 1


def test_over_budget_packet_is_not_remembered(fresh):
    # A packet that never reached userspace (over its identity's budget) may come again, e.g.
    # resent; it is then known (spa_seen) and costs one HMAC, not one per key.
    budget = TEST_OPTIONS.spa_budget_per_s
    for i in range(budget):
        assert run(fresh, spa4(spa_payload(), src=spoofed(i))) == {"spa_queued": 1}
        fresh.poll(0)
    late = spa_payload()
    assert run(fresh, spa4(late, src="192.0.2.77")) == {"spa_rate_identity": 1}
    assert run(fresh, spa4(late, src="192.0.2.77")) == {"spa_rate_identity": 1}
    time.sleep(1.1)  # next budget window
    assert run(fresh, spa4(late, src="192.0.2.78")) == {"spa_queued": 1}
    assert run(fresh, spa4(late, src="192.0.2.79")) == {"spa_replay_dup": 1}


def test_ring_buffer_full(fresh):
    # TEST_OPTIONS: one page. A record is an 8-byte ring header + struct spa_event (56 + 96,
    # already a multiple of 8); nothing polls in between.
    holds = mmap.PAGESIZE // (8 + SPA_EVENT_HEADER.size + SPA_PACKET_SIZE)
    assert holds < TEST_OPTIONS.spa_budget_per_s  # the ring, not the budget, is the limit
    for i in range(holds):
        assert run(fresh, spa4(spa_payload(), src=spoofed(i))) == {"spa_queued": 1}
    lost = spa_payload()
    assert run(fresh, spa4(lost, src="192.0.2.3")) == {"spa_ringbuf_full": 1}
    assert fresh.poll(100) == holds
    # Not remembered as seen: it never reached userspace.
    assert run(fresh, spa4(lost, src="192.0.2.4")) == {"spa_queued": 1}


def test_missing_verifier_program_drops(fresh):
    fresh.set_verifier(False)
    try:
        assert run(fresh, spa4(spa_payload())) == {"spa_tail_call_failed": 1}
    finally:
        fresh.set_verifier(True)
    assert run(fresh, spa4(spa_payload(), src="192.0.2.5")) == {"spa_queued": 1}


def test_ipv4_mapped_ipv6_source_is_malformed(fresh):
    # ::ffff:a.b.c.d as an IPv6 source is never valid on the wire; userspace would take the
    # sender for the IPv4 host. Dropped before the bucket, so that host's tokens stay whole.
    v4 = "198.51.100.7"
    for _ in range(TEST_OPTIONS.spa_burst + 2):
        pkt = eth(ipv6(f"::ffff:{v4}", "2001:db8::1", UDP, udp(999, 8484, spa_payload())), ETH_IP6)
        assert run(fresh, pkt) == {"malformed": 1}
    assert fresh.poll(100) == 0
    for _ in range(TEST_OPTIONS.spa_burst):
        assert run(fresh, spa4(spa_payload(), src=v4)) == {"spa_queued": 1}
    # A native IPv6 source is still queued.
    pkt = eth(ipv6("2001:db8::7", "2001:db8::1", UDP, udp(999, 8484, spa_payload())), ETH_IP6)
    assert run(fresh, pkt) == {"spa_queued": 1}


def spa6(payload: bytes, src: str) -> bytes:
    return eth(ipv6(src, "2001:db8::1", UDP, udp(999, 8484, payload)), ETH_IP6)


def test_ipv6_bucket_is_the_slash_64(fresh):
    # Every address of one /64 shares a bucket: fresh addresses buy no fresh burst.
    burst = TEST_OPTIONS.spa_burst
    for i in range(burst):
        assert run(fresh, spa6(os.urandom(96), f"2001:db8:0:1:{i + 1:x}::{i + 7:x}")) == {
            "spa_bad_mac": 1
        }
    for i in range(5):
        src = f"2001:db8:0:1:{0xFFFF - i:x}:{i:x}:{i:x}:{i + 1:x}"
        assert run(fresh, spa6(spa_payload(), src)) == {"spa_rate_source": 1}
    # The next /64 (and the previous one) have their own buckets.
    assert run(fresh, spa6(spa_payload(), "2001:db8:0:2::1")) == {"spa_queued": 1}
    assert run(fresh, spa6(spa_payload(), "2001:db8:0:0:ffff:ffff:ffff:ffff")) == {"spa_queued": 1}
    # The record keeps the full source address.
    fresh.poll(100)
    assert [r.src for r in fresh.records] == [
        IPv6Address("2001:db8:0:2::1"),
        IPv6Address("2001:db8::ffff:ffff:ffff:ffff"),
    ]


def test_ipv4_bucket_stays_per_address(fresh):
    burst = TEST_OPTIONS.spa_burst
    for _ in range(burst):
        assert run(fresh, spa4(os.urandom(96), src="198.51.100.1")) == {"spa_bad_mac": 1}
    assert run(fresh, spa4(spa_payload(), src="198.51.100.1")) == {"spa_rate_source": 1}
    # Neighbours (same /24, same /64 once mapped) keep their own buckets.
    for last in (0, 2, 255):
        assert run(fresh, spa4(spa_payload(), src=f"198.51.100.{last}")) == {"spa_queued": 1}


def test_ring_reader_takes_at_most_its_limit_in_order(fresh):
    """The worker decides at most BATCH_RECORDS per flush: the ring's reader stops at its limit,
    leaves the rest in the ring, and the next read resumes with the next record."""
    from spagate.gate.kernel.ringbuf import SpaRing

    sources = [f"198.51.100.{i}" for i in range(10, 15)]
    for src in sources:
        assert run(fresh, spa4(spa_payload(), src=src)) == {"spa_queued": 1}
    got = []
    ring = SpaRing(fresh.internal["spa_events"], got.append)
    try:
        assert ring.consume(2) == 2
        assert [str(r.src) for r in got] == sources[:2]
        assert ring.consume(2) == 2
        assert ring.consume(0) == 1  # 0: every record left
        assert ring.consume(2) == 0
    finally:
        ring.close()
    assert [str(r.src) for r in got] == sources
