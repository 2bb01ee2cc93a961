"""SPA intake: one ring-buffer record in, the allow map updated (or a counted rejection) out.

Joins the protocol core (verify), the policy (what to open) and the maps (where it is opened).
The clocks are injected; the maps and hooks are the only I/O, passed in by the daemon.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from spagate.gate.config import GateConfig
from spagate.gate.eventlog import EventLog
from spagate.gate.hooks import Hooks
from spagate.gate.policy import Refusal, decide, unmap
from spagate.protocol import Rejected, Verifier

NS = 1_000_000_000


class Maps(Protocol):
    def allow(
        self, ip, until_ns: int, proto: str | None = None, port: int = 0, extend_only=False
    ) -> None: ...
    def replay_remember(self, nonce: bytes, until_ms: int) -> None: ...
    def replay_entries(self) -> dict[bytes, int]: ...
    def replay_forget(self, nonce: bytes) -> bool: ...


class Intake:
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
        self.config, self.maps, self.log, self.hooks = config, maps, log, hooks
        self.ifnames, self.wall_ms, self.mono_ns = ifnames, wall_ms, mono_ns
        self.verifier = Verifier(
            [i.keys for i in config.identities], max_skew_ms=config.max_skew_ms
        )
        self.counts: Counter[str] = Counter()
        # Nonces persisted in the replay map, in the order they expire (nearly: the window
        # is short), so pruning deletes only what expired, a few at a time.
        self._persisted: deque[tuple[int, bytes]] = deque()

    def restore(self) -> int:
        """Load nonces accepted before a restart, so their packets stay replays."""
        now = self.wall_ms()
        n = 0
        for nonce, until_ms in sorted(self.maps.replay_entries().items(), key=lambda e: e[1]):
            if until_ms > now and self.verifier.remember(nonce, until_ms):
                n += 1
            self._persisted.append((until_ms, nonce))
        return n

    def prune(self) -> int:
        """Forget the expired nonces in the replay map. Each nonce is deleted once, so this
        costs one syscall per accepted packet however it is spread over the loops."""
        now, n = self.wall_ms(), 0
        while self._persisted and self._persisted[0][0] <= now:
            self.maps.replay_forget(self._persisted.popleft()[1])
            n += 1
        return n

    def handle(self, rec) -> bool:
        """Verify one SPA record; open the gate when it passes. True when accepted."""
        src = unmap(rec.src)
        res = self.verifier.verify(rec.payload, self.wall_ms())
        if isinstance(res, Rejected):
            self.counts[res.reason.value] += 1
            self.log.rejected(res.reason.value, f"{self._where(rec, src)}: {res.detail}")
            return False
        where = self._where(rec, src)
        identity = self.config.identities[res.key_index]
        grant = decide(self.config, identity, res.message.ip, src, unmap(rec.dst))
        if isinstance(grant, Refusal):
            self.counts[grant.reason] += 1
            self.log.rejected(grant.reason, f"{where} identity={identity.name}: {grant.detail}")
            return False
        # Persist the nonce before opening: after a crash between the two, a replay of this
        # packet is still refused.
        self.maps.replay_remember(res.message.nonce, res.replay_until_ms)
        self._persisted.append((res.replay_until_ms, res.message.nonce))
        until = self.mono_ns() + grant.seconds * NS
        if grant.ports is None:
            self.maps.allow(grant.ip, until, extend_only=True)
        else:
            for p in grant.ports:
                self.maps.allow(grant.ip, until, p.proto, p.port, extend_only=True)
        self.hooks.opened(grant.ip, grant.seconds)
        self.counts["accepted"] += 1
        ports = ",".join(map(str, grant.ports)) if grant.ports else "all"
        self.log.accepted(
            f"accept {grant.ip} identity={identity.name} ports={ports} "
            f"window={grant.seconds}s {where}" + (" third-party" if grant.third_party else "")
        )
        return True

    def _where(self, rec, src) -> str:
        return f"from {_hostport(src, rec.sport)} via {self.ifnames(rec.ifindex)}"


def _hostport(ip, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
