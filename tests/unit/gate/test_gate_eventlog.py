"""The gate's log names sources and stays a few lines per interval however hard it is flooded."""

import json
from ipaddress import ip_address

import pytest

from spagate.gate.core.config import Identity
from spagate.gate.core.eventlog import EventLog, TopK
from spagate.gate.core.intake import Refuse
from spagate.gate.core.samples import Sample, to_sample
from spagate.gate.kernel.abi import KernelReason
from spagate.protocol import generate_keypair

ALICE = Identity("alice", generate_keypair())


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make(**kw):
    lines, clock = [], Clock()
    return EventLog(lambda lvl, line: lines.append((lvl, line)), clock, **kw), lines, clock


def junk(reason: str, src: str, sport: int = 4000) -> Sample:
    return Sample(reason, ip_address(src), sport, None)


def test_a_flood_of_junk_writes_one_line_per_reason_and_a_summary_naming_the_sources():
    log, lines, clock = make(interval_s=10)
    for i in range(100_000):
        src = "198.51.100.7" if i % 4 == 0 else f"100.64.{i // 250 % 250}.{i % 250}"
        log.refused(junk("spa_bad_mac" if i % 2 == 0 else "spa_rate_source", src))
    assert [line for _, line in lines] == [
        "refuse spa_bad_mac from 198.51.100.7:4000 via kernel (more of this reason are summed up)",
        "refuse spa_rate_source from 100.64.0.1:4000 via kernel (more of this reason are "
        "summed up)",
    ]
    clock.t += 10
    log.tick()
    assert len(lines) == 3
    summary = lines[-1][1]
    assert summary.startswith("in the last 10s: refused spa_bad_mac=50000 [198.51.100.7 ")
    assert "spa_rate_source=50000 [" in summary and "from others]" in summary
    # The heavy hitter is counted at least as often as it sent (Space-Saving over-counts).
    n = int(summary.split("[198.51.100.7 ")[1].split(",")[0])
    assert 24_999 <= n <= 50_000
    assert log.totals["spa_bad_mac"] == 50_000


def test_every_refusal_of_a_mac_valid_packet_is_a_line_with_source_and_identity():
    log, lines, clock = make(interval_s=10, refuse_burst=5)
    for i in range(8):
        log.refused(Refuse("stale", "sent 60000 ms ago", ip_address("192.0.2.2"), 4000 + i,
                           "eth0", ALICE))  # fmt: skip
    shown = [line for _, line in lines]
    assert len(shown) == 5
    assert shown[0] == (
        "refuse stale from 192.0.2.2:4000 via eth0 identity=alice: sent 60000 ms ago"
    )
    # A kernel drop whose MAC the kernel checked (untagged, over its identity's budget).
    log.refused(Sample("spa_rate_identity", ip_address("2001:db8::2"), 99, "alice", 0, True))
    clock.t += 10
    log.tick()
    assert lines[-1][1] == (
        "in the last 10s: refused spa_rate_identity=1 [2001:db8::2 identity=alice 1] "
        "stale=8 [192.0.2.2 identity=alice 3]"
    )


def test_accept_lines_are_capped_per_interval_and_counted():
    class Accept:
        event, reason = "accept", "accepted"

        def __init__(self, i):
            self.i = i

        def describe(self):
            return f"accept 203.0.113.{self.i}"

        def fields(self):
            return {"ip": f"203.0.113.{self.i}"}

    log, lines, clock = make(interval_s=10, accept_burst=3)
    for i in range(10):
        log.accepted(Accept(i))
    assert [line for _, line in lines] == [f"accept 203.0.113.{i}" for i in range(3)]
    clock.t += 11
    log.accepted(Accept(99))
    assert lines[3][1] == "in the last 11s: 7 accept lines not shown"
    assert lines[4][1] == "accept 203.0.113.99"


def test_a_quiet_interval_writes_no_summary():
    log, lines, clock = make(interval_s=10)
    log.refused(junk("spa_bad_mac", "192.0.2.1"))
    clock.t += 30
    log.tick()
    assert len(lines) == 1


def test_json_lines_carry_the_fields():
    log, lines, clock = make(interval_s=10, fmt="json", wall=lambda: 1_700_000_000.25)
    log.refused(Refuse("future", "sent 60000 ms ahead", ip_address("192.0.2.2"), 4000, "eth0",
                       ALICE))  # fmt: skip
    log.refused(junk("spa_bad_mac", "198.51.100.7"))
    log.refused(junk("spa_bad_mac", "198.51.100.7"))
    log.info("hello")
    clock.t += 10
    log.tick()
    objs = [json.loads(line) for _, line in lines]
    assert objs[0] == {
        "ts": "2023-11-14T22:13:20.250Z", "level": "notice", "event": "refuse",
        "reason": "future", "stage": "verifier", "src": "192.0.2.2", "sport": 4000,
        "via": "eth0", "identity": "alice", "mac_valid": True, "detail": "sent 60000 ms ahead",
        "msg": "refuse future from 192.0.2.2:4000 via eth0 identity=alice: sent 60000 ms ahead",
    }  # fmt: skip
    assert objs[1]["reason"] == "spa_bad_mac" and objs[1]["identity"] is None
    assert objs[2] == {**objs[2], "event": "message", "msg": "hello", "level": "info"}
    assert objs[3]["event"] == "summary"
    assert objs[3]["refused"] == {"spa_bad_mac": {"count": 2, "top": [["198.51.100.7", 1]]}}
    with pytest.raises(ValueError):
        EventLog(print, Clock(), fmt="xml")


def test_topk_keeps_the_heavy_hitters_in_bounded_memory():
    top = TopK(4)
    for i in range(10_000):
        top.add("big" if i % 3 == 0 else f"junk{i}")
    assert len(top.counts) == 4
    assert top.top(1)[0][0] == "big" and top.top(1)[0][1] >= 3334


def test_kernel_samples_are_normalised_from_what_the_reader_yields():
    class Raw:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    names = ("default", "alice")
    mapped = b"\0" * 10 + b"\xff\xff" + bytes([192, 0, 2, 9])
    s = to_sample(Raw(reason=int(KernelReason.SPA_BAD_MAC), src=mapped, sport=7, key=-1,
                      ts=5), names)  # fmt: skip
    assert s == Sample("spa_bad_mac", ip_address("192.0.2.9"), 7, None, 5)
    s = to_sample(Raw(reason="spa_rate_source", src=ip_address("2001:db8::1"), sport=1,
                      identity=1, ts_ns=9), names)  # fmt: skip
    # The kernel's slot for a packet whose MAC it did not check (a tag hint, a copy of a
    # known packet) is a claim anyone who saw a knock can make: never MAC-valid.
    assert s.identity == "alice" and not s.mac_valid and s.stage == "kernel"
    assert "hint=alice" in s.describe() and "identity=" not in s.describe()
    from spagate.gate.kernel.abi import SpaPath

    checked = to_sample(Raw(reason="spa_rate_identity", src=mapped, sport=1, key=1,
                            path=SpaPath.UNTAGGED), names)  # fmt: skip
    assert checked.mac_valid and "identity=alice" in checked.describe()
    tagged = to_sample(Raw(reason="spa_rate_identity", src=mapped, sport=1, key=1,
                           path=SpaPath.TAGGED), names)  # fmt: skip
    assert not tagged.mac_valid  # charged before the HMAC on the tagged path
    assert to_sample(Raw(reason=3, src=mapped, sport=1, identity="mallory"), names).identity is None
    with pytest.raises(ValueError):
        to_sample(Raw(reason="no_such_reason", src=mapped, sport=1), names)
