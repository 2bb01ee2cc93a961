"""The daemon log stays a few lines per interval however hard it is flooded."""

from spagate.gate.core.eventlog import EventLog


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make(**kw):
    lines, clock = [], Clock()
    return EventLog(lambda lvl, line: lines.append((lvl, line)), clock, **kw), lines, clock


def test_a_flood_of_rejections_writes_one_line_per_reason_and_one_summary():
    log, lines, clock = make(interval_s=10)
    for i in range(100_000):
        log.rejected("mac" if i % 2 else "size", f"from 198.51.100.{i % 250}:4000")
    assert len(lines) == 2
    assert all("more of this reason are summed up" in line for _, line in lines)
    clock.t += 10
    log.tick()
    assert len(lines) == 3
    assert lines[-1][1] == "in the last 10s: rejected mac=50000 size=50000"
    assert log.totals["mac"] == 50_000


def test_accept_lines_are_capped_per_interval_and_counted():
    log, lines, clock = make(interval_s=10, accept_burst=3)
    for i in range(10):
        log.accepted(f"accept 203.0.113.{i}")
    assert [line for _, line in lines] == [f"accept 203.0.113.{i}" for i in range(3)]
    clock.t += 11
    log.accepted("accept 203.0.113.99")
    assert "7 accept lines not shown" in lines[3][1]
    assert lines[4][1] == "accept 203.0.113.99"


def test_a_quiet_interval_writes_no_summary():
    log, lines, clock = make(interval_s=10)
    log.rejected("stale", "from 192.0.2.1:1")
    clock.t += 30
    log.tick()
    assert len(lines) == 1
