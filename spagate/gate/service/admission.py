"""Admission: the core intake's decisions carried out on the real maps, hooks and log.

Its one concern is doing what an Admit or a Refuse says, in order: the nonces before the
windows, then the open hooks, then one log line each. The decisions themselves are
spagate.gate.core.intake's; the clocks are read here and passed in. The worker batches: the
records of one turn of its loop (up to 256) are decided, then flush() writes all their nonces
in one syscall and all their windows in two, so the cost per accept falls with the load.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from spagate.gate.core.config import GateConfig
from spagate.gate.core.eventlog import EventLog
from spagate.gate.core.hints import tag_table
from spagate.gate.core.intake import Admit, Intake, OpenWindow, Refuse, RememberNonce

RECENT = 32  # events kept for the state file


class Maps(Protocol):
    def replay_remember_many(self, items) -> None: ...
    def open_windows(self, windows) -> int: ...
    def replay_entries(self) -> dict[bytes, int]: ...
    def replay_since(self) -> int: ...
    def replay_forget_many(self, nonces) -> int: ...
    def seen_expect_many(self, items) -> int: ...
    def set_spa_tags(self, table) -> tuple[int, int]: ...


def set_tag_hints(cfg: GateConfig, maps: Maps, now_ms: int) -> list[tuple[int, int]]:
    """Make the tag hints live around now_ms (wall clock) in spa_tags, drop the others;
    returns the hint collisions (slot pairs: the second's packets go untagged that step)."""
    table, clashes = tag_table([i.keys for i in cfg.identities], now_ms, cfg.max_skew_ms)
    maps.set_spa_tags(table)
    return clashes


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
        fwknop_access=None,
        boot_ns: Callable[[], int] = lambda: time.clock_gettime_ns(time.CLOCK_BOOTTIME),
    ):
        self.intake = Intake(config, ifnames)
        self.fwknop = None  # the fwknop intake, when the config reads an access.conf
        if fwknop_access is not None:
            from spagate.gate.core.intake import FwknopIntake

            self.fwknop = FwknopIntake(
                config, fwknop_access, self.intake.counts, ifnames, self.intake.tally
            )
        self.maps, self.log, self.hooks = maps, log, hooks
        self.wall_ms, self.mono_ns, self.boot_ns = wall_ms, mono_ns, boot_ns
        self.config = config
        self._replay_born_ns = 0  # CLOCK_BOOTTIME when the replay map was created afresh
        self.batch = batch  # True: writes wait for flush() (the worker flushes once per turn)
        self._pending: list[Admit] = []
        self.write_errors = 0
        self._prune_failing = False  # said once per streak of failed replay-map prunes
        self.fleet = None  # fleet mode: a FleetBridge claims each admission first
        # Set by the worker when metrics are on: called with each admission's latency (ns
        # from the kernel queueing the packet to its windows written).
        self.on_latency: Callable[[int], None] | None = None
        # The latest accepts and refusals (wall time, event), for the state file (`top`).
        self.recent: deque[tuple[float, object]] = deque(maxlen=RECENT)

    @property
    def counts(self):
        return self.intake.counts

    def restore(self) -> int:
        """Load nonces (and fwknop digests) accepted before a restart: their packets stay
        replays."""
        entries = self.maps.replay_entries()
        now = self.wall_ms()
        self._replay_born_ns = self.maps.replay_since()
        self.replay_memory()
        if self.fwknop is not None:
            for key, until in entries.items():
                if until > now:
                    self.fwknop.verifier.remember(key, until)
        return self.intake.restore(entries, now)

    def replay_memory(self) -> int:
        """Tell the intakes from when (unix ms) the replay map remembers every accepted packet:
        its creation, measured on CLOCK_BOOTTIME (a wall clock stepped after the boot cannot
        move it into the future), for as long as a packet stamped before could still be fresh
        (max-skew, fwknop-max-age); 0 after that. Returns it."""
        since = 0
        if self._replay_born_ns:
            age_ms = max(0, self.boot_ns() - self._replay_born_ns) // 1_000_000
            horizon = max(self.config.max_skew_ms, self.config.fwknop_max_age_ms)
            if age_ms <= horizon:
                since = self.wall_ms() - age_ms
            else:
                self._replay_born_ns = 0
        self.intake.memory_since_ms = since
        if self.fwknop is not None:
            self.fwknop.memory_since_ms = since
        return since

    def prune(self) -> int:
        """Forget the expired nonces in the replay map (and follow the replay memory)."""
        try:
            if self._replay_born_ns:
                self.replay_memory()
            gone = self.intake.expired(self.wall_ms())
            n = self.maps.replay_forget_many(gone) if gone else 0
        except OSError as e:  # kept in the map longer (the safe way); never stops intake
            if not self._prune_failing:
                self.log.error(f"cannot prune the replay map ({e.strerror or e}); still guarding")
            self._prune_failing = True
            return 0
        self._prune_failing = False
        return n

    def remember(self, nonce: bytes, until_ms: int, kind: str = "sparoid") -> None:
        """A nonce (or an fwknop packet's SHA-256) accepted elsewhere (a fleet peer): refuse
        its packet here too, also after a restart (persisted, then pruned like our own)."""
        if kind == "fwknop":
            from spagate.protocol.fwknop.verifier import REPLAY_KEY_SIZE

            nonce = nonce[:REPLAY_KEY_SIZE]  # the fwknop verifier's replay key
            if self.fwknop is not None:
                self.fwknop.verifier.remember(nonce, until_ms)
        else:
            self.intake.verifier.remember(nonce, until_ms)
        self.maps.replay_remember_many([(nonce, until_ms)])
        self.intake.persisted(nonce, until_ms)

    def handle_fwknop(self, rec) -> bool:
        """One fwknop record in (kernel.ringbuf.FwknopRecord); as handle()."""
        if self.fwknop is None:
            return False
        out = self.fwknop.handle(rec, self.wall_ms(), self.mono_ns())
        if isinstance(out, Admit):
            key = next(w for w in out.writes if isinstance(w, RememberNonce))
            self.intake.persisted(key.nonce, key.until_ms)
        return self._take(out)

    def handle(self, rec) -> bool:
        """One SPA record in; True when it is admitted (its window opens at the next flush,
        right away unless batching). A refusal is counted and logged here."""
        return self._take(self.intake.handle(rec, self.wall_ms(), self.mono_ns()))

    def _take(self, out) -> bool:
        if not isinstance(out, Admit):
            if out.expect is not None:
                self._expect(out.expect)
            self.log.refused(out)
            self.recent.append((self.wall_ms() / 1000, out))
            return False
        if self.fleet is not None and not self.fleet.admit():
            # A joining gate admits nothing before it holds the fleet's state.
            self.refuse_admitted(out, "fleet-not-synced")
            return False
        self._pending.append(out)
        if not self.batch:
            self.flush()
        return True

    def _expect(self, e) -> None:
        """Refused for its source only: let the kernel pass a copy from the named address
        (at once, not batched: that copy may be a few ms behind)."""
        try:
            self.maps.seen_expect_many([(e.seen_key, e.mac, e.ip, e.slot)])
        except OSError as err:
            self.write_errors += 1
            self.log.error(f"marking the real source of a refused copy failed: {err}")

    def refresh_hints(self, now_ms: int | None = None) -> list[tuple[int, int]]:
        """Rotate the tag hints (the worker calls this every second)."""
        now = self.wall_ms() if now_ms is None else now_ms
        return set_tag_hints(self.intake.config, self.maps, now)

    def flush(self) -> int:
        """Write what the admitted records since the last flush open: every nonce, then every
        window, then run the hooks and log. Returns how many were admitted."""
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        nonces = [(w.nonce, w.until_ms) for out in pending for w in out.writes
                  if isinstance(w, RememberNonce)]  # fmt: skip
        try:
            self.maps.replay_remember_many(nonces)
        except OSError as e:
            self.write_errors += 1
            self.log.error(f"persisting {len(nonces)} nonce(s) failed: {e}; windows stay shut")
            return 0
        if self.fleet is not None:  # the windows open when the fleet claim answers
            for out in pending:
                self.fleet.knock(out, out.payload)
            return len(pending)
        return self.open_now(pending)

    def open_now(self, admits: list[Admit]) -> int:
        """Open the windows of admissions whose nonces are persisted; hooks; one line each."""
        windows = [(w.ip, w.until_ns, w.proto, w.port) for out in admits for w in out.writes
                   if isinstance(w, OpenWindow)]  # fmt: skip
        try:
            self.maps.open_windows(windows)
        except OSError as e:
            # The windows stay shut (fail closed); the nonces stay remembered.
            self.write_errors += 1
            self.log.error(f"writing {len(admits)} admission(s) to the maps failed: {e}")
            return 0
        done_ns, wall = self.mono_ns(), self.wall_ms() / 1000
        for out in admits:
            if self.on_latency is not None and out.received_ns:
                self.on_latency(max(0, done_ns - out.received_ns))
            self.hooks.opened(out.grant.ip, out.grant.seconds)
            self.log.accepted(out)
            self.recent.append((wall, out))
        return len(admits)

    def refuse_admitted(self, out: Admit, reason: str) -> None:
        """A knock that verified but does not open (fleet: a replay elsewhere, not synced)."""
        c, t, who = self.intake.counts, self.intake.tally, out.grant.identity.name
        c[reason] += 1
        c["accepted"] -= 1
        t[reason, who, ""] += 1
        t["accepted", who, out.path] -= 1
        refusal = Refuse(reason, f"{out.describe()} (refused: {reason})", out.src, out.sport,
                         out.via, out.grant.identity)  # fmt: skip
        self.log.refused(refusal)
        self.recent.append((self.wall_ms() / 1000, refusal))
