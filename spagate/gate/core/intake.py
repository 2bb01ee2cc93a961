"""SPA intake (sans-IO): one ring-buffer record and the clocks in, a typed decision out.

Joins the protocol core (verify) and the policy (what to open). An Admit carries the writes
the service must make, in order: the nonce first (after a crash between the two, a replay of
the packet is still refused), then the windows. Rule: no maps, no hooks, no logging, no clock
reads here: the service (spagate.gate.service) does every write and every line of log.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from spagate.gate.core.config import GateConfig, Identity, Port
from spagate.gate.core.policy import Grant, Refusal, decide
from spagate.gate.core.reasons import ACCEPTED, AdmissionPath, stage_of
from spagate.net import IPAddress, hostport, unmap
from spagate.protocol import Reason, Rejected, Verifier

NS = 1_000_000_000
# Verifier reasons decided before any key's MAC matched: the sender is unknown.
_BEFORE_MAC = frozenset({Reason.SIZE.value, Reason.MAC.value})


@dataclass(frozen=True, slots=True)
class RememberNonce:
    """Persist an accepted nonce (replay map) until until_ms (unix ms)."""

    nonce: bytes
    until_ms: int


@dataclass(frozen=True, slots=True)
class OpenWindow:
    """Open ip on (proto, port) until until_ns (CLOCK_MONOTONIC); proto None: every protected
    port. Never shortens a longer window (extend only)."""

    ip: IPAddress
    until_ns: int
    proto: str | None = None
    port: int = 0


Write = RememberNonce | OpenWindow


@dataclass(frozen=True, slots=True)
class Admit:
    grant: Grant
    writes: tuple[Write, ...]
    src: IPAddress
    sport: int
    via: str
    path: str = AdmissionPath.UNTAGGED  # the admission path (reasons.AdmissionPath)
    received_ns: int = 0  # CLOCK_MONOTONIC when the kernel queued the packet (0: unknown)

    event = "accept"
    reason = ACCEPTED

    @property
    def identity(self) -> Identity:
        return self.grant.identity

    def describe(self) -> str:
        g = self.grant
        ports = ",".join(map(str, g.ports)) if g.ports else "all"
        return (
            f"accept {g.ip} identity={g.identity.name} ports={ports} window={g.seconds}s "
            f"from {hostport(self.src, self.sport)} via {self.via}"
            + (" third-party" if g.third_party else "")
        )

    def fields(self) -> dict:
        g = self.grant
        return {
            "ip": str(g.ip), "identity": g.identity.name, "src": str(self.src),
            "sport": self.sport, "via": self.via, "path": self.path, "window_s": g.seconds,
            "ports": [str(p) for p in g.ports] if g.ports else "all",
            "third_party": g.third_party,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str  # a verifier Reason or a policy reason (spagate.gate.core.reasons)
    detail: str
    src: IPAddress
    sport: int
    via: str
    identity: Identity | None = None  # None: refused before a key matched

    event = "refuse"

    @property
    def mac_valid(self) -> bool:
        """A key's MAC matched: the sender holds the key, or replays a packet of its holder."""
        return self.identity is not None

    @property
    def stage(self) -> str:
        return str(stage_of(self.reason) or "")

    def describe(self) -> str:
        who = f" identity={self.identity.name}" if self.identity else ""
        return f"refuse {self.reason} from {hostport(self.src, self.sport)} via {self.via}{who}" + (
            f": {self.detail}" if self.detail else ""
        )

    def fields(self) -> dict:
        return {
            "reason": self.reason, "stage": self.stage, "src": str(self.src),
            "sport": self.sport, "via": self.via,
            "identity": self.identity.name if self.identity else None,
            "mac_valid": self.mac_valid, "detail": self.detail,
        }  # fmt: skip


class Intake:
    """Decides on SPA records. counts: outcomes by name since start (the service publishes
    them); tally: the same by (name, identity name or "", admission path or "") for the
    metrics. Not thread-safe (copy with dict() to read from another thread)."""

    def __init__(self, config: GateConfig, ifnames: Callable[[int], str] = str):
        self.config, self.ifnames = config, ifnames
        self.verifier = Verifier(
            [i.keys for i in config.identities], max_skew_ms=config.max_skew_ms
        )
        self.counts: Counter[str] = Counter()
        self.tally: Counter[tuple[str, str, str]] = Counter()
        # Nonces persisted in the replay map, in the order they expire (nearly: the window
        # is short), so pruning forgets only what expired, a few at a time.
        self._persisted: deque[tuple[int, bytes]] = deque()

    def restore(self, entries: Mapping[bytes, int], now_ms: int) -> int:
        """Take back nonces accepted before a restart (the replay map), so their packets stay
        replays. Returns how many are still live."""
        n = 0
        for nonce, until_ms in sorted(entries.items(), key=lambda e: e[1]):
            if until_ms > now_ms and self.verifier.remember(nonce, until_ms):
                n += 1
            self._persisted.append((until_ms, nonce))
        return n

    def expired(self, now_ms: int) -> list[bytes]:
        """The persisted nonces whose window is over (each is returned once): the service
        forgets them in the replay map, one syscall per accepted packet however spread."""
        out = []
        while self._persisted and self._persisted[0][0] <= now_ms:
            out.append(self._persisted.popleft()[1])
        return out

    def handle(self, rec, now_ms: int, mono_ns: int) -> Admit | Refuse:
        """Verify one SPA record (spagate.gate.kernel.ringbuf.SpaRecord) and decide."""
        src = unmap(rec.src)
        res = self.verifier.verify(rec.payload, now_ms)
        ids = self.config.identities
        if isinstance(res, Rejected):
            reason = res.reason.value
            # After the MAC (stale, replay, padding ...): the kernel's key slot names the key
            # that matched (slots are written in identity order).
            ident = None
            if reason not in _BEFORE_MAC and 0 <= rec.key_index < len(ids):
                ident = ids[rec.key_index]
            return self._refuse(Refuse(reason, res.detail, src, rec.sport,
                                       self.ifnames(rec.ifindex), ident))  # fmt: skip
        identity = ids[res.key_index]
        grant = decide(self.config, identity, res.message.ip, src, unmap(rec.dst))
        if isinstance(grant, Refusal):
            via = self.ifnames(rec.ifindex)
            return self._refuse(
                Refuse(grant.reason.value, grant.detail, src, rec.sport, via, identity)
            )
        nonce = res.message.nonce
        self._persisted.append((res.replay_until_ms, nonce))
        until = mono_ns + grant.seconds * NS
        ports: tuple[Port | None, ...] = grant.ports or (None,)
        writes: tuple[Write, ...] = (
            RememberNonce(nonce, res.replay_until_ms),
            *(
                OpenWindow(grant.ip, until, p.proto, p.port) if p else OpenWindow(grant.ip, until)
                for p in ports
            ),
        )
        path = AdmissionPath.TAGGED if rec.tagged else AdmissionPath.UNTAGGED
        self.counts[ACCEPTED] += 1
        self.tally[ACCEPTED, identity.name, path.value] += 1
        return Admit(grant, writes, src, rec.sport, self.ifnames(rec.ifindex), path.value,
                     rec.ts_ns)  # fmt: skip

    def _refuse(self, out: Refuse) -> Refuse:
        self.counts[out.reason] += 1
        self.tally[out.reason, out.identity.name if out.identity else "", ""] += 1
        return out
