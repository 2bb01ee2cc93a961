"""SPA intake (sans-IO): one ring-buffer record and the clocks in, a typed decision out.

Joins the protocol core (verify) and the policy (what to open). An Admit carries the writes
the service must make, in order: the nonce first (after a crash between the two, a replay of
the packet is still refused), then the windows. Rule: no maps, no hooks, no logging, no clock
reads here: the service (spagate.gate.service) does every write and every line of log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from spagate.gate.core.config import GateConfig, Identity, Port
from spagate.gate.core.policy import (
    Grant,
    Refusal,
    decide,
    destination_refusal,
    source_refusal,
)
from spagate.gate.core.reasons import ACCEPTED, AdmissionPath, PolicyReason, stage_of
from spagate.gate.kernel.abi import SpaPath
from spagate.net import IPAddress, hostport, unmap
from spagate.protocol import Reason, Rejected, Verifier
from spagate.protocol.replay import ExpiryWheel

NS = 1_000_000_000
# The accept path's constants, looked up once (an enum member's .value is a descriptor call).
_TAGGED, _UNTAGGED = AdmissionPath.TAGGED.value, AdmissionPath.UNTAGGED.value
_SPA_TAGGED = SpaPath.TAGGED
# Verifier reasons decided before any key's MAC matched: the sender is unknown.
_BEFORE_MAC = frozenset({Reason.SIZE.value, Reason.MAC.value})


class RememberNonce(NamedTuple):
    """Persist an accepted nonce (replay map) until until_ms (unix ms)."""

    nonce: bytes
    until_ms: int


class OpenWindow(NamedTuple):
    """Open ip on (proto, port) until until_ns (CLOCK_MONOTONIC); proto None: every protected
    port. Never shortens a longer window (extend only)."""

    ip: IPAddress
    until_ns: int
    proto: str | None = None
    port: int = 0


class ExpectSource(NamedTuple):
    """Tell the kernel's duplicate filter (spa_seen) that the packet whose entry is `seen_key`
    was refused for its source only: a copy from `ip`, the address it names, may still pass
    (require-source-match; docs/admission.md). mac: the packet's MAC, slot: its identity."""

    seen_key: bytes
    mac: bytes
    ip: IPAddress
    slot: int


Write = RememberNonce | OpenWindow


class Admit(NamedTuple):
    grant: Grant
    writes: tuple[Write, ...]
    src: IPAddress
    sport: int
    via: str
    payload: bytes = b""  # the packet (fleet mode: every peer re-verifies it)
    protocol: str = "sparoid"  # or "fwknop"
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
    expect: ExpectSource | None = None  # a refusal the real packet may still overturn

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


class FwknopIntake:
    """Decides on fwknop records (spagate.gate.kernel.ringbuf.FwknopRecord): HMAC, replay,
    decryption and time window (protocol.fwknop), then access.conf's stanza rules, then the
    gate's protected ports; the replay entry is consumed only for a packet that opens
    something. Its Admit looks like the sparoid one: the digest persisted first, then the
    windows, one per granted port. Not thread-safe."""

    def __init__(self, config: GateConfig, access, counts: Counter, ifnames=str, tally=None):
        from spagate.protocol.fwknop.verifier import FwknopVerifier

        self.config, self.access, self.counts, self.ifnames = config, access, counts, ifnames
        self.tally: Counter[tuple[str, str, str]] = Counter() if tally is None else tally
        self.verifier = FwknopVerifier(access.keys(), max_age_ms=config.fwknop_max_age_ms)
        self.protected = frozenset((p.proto, p.port) for p in config.protected)
        self.memory_since_ms = 0  # the replay map's memory begins (GateMaps.replay_since)

    def handle(self, rec, now_ms: int, mono_ns: int) -> Admit | Refuse:
        from spagate.gate.core.fwknop_access import FwknopGrant, FwknopPolicyReason, decide

        src, dst = unmap(rec.src), unmap(rec.dst)
        via = self.ifnames(rec.ifindex)
        res = self.verifier.check(rec.payload, now_ms, self.access.candidates(src, dst))
        if isinstance(res, Rejected):
            return self._refuse(res.reason.value, res.detail, src, rec.sport, via)
        if (why := before_memory(res.message.timestamp * 1000, self.memory_since_ms)) is not None:
            who = Identity(name=f"fwknop:{self.access.stanzas[res.key_index].where}", keys=None)  # type: ignore[arg-type]
            return self._refuse(PolicyReason.BEFORE_REPLAY_MEMORY.value, why, src, rec.sport, via,
                                who)  # fmt: skip
        g = decide(self.access, res.key_index, res.message, src, now_ms / 1000, dst)
        stanza = self.access.stanzas[getattr(g, "stanza_index", res.key_index)]
        who = Identity(name=f"fwknop:{stanza.where}", keys=None)  # type: ignore[arg-type]
        if not isinstance(g, FwknopGrant):
            return self._refuse(str(g.reason), g.detail, src, rec.sport, via, who)
        # The gate's own rules hold for fwknop too: bind, require-source-match.
        refusal = destination_refusal(self.config, dst) or source_refusal(
            self.config, res.message.ip, src
        )
        if refusal is not None:
            return self._refuse(refusal.reason.value, refusal.detail, src, rec.sport, via, who)
        ports = tuple(Port(p.proto, p.port) for p in g.ports if (p.proto, p.port) in self.protected)
        if not ports:
            asked = ",".join(map(str, g.ports))
            return self._refuse(FwknopPolicyReason.PORTS_NOT_PROTECTED.value,
                                f"none of {asked} is protected here", src, rec.sport, via,
                                who)  # fmt: skip
        done = self.verifier.consume(res, now_ms)
        if isinstance(done, Rejected):
            return self._refuse(done.reason.value, done.detail, src, rec.sport, via, who)
        self.counts[ACCEPTED] += 1
        self.tally[ACCEPTED, who.name, AdmissionPath.FWKNOP.value] += 1
        until = mono_ns + g.seconds * NS
        writes: tuple[Write, ...] = (
            RememberNonce(res.replay_key, res.replay_until_ms),
            *(OpenWindow(g.ip, until, p.proto, p.port) for p in ports),
        )
        grant = Grant(g.ip, who, ports, g.seconds, g.third_party)
        return Admit(grant, writes, src, rec.sport, via, rec.payload, "fwknop",
                     AdmissionPath.FWKNOP.value)  # fmt: skip

    def _refuse(self, reason, detail, src, sport, via, who=None) -> Refuse:
        self.counts[reason] += 1
        self.tally[reason, who.name if who else "", ""] += 1
        return Refuse(reason, detail, src, sport, via, who)


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
        self.memory_since_ms = 0  # the replay map's memory begins (GateMaps.replay_since)
        # Nonces and fwknop digests persisted in the replay map, filed by expiry (their
        # windows differ: 5 s and up to fwknop's 240 s), so pruning forgets what expired a
        # step at a time (one batched delete per step, not one per knock), and a long-lived
        # entry never holds the others back.
        self._persisted = ExpiryWheel()

    def restore(self, entries: Mapping[bytes, int], now_ms: int) -> int:
        """Take back nonces accepted before a restart (the replay map), so their packets stay
        replays. Returns how many are still live."""
        n = 0
        for nonce, until_ms in sorted(entries.items(), key=lambda e: e[1]):
            if until_ms > now_ms and self.verifier.remember(nonce, until_ms):
                n += 1
            self._persisted.add(nonce, until_ms)
        return n

    def persisted(self, key: bytes, until_ms: int) -> None:
        """Track a replay entry the service persisted (the fwknop intake's digests too)."""
        self._persisted.add(key, until_ms)

    def expired(self, now_ms: int) -> list[bytes]:
        """The persisted nonces whose window is over (each is returned once, up to a step
        late: spagate.protocol.replay.STEP_MS): the service forgets them in the replay map."""
        return self._persisted.expired(now_ms)

    def handle(self, rec, now_ms: int, mono_ns: int) -> Admit | Refuse:
        """Verify one SPA record (spagate.gate.kernel.ringbuf.SpaRecord) and decide. The nonce
        is remembered only once the policy grants: a refused copy (e.g. an on-path copy sent
        from another source) does not burn the real packet."""
        src = unmap(rec.src)
        checked = self.verifier.check(rec.payload, now_ms)
        ids = self.config.identities
        if isinstance(checked, Rejected):
            return self._rejected(checked, rec, src)
        identity = ids[checked.key_index]
        if checked.message.ts_ms < self.memory_since_ms:
            why = before_memory(checked.message.ts_ms, self.memory_since_ms)
            return self._refuse(Refuse(PolicyReason.BEFORE_REPLAY_MEMORY.value, why, src,
                                       rec.sport, self.ifnames(rec.ifindex), identity))  # fmt: skip
        msg_ip = unmap(checked.message.ip)
        grant = decide(self.config, identity, msg_ip, src, unmap(rec.dst))
        if isinstance(grant, Refusal):
            via = self.ifnames(rec.ifindex)
            expect = None
            if grant.reason is PolicyReason.SOURCE_MISMATCH and not msg_ip.is_unspecified:
                expect = ExpectSource(seen_key(rec), rec.payload[:32], msg_ip, checked.key_index)
            return self._refuse(
                Refuse(grant.reason.value, grant.detail, src, rec.sport, via, identity, expect)
            )
        res = self.verifier.commit(checked, now_ms)
        if isinstance(res, Rejected):
            return self._rejected(res, rec, src)
        nonce, until_ms = res.message.nonce, res.replay_until_ms
        self._persisted.add(nonce, until_ms)
        until = mono_ns + grant.seconds * NS
        writes: tuple[Write, ...]
        if grant.ports:  # the identity's ports, each its own window
            windows = [OpenWindow(grant.ip, until, p.proto, p.port) for p in grant.ports]
            writes = (RememberNonce(nonce, until_ms), *windows)
        else:  # every protected port: one whole-host window
            writes = (RememberNonce(nonce, until_ms), OpenWindow(grant.ip, until))
        self.counts[ACCEPTED] += 1
        path = _TAGGED if rec.path == _SPA_TAGGED else _UNTAGGED
        self.tally[ACCEPTED, identity.name, path] += 1
        return Admit(grant, writes, src, rec.sport, self.ifnames(rec.ifindex), rec.payload,
                     "sparoid", path, rec.ts_ns)  # fmt: skip

    def _rejected(self, res: Rejected, rec, src: IPAddress) -> Refuse:
        """A verifier refusal. After the MAC (stale, replay, padding ...) the kernel's key slot
        names the key that matched (slots are written in identity order)."""
        ids, reason = self.config.identities, res.reason.value
        ident = None
        if reason not in _BEFORE_MAC and 0 <= rec.key_index < len(ids):
            ident = ids[rec.key_index]
        return self._refuse(Refuse(reason, res.detail, src, rec.sport, self.ifnames(rec.ifindex),
                                   ident))  # fmt: skip

    def _refuse(self, out: Refuse) -> Refuse:
        self.counts[out.reason] += 1
        self.tally[out.reason, out.identity.name if out.identity else "", ""] += 1
        return out


def seen_key(rec) -> bytes:
    """The packet's key in the kernel's spa_seen (structs.h seen_key): its IV when it came the
    tagged path, else the first 16 bytes of its MAC."""
    p = rec.payload
    return bytes(p[32:48]) if rec.path == SpaPath.TAGGED else bytes(p[:16])


def before_memory(stamp_ms: int, since_ms: int) -> str | None:
    """Why a packet stamped at stamp_ms may be a replay the gate cannot recognise: the replay
    map remembers accepted packets only from since_ms on (a reboot emptied it). A client's
    packet is stamped when it is sent, so one stamped after since_ms was never seen before
    (but for a client clock running ahead: docs/threat-model.md)."""
    if stamp_ms >= since_ms:
        return None
    return (f"stamped {since_ms - stamp_ms} ms before the gate's replay memory begins "
            "(a reboot emptied it): it may be a replay")  # fmt: skip
