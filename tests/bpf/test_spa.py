"""SPA port: ring buffer records byte for byte, per-source bucket, global budget, full ring."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from bpf_packets import ETH_IP6, UDP, eth, ipv4, ipv6, udp
from conftest import TEST_OPTIONS

from spagate.gate.bpfsys import XDP_DROP


def spa4(payload: bytes, src="198.51.100.7", sport=50123) -> bytes:
    return eth(ipv4(src, "203.0.113.1", UDP, udp(sport, 8484, payload)))


def run(gate, packet, ifindex=0):
    before = gate.maps.counters()
    assert gate.test_run(packet, ifindex=ifindex).retval == XDP_DROP
    after = gate.maps.counters()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_record_v4_byte_for_byte(fresh):
    payload = bytes((i * 7 + 3) & 0xFF for i in range(96))
    assert run(fresh, spa4(payload), ifindex=1) == {"spa_queued": 1}
    assert fresh.poll(100) == 1
    (rec,) = fresh.records
    assert rec.payload == payload
    assert rec.length == 96
    assert rec.src == IPv4Address("198.51.100.7")
    assert rec.dst == IPv4Address("203.0.113.1")
    assert (rec.sport, rec.dport, rec.ifindex) == (50123, 8484, 1)


def test_record_v6_with_extension_header(fresh):
    from bpf_packets import DSTOPTS, chain6

    payload = bytes(range(200, 256)) + bytes(40)
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


def test_record_sizes_empty_max_and_truncated(fresh):
    for size in (0, 1, 1500, 1600):
        payload = bytes((i * 13) & 0xFF for i in range(size))
        fresh.maps.clear("spa_rate")
        assert run(fresh, spa4(payload)) == {"spa_queued": 1}
        fresh.poll(100)
        (rec,) = fresh.records
        fresh.records.clear()
        assert rec.length == size
        assert rec.payload == payload[: TEST_OPTIONS.spa_copy_max]


def test_per_source_bucket(fresh):
    burst = TEST_OPTIONS.spa_burst
    for _ in range(burst):
        assert run(fresh, spa4(b"a" * 96)) == {"spa_queued": 1}
        fresh.poll(0)
    assert run(fresh, spa4(b"a" * 96)) == {"spa_rate_source": 1}
    assert run(fresh, spa4(b"a" * 96)) == {"spa_rate_source": 1}
    # Another source still gets through; the limited one's records stopped at the burst.
    assert run(fresh, spa4(b"b" * 96, src="198.51.100.8")) == {"spa_queued": 1}
    fresh.poll(100)
    assert [r.payload[:1] for r in fresh.records] == [b"a"] * burst + [b"b"]


def test_per_source_bucket_refills(fresh):
    for _ in range(TEST_OPTIONS.spa_burst):
        run(fresh, spa4(b"a"))
        fresh.poll(0)
    assert run(fresh, spa4(b"a")) == {"spa_rate_source": 1}
    import time

    time.sleep(1.1)  # one token per second
    assert run(fresh, spa4(b"a")) == {"spa_queued": 1}
    assert run(fresh, spa4(b"a")) == {"spa_rate_source": 1}


def test_global_budget_against_spoofed_sources(fresh):
    budget = TEST_OPTIONS.spa_budget_per_s
    queued = 0
    for i in range(budget):
        moved = run(fresh, spa4(bytes(96), src=f"100.64.{i // 250}.{i % 250 + 1}"))
        queued += moved.get("spa_queued", 0)
        fresh.poll(0)
    assert queued == budget
    for i in range(5):
        assert run(fresh, spa4(bytes(96), src=f"100.65.0.{i + 1}")) == {"spa_rate_global": 1}
    fresh.poll(0)
    assert len(fresh.records) == budget


def test_ring_buffer_full(fresh):
    # TEST_OPTIONS: one page holds two 1,500-byte records; nothing polls in between.
    assert run(fresh, spa4(bytes(96), src="192.0.2.1")) == {"spa_queued": 1}
    assert run(fresh, spa4(bytes(96), src="192.0.2.2")) == {"spa_queued": 1}
    assert run(fresh, spa4(bytes(96), src="192.0.2.3")) == {"spa_ringbuf_full": 1}
    assert fresh.poll(100) == 2
    assert run(fresh, spa4(bytes(96), src="192.0.2.4")) == {"spa_queued": 1}
