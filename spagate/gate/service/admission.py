"""Admission: the core intake's decisions carried out on the real maps, hooks and log.

Its one concern is doing what an Admit or a Refuse says, in order: the nonce before the
windows, then the open hook, then one log line. The decisions themselves are
spagate.gate.core.intake's; the clocks are read here and passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from spagate.gate.core.config import GateConfig
from spagate.gate.core.eventlog import EventLog
from spagate.gate.core.intake import Admit, Intake, OpenWindow, RememberNonce
from spagate.gate.service.hooks import Hooks


class Maps(Protocol):
    def allow(
        self, ip, until_ns: int, proto: str | None = None, port: int = 0, extend_only=False
    ) -> None: ...
    def replay_remember(self, nonce: bytes, until_ms: int) -> None: ...
    def replay_entries(self) -> dict[bytes, int]: ...
    def replay_forget(self, nonce: bytes) -> bool: ...


class Admission:
    def __init__(
        self,
        config: GateConfig,
        maps: Maps,
        log: EventLog,
        hooks: Hooks,
        ifnames: Callable[[int], str] = str,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ):
        self.intake = Intake(config, ifnames)
        self.maps, self.log, self.hooks = maps, log, hooks
        self.wall_ms, self.mono_ns = wall_ms, mono_ns

    @property
    def counts(self):
        return self.intake.counts

    def restore(self) -> int:
        """Load nonces accepted before a restart, so their packets stay replays."""
        return self.intake.restore(self.maps.replay_entries(), self.wall_ms())

    def prune(self) -> int:
        """Forget the expired nonces in the replay map."""
        gone = self.intake.expired(self.wall_ms())
        for nonce in gone:
            self.maps.replay_forget(nonce)
        return len(gone)

    def handle(self, rec) -> bool:
        """One SPA record in; the gate opened (True) or the refusal counted and logged."""
        out = self.intake.handle(rec, self.wall_ms(), self.mono_ns())
        if not isinstance(out, Admit):
            self.log.rejected(out.reason, out.describe)
            return False
        for w in out.writes:
            if isinstance(w, RememberNonce):
                self.maps.replay_remember(w.nonce, w.until_ms)
            elif isinstance(w, OpenWindow):
                self.maps.allow(w.ip, w.until_ns, w.proto, w.port, extend_only=True)
        self.hooks.opened(out.grant.ip, out.grant.seconds)
        self.log.accepted(out.describe)
        return True
