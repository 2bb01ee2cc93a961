"""Admission: the core intake's decisions carried out on the real maps, hooks and log.

Its one concern is doing what an Admit or a Refuse says, in order: the nonces before the
windows, then the open hooks, then one log line each. The decisions themselves are
spagate.gate.core.intake's; the clocks are read here and passed in. The worker batches: every
record of one ring poll is decided, then flush() writes all their nonces in one syscall and
all their windows in two, so the cost per accept falls with the load.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from spagate.gate.core.config import GateConfig
from spagate.gate.core.eventlog import EventLog
from spagate.gate.core.intake import Admit, Intake, OpenWindow, RememberNonce

RECENT = 32  # events kept for the state file


class Maps(Protocol):
    def replay_remember_many(self, items) -> None: ...
    def open_windows(self, windows) -> int: ...
    def replay_entries(self) -> dict[bytes, int]: ...
    def replay_forget_many(self, nonces) -> int: ...


class Opener(Protocol):
    def opened(self, ip, seconds: float) -> None: ...


class Admission:
    def __init__(
        self,
        config: GateConfig,
        maps: Maps,
        log: EventLog,
        hooks: Opener,
        ifnames: Callable[[int], str] = str,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        batch: bool = False,
    ):
        self.intake = Intake(config, ifnames)
        self.maps, self.log, self.hooks = maps, log, hooks
        self.wall_ms, self.mono_ns = wall_ms, mono_ns
        self.batch = batch  # True: writes wait for flush() (the worker flushes once per poll)
        self._pending: list[Admit] = []
        self.write_errors = 0
        # Set by the worker when metrics are on: called with each admission's latency (ns
        # from the kernel queueing the packet to its windows written).
        self.on_latency: Callable[[int], None] | None = None
        # The latest accepts and refusals (wall time, event), for the state file (`top`).
        self.recent: deque[tuple[float, object]] = deque(maxlen=RECENT)

    @property
    def counts(self):
        return self.intake.counts

    def restore(self) -> int:
        """Load nonces accepted before a restart, so their packets stay replays."""
        return self.intake.restore(self.maps.replay_entries(), self.wall_ms())

    def prune(self) -> int:
        """Forget the expired nonces in the replay map."""
        gone = self.intake.expired(self.wall_ms())
        return self.maps.replay_forget_many(gone) if gone else 0

    def handle(self, rec) -> bool:
        """One SPA record in; True when it is admitted (its window opens at the next flush,
        right away unless batching). A refusal is counted and logged here."""
        out = self.intake.handle(rec, self.wall_ms(), self.mono_ns())
        if not isinstance(out, Admit):
            self.log.refused(out)
            self.recent.append((self.wall_ms() / 1000, out))
            return False
        self._pending.append(out)
        if not self.batch:
            self.flush()
        return True

    def flush(self) -> int:
        """Write what the admitted records since the last flush open: every nonce, then every
        window, then run the hooks and log. Returns how many were admitted."""
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        nonces, windows = [], []
        for out in pending:
            for w in out.writes:
                if isinstance(w, RememberNonce):
                    nonces.append((w.nonce, w.until_ms))
                elif isinstance(w, OpenWindow):
                    windows.append((w.ip, w.until_ns, w.proto, w.port))
        try:
            self.maps.replay_remember_many(nonces)
            self.maps.open_windows(windows)
        except OSError as e:
            # The windows stay shut (fail closed); the nonces that made it stay remembered.
            self.write_errors += 1
            self.log.error(f"writing {len(pending)} admission(s) to the maps failed: {e}")
            return 0
        done_ns, wall = self.mono_ns(), self.wall_ms() / 1000
        for out in pending:
            if self.on_latency is not None and out.received_ns:
                self.on_latency(max(0, done_ns - out.received_ns))
            self.hooks.opened(out.grant.ip, out.grant.seconds)
            self.log.accepted(out)
            self.recent.append((wall, out))
        return len(pending)
