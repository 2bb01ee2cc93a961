"""FleetSync's start-up against a store whose listing fails in a way nobody foresaw: one
logged line, no traceback, and the gate goes on (fallback) while the watch keeps trying."""

from __future__ import annotations

import time

from spagate.gate.core.fleet import Keys, MemberRecord, Mirror, Trust
from spagate.gate.service.fleet import FleetOptions, FleetSync, StoreUnavailable


class BrokenStore:
    """A store whose snapshot raises what the decoders used to (RecursionError)."""

    def __init__(self):
        self.opts = FleetOptions("lab", ("http://127.0.0.1:1",), "a", heartbeat_s=0.05)
        self.keys = Keys("lab")
        self.snapshots = 0

    def snapshot(self):
        self.snapshots += 1
        raise RecursionError("maximum recursion depth exceeded")

    def heartbeat(self, rec):
        raise StoreUnavailable("no store")

    def conn(self):
        raise StoreUnavailable("no store")

    def leave(self):
        pass


class NoMaps:
    def allow(self, *a):
        raise AssertionError("nothing to open")

    revoke = remember = allow


def test_an_unexpected_error_at_start_is_one_line_and_the_gate_goes_on():
    store = BrokenStore()
    sync = FleetSync(store, Mirror(store.keys, Trust(frozenset())), NoMaps(),
                     lambda: MemberRecord("a", "starting"))  # fmt: skip
    lines: list[tuple[str, str]] = []
    sync._log = lambda level, msg: lines.append((level, msg))
    try:
        assert sync.start() is False  # not synced, but started: no exception
        assert lines[0] == (
            "error",
            "fleet: initial sync failed: RecursionError: maximum recursion depth exceeded",
        )
        assert all("\n" not in m for _, m in lines)
        end = time.monotonic() + 2
        while store.snapshots < 2 and time.monotonic() < end:
            time.sleep(0.02)
        assert store.snapshots >= 2  # the watch thread keeps trying to list
    finally:
        sync.stop()
