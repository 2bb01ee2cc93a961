"""The intake (core decisions) carried out by the service's Admission: verified packets open
the map, nonces persist first, pruning is incremental."""

import os
from ipaddress import ip_address

from spagate.gate.core.config import parse_config
from spagate.gate.core.eventlog import EventLog
from spagate.gate.kernel.ringbuf import SpaRecord
from spagate.gate.service.admission import Admission
from spagate.gate.service.hooks import Hooks
from spagate.protocol import KeyPair, Message, encode

KEYS = KeyPair(b"\x11" * 32, b"\x22" * 32)
CONF = parse_config(f"key = {'11' * 32}\nhmac-key = {'22' * 32}\nprotected = tcp/22, udp/53\n")


class Maps:
    """Records calls in order, as the worker's GateMaps would receive them (open_windows is
    GateMaps' extend-only batch write: a knock never shortens a longer window)."""

    def __init__(self, replay=None):
        self.calls, self.replay = [], dict(replay or {})

    def open_windows(self, windows):
        for ip, until_ns, proto, port in windows:
            self.calls.append(("allow", str(ip), until_ns, proto, port))
        return len(windows)

    def replay_remember_many(self, items):
        for nonce, until_ms in items:
            self.calls.append(("remember", nonce))
            self.replay[nonce] = until_ms

    def replay_entries(self):
        return dict(self.replay)

    def replay_forget_many(self, nonces):
        for nonce in nonces:
            self.calls.append(("forget", nonce))
        return sum(self.replay.pop(n, None) is not None for n in nonces)


def make(maps, now_ms):
    lines = []
    log = EventLog(lambda lvl, line: lines.append(line), lambda: 0.0)
    clock = {"ms": now_ms}
    intake = Admission(
        CONF, maps, log, Hooks(None, None, log),
        wall_ms=lambda: clock["ms"], mono_ns=lambda: 5_000_000_000,
    )  # fmt: skip
    return intake, clock, lines


def record(ts_ms, ip="203.0.113.7", src="198.51.100.9"):
    msg = Message(ts_ms=ts_ms, nonce=os.urandom(16), ip=ip_address(ip))
    payload = encode(KEYS, msg, os.urandom(16))
    return SpaRecord(payload, ip_address(src), ip_address("192.0.2.1"), 4000, 8484, 2, 96), msg


def test_accepted_packet_persists_its_nonce_before_opening():
    maps = Maps()
    intake, _, lines = make(maps, 1_000_000)
    rec, msg = record(1_000_000)
    assert intake.handle(rec)
    assert maps.calls == [
        ("remember", msg.nonce),
        ("allow", "203.0.113.7", 5_000_000_000 + 15 * 10**9, None, 0),
    ]
    assert "accept 203.0.113.7 identity=default ports=all window=15s" in lines[0]
    assert "third-party" in lines[0]
    assert not intake.handle(rec)  # the same packet again
    assert intake.counts == {"accepted": 1, "replay": 1}


def test_prune_forgets_exactly_the_expired_nonces():
    maps = Maps()
    intake, clock, _ = make(maps, 1_000_000)
    for i in range(10):
        clock["ms"] = 1_000_000 + i
        assert intake.handle(record(clock["ms"])[0])
    clock["ms"] = 1_000_000 + 5000 + 4  # the first five nonces' windows are over
    assert intake.prune() == 5
    assert intake.prune() == 0
    assert len(maps.replay) == 5


def test_restore_refuses_replays_of_packets_accepted_before_a_restart():
    maps = Maps()
    first, _, _ = make(maps, 1_000_000)
    rec, _ = record(1_000_000)
    assert first.handle(rec)
    again, _, _ = make(maps, 1_001_000)
    assert again.restore() == 1
    assert not again.handle(rec)
    assert again.counts == {"replay": 1}


def test_refusals_after_the_mac_name_the_identity_and_are_tallied():
    maps = Maps()
    intake, _, lines = make(maps, 1_000_000)
    stale, _ = record(1_000_000 - 60_000)
    assert not intake.handle(stale)
    assert lines[-1] == (
        "refuse stale from 198.51.100.9:4000 via 2 identity=default: "
        "sent 60000 ms ago, window is 5000 ms"
    )
    rec, _ = record(1_000_000)
    assert intake.handle(rec._replace(ts_ns=4_999_000_000))
    latencies = []
    intake.on_latency = latencies.append
    assert intake.handle(record(1_000_000)[0]._replace(ts_ns=4_999_000_000, tagged=True))
    assert latencies == [1_000_000]  # the clock says 5 s: 1 ms from the ring to the window
    assert intake.intake.tally == {
        ("stale", "default", ""): 1,
        ("accepted", "default", "untagged"): 1,
        ("accepted", "default", "tagged"): 1,
    }
    kinds = [ev.event for _, ev in intake.recent]
    assert kinds == ["refuse", "accept", "accept"]
