"""Verifier: time window, replay cache across the window edge, bound, fail-closed, restore."""

from __future__ import annotations

import os
from ipaddress import IPv4Address

import pytest

from spagate.protocol import Accepted, Message, Reason, Rejected, Verifier, encode, generate_keypair

T0 = 1_700_000_000_000
KP = generate_keypair()


def packet(ts: int, nonce: bytes | None = None, kp=KP) -> bytes:
    m = Message(ts, nonce or os.urandom(16), IPv4Address("192.0.2.9"))
    return encode(kp, m, os.urandom(16))


@pytest.mark.parametrize(
    "offset, reason",
    [(-5000, None), (-5001, Reason.STALE), (5000, None), (5001, Reason.FUTURE), (0, None)],
)
def test_window_edges(offset, reason):
    r = Verifier([KP]).verify(packet(T0 + offset), T0)
    if reason is None:
        assert isinstance(r, Accepted) and r.message.ts_ms == T0 + offset
    else:
        assert isinstance(r, Rejected) and r.reason is reason and "5000 ms" in r.detail


def test_configurable_skew():
    v = Verifier([KP], max_skew_ms=100)
    assert v.verify(packet(T0 - 101), T0).reason is Reason.STALE
    assert v.verify(packet(T0 + 101), T0).reason is Reason.FUTURE
    ok = v.verify(packet(T0 + 100), T0)
    assert isinstance(ok, Accepted) and ok.replay_until_ms == T0 + 200


def test_decode_rejections_pass_through():
    v = Verifier([KP])
    assert v.verify(b"x", T0).reason is Reason.SIZE
    assert v.verify(packet(T0, kp=generate_keypair()), T0).reason is Reason.MAC
    assert len(v.replay) == 0


def test_replay_across_the_window_edge():
    v = Verifier([KP])
    p = packet(T0)
    ok = v.verify(p, T0)
    assert isinstance(ok, Accepted) and ok.replay_until_ms == T0 + 5000
    for now in (T0, T0 + 1, T0 + 4999, T0 + 5000):
        r = v.verify(p, now)
        assert r.reason is Reason.REPLAY, now
    assert len(v.replay) == 1
    # one ms later the packet itself is stale, so the nonce is no longer needed
    assert v.verify(p, T0 + 5001).reason is Reason.STALE
    v.verify(packet(T0 + 5001), T0 + 5001)  # any later accept expires old entries
    assert len(v.replay) == 1 and ok.message.nonce not in v.replay


def test_future_packet_remembered_until_its_own_window_ends():
    v = Verifier([KP])
    p = packet(T0 + 4000)
    assert v.verify(p, T0).replay_until_ms == T0 + 9000
    assert v.verify(p, T0 + 9000).reason is Reason.REPLAY
    assert v.verify(p, T0 + 9001).reason is Reason.STALE


def test_rotation_index_in_accepted():
    ring = [generate_keypair() for _ in range(3)]
    v = Verifier(ring)
    assert v.verify(packet(T0, kp=ring[2]), T0).key_index == 2
    assert v.verify(packet(T0, kp=ring[1]), T0).key_index == 1
    assert v.verify(packet(T0, kp=ring[0]), T0).key_index == 0


def test_same_nonce_replayed_under_another_key_still_replay():
    a, b = generate_keypair(), generate_keypair()
    v = Verifier([a, b])
    nonce = os.urandom(16)
    assert isinstance(v.verify(packet(T0, nonce, a), T0), Accepted)
    assert v.verify(packet(T0 + 1, nonce, b), T0 + 1).reason is Reason.REPLAY


def test_cache_bounded_by_rate_times_window():
    # one packet every 2 ms for 30 s with a 1 s window: never more than ~1000 live nonces
    skew = 1000
    v = Verifier([KP], max_skew_ms=skew, replay_capacity=100_000)
    peak = 0
    for i in range(15_000):
        now = T0 + 2 * i
        assert isinstance(v.verify(packet(now - 300), now), Accepted)
        peak = max(peak, len(v.replay))
    assert peak <= skew // 2 + 200
    assert len(v.replay._wheel) <= peak + 200  # a step (250 ms) of nonces more at most


def test_fail_closed_when_full_of_live_nonces():
    v = Verifier([KP], replay_capacity=3)
    accepted = [packet(T0 + i) for i in range(3)]
    for p in accepted:
        assert isinstance(v.verify(p, T0), Accepted)
    r = v.verify(packet(T0), T0 + 10)
    assert r.reason is Reason.REPLAY_FULL and "3" in r.detail
    # nothing live was evicted: every accepted packet is still a replay
    for p in accepted:
        assert v.verify(p, T0 + 10).reason is Reason.REPLAY
    assert len(v.replay) == 3
    # once the first nonce's window has passed there is room again
    assert isinstance(v.verify(packet(T0 + 5001), T0 + 5001), Accepted)
    assert v.verify(packet(T0 + 5001), T0 + 5001).reason is Reason.REPLAY_FULL


def test_remember_restores_nonces():
    v = Verifier([KP], replay_capacity=2)
    nonce = os.urandom(16)
    assert v.remember(nonce, T0 + 5000)
    assert v.remember(nonce, T0 + 100)  # an earlier until does not shorten it
    assert v.verify(packet(T0 + 4000, nonce), T0 + 4500).reason is Reason.REPLAY
    assert v.remember(os.urandom(16), T0 + 10)
    assert not v.remember(os.urandom(16), T0 + 10)  # full
    assert len(v.replay) == 2
    r = v.verify(packet(T0 + 5001), T0 + 5001)  # both restored nonces expired
    assert isinstance(r, Accepted) and len(v.replay) == 1


def test_remember_longer_until_supersedes():
    v = Verifier([KP])
    nonce = os.urandom(16)
    v.remember(nonce, T0 + 10)
    v.remember(nonce, T0 + 3000)
    v.replay.expire(T0 + 11)
    assert nonce in v.replay and v.replay.until(nonce) == T0 + 3000
    for i in range(500):  # repeated extensions do not grow the heap without bound
        v.remember(nonce, T0 + 3001 + i)
    assert len(v.replay._wheel) < 100


def test_constructor_validates():
    with pytest.raises(ValueError):
        Verifier([])
    with pytest.raises(ValueError):
        Verifier([KP], replay_capacity=0)
    with pytest.raises(ValueError):
        Verifier([KP], max_skew_ms=-1)
