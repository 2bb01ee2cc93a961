"""fwknop verifier: the 120 s window, the replay cache (bounded, restorable, checked before any
decryption), check/consume for callers with a policy, candidates."""

from __future__ import annotations

import os

import pytest
from fwknop_helpers import T0, new_key

from spagate.protocol import Reason, Rejected
from spagate.protocol.fwknop import (
    FwknopAccepted,
    FwknopVerifier,
    access_request,
    encode,
    replay_key,
)
from spagate.protocol.fwknop import verifier as verifier_module

KEY = new_key()
NOW = T0 * 1000


def packet(ts: int = T0, key=KEY, **kw) -> bytes:
    msg = access_request("10.1.2.3", [("tcp", 22)], "bob", ts, **kw)
    return encode(key, msg, os.urandom(8))


@pytest.mark.parametrize(
    "offset, why",
    [(0, None), (-120, None), (120, None), (-121, Reason.STALE), (121, Reason.FUTURE)],
)
def test_default_window_is_fwknopd_s_120_s(offset, why):
    r = FwknopVerifier([KEY]).verify(packet(T0 + offset), NOW)
    if why is None:
        assert isinstance(r, FwknopAccepted) and r.message.timestamp == T0 + offset
        assert r.replay_until_ms == (T0 + offset) * 1000 + 120_000
    else:
        assert isinstance(r, Rejected) and r.reason is why and "120000 ms" in r.detail


def test_window_is_configurable():
    v = FwknopVerifier([KEY], max_age_ms=10_000)
    assert v.verify(packet(T0 - 11), NOW).reason is Reason.STALE
    assert isinstance(v.verify(packet(T0 - 10), NOW), FwknopAccepted)
    with pytest.raises(ValueError):
        FwknopVerifier([KEY], max_age_ms=-1)
    with pytest.raises(ValueError):
        FwknopVerifier([])


def test_accepted_names_what_the_daemon_needs():
    other = new_key("sha512")
    p = packet(client_timeout=45)
    r = FwknopVerifier([other, KEY]).verify(p, NOW)
    assert isinstance(r, FwknopAccepted)
    assert r.key_index == 1 and r.replay_key == replay_key(p) and len(r.replay_key) == 16
    m = r.message
    assert (str(m.ip), [str(x) for x in m.ports], m.client_timeout, m.user, int(m.message_type))\
        == ("10.1.2.3", ["tcp/22"], 45, "bob", 3)  # fmt: skip


def test_replay_is_refused_until_the_packet_is_stale():
    v = FwknopVerifier([KEY])
    p = packet()
    assert isinstance(v.verify(p, NOW), FwknopAccepted)
    for now in (NOW, NOW + 60_000, NOW + 120_000):
        assert v.verify(p, now).reason is Reason.REPLAY
    assert v.verify(p, NOW + 120_001).reason is Reason.STALE


def test_replays_are_never_decrypted(monkeypatch):
    opened = []
    real = verifier_module.open_message

    def spy(key, body):
        opened.append(body)
        return real(key, body)

    monkeypatch.setattr(verifier_module, "open_message", spy)
    v = FwknopVerifier([KEY])
    p = packet()
    v.verify(p, NOW)
    for _ in range(5):
        assert v.verify(p, NOW).reason is Reason.REPLAY
    assert len(opened) == 1
    v.verify(os.urandom(200), NOW)  # junk: no key authenticates it
    assert len(opened) == 1


def test_replay_after_restart():
    first = FwknopVerifier([KEY])
    p = packet()
    acc = first.verify(p, NOW)
    second = FwknopVerifier([KEY])
    assert second.remember(acc.replay_key, acc.replay_until_ms)
    assert second.verify(p, NOW + 5_000).reason is Reason.REPLAY
    with pytest.raises(ValueError):
        second.remember(b"short", 1)


def test_check_does_not_consume():
    v = FwknopVerifier([KEY])
    p = packet()
    a = v.check(p, NOW)
    b = v.check(p, NOW)
    assert isinstance(a, FwknopAccepted) and a == b and len(v.replay) == 0
    assert v.consume(a, NOW) is a
    assert v.consume(b, NOW).reason is Reason.REPLAY
    assert v.check(p, NOW).reason is Reason.REPLAY


def test_full_cache_fails_closed_and_never_evicts_a_live_entry():
    v = FwknopVerifier([KEY], replay_capacity=2)
    p1, p2, p3 = packet(), packet(), packet()
    assert isinstance(v.verify(p1, NOW), FwknopAccepted)
    assert isinstance(v.verify(p2, NOW), FwknopAccepted)
    assert v.verify(p3, NOW).reason is Reason.REPLAY_FULL
    assert v.verify(p1, NOW).reason is Reason.REPLAY
    # once the first two are stale, room comes back
    assert isinstance(v.verify(packet(T0 + 200), NOW + 200_000), FwknopAccepted)


def test_candidates_and_sources():
    other = new_key()
    v = FwknopVerifier([other, KEY])
    assert v.verify(packet(), NOW, candidates=[0]).reason is Reason.MAC
    assert v.verify(packet(), NOW, candidates=()).reason is Reason.UNKNOWN_SOURCE
    assert len(v.replay) == 0
    assert v.verify(packet(), NOW, candidates=[1]).key_index == 1


def test_refusals_leave_the_cache_alone():
    v = FwknopVerifier([KEY])
    for p in (packet(T0 - 500), packet(T0 + 500), os.urandom(300), b"x"):
        assert isinstance(v.verify(p, NOW), Rejected)
    assert len(v.replay) == 0
