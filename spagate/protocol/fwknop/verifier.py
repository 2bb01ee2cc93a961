"""fwknop verifier: HMAC, replay lookup, decrypt, time window, replay cache. Pure and bounded.

The order matters for cost: a packet no key authenticates costs one HMAC per candidate key; a
replay of a packet seen before costs the HMAC and a SHA-256 (never a decryption); only a new
authentic packet is decrypted and parsed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from spagate.protocol.fwknop.codec import FwknopMessage, authenticate, open_message
from spagate.protocol.fwknop.keys import FwknopKey
from spagate.protocol.messages import Reason, Rejected
from spagate.protocol.replay import ADDED, REPLAY, ReplayCache

DEFAULT_MAX_AGE_MS = 120_000  # fwknopd's MAX_SPA_PACKET_AGE default, 120 s
REPLAY_KEY_SIZE = 16


def replay_key(packet: bytes) -> bytes:
    """fwknopd's replay digest: SHA-256 of the raw packet, here its first 16 bytes (the size of
    the gate's persisted replay entries; 128 bits are plenty, only authentic packets get in)."""
    return hashlib.sha256(packet).digest()[:REPLAY_KEY_SIZE]


@dataclass(frozen=True, slots=True)
class FwknopAccepted:
    message: FwknopMessage
    key_index: int  # which identity's keys authenticated the packet
    replay_key: bytes  # persist it (with replay_until_ms) so a replay stays refused
    replay_until_ms: int  # after this the packet is stale anyway


class FwknopVerifier:
    """Accepts each authentic access request once, within +-max_age_ms of now_ms.

    verify() is check() then consume(). A caller that applies a policy in between (SOURCE,
    REQUIRE_USERNAME, ports...) calls them apart, so that a packet its policy refuses does not
    use up the packet's replay entry. Not thread-safe.
    """

    def __init__(
        self,
        keys: Sequence[FwknopKey],
        max_age_ms: int = DEFAULT_MAX_AGE_MS,
        replay_capacity: int = 1_000_000,
    ):
        if max_age_ms < 0:
            raise ValueError(f"max_age_ms must be >= 0, got {max_age_ms}")
        self.keys = tuple(keys)
        if not self.keys:
            raise ValueError("an FwknopVerifier needs at least one FwknopKey")
        self.max_age_ms = max_age_ms
        self.replay = ReplayCache(replay_capacity)

    def check(
        self, packet: bytes, now_ms: int, candidates: Sequence[int] | None = None
    ) -> FwknopAccepted | Rejected:
        """Everything but recording the packet. candidates: see codec.authenticate."""
        auth = authenticate(packet, self.keys, candidates)
        if type(auth) is Rejected:
            return auth
        index, body = auth
        key = replay_key(bytes(packet))
        seen = self.replay.until(key)
        if seen is not None and seen >= now_ms:
            return Rejected(Reason.REPLAY, f"packet {key.hex()} already accepted")
        msg = open_message(self.keys[index], body)
        if type(msg) is Rejected:
            return msg
        ts, age = msg.ts_ms, self.max_age_ms
        if ts < now_ms - age:
            return Rejected(Reason.STALE, f"sent {(now_ms - ts) // 1000} s ago, window is {age} ms")
        if ts > now_ms + age:
            return Rejected(
                Reason.FUTURE, f"sent {(ts - now_ms) // 1000} s ahead, window is {age} ms"
            )
        return FwknopAccepted(msg, index, key, ts + age)

    def consume(self, accepted: FwknopAccepted, now_ms: int) -> FwknopAccepted | Rejected:
        """Record an accepted packet; a second consume of the same packet is a REPLAY."""
        status = self.replay.add(accepted.replay_key, accepted.replay_until_ms, now_ms)
        if status == ADDED:
            return accepted
        if status == REPLAY:
            return Rejected(Reason.REPLAY, f"packet {accepted.replay_key.hex()} already accepted")
        return Rejected(
            Reason.REPLAY_FULL,
            f"replay cache full ({self.replay.capacity} live packets), failing closed",
        )

    def verify(
        self, packet: bytes, now_ms: int, candidates: Sequence[int] | None = None
    ) -> FwknopAccepted | Rejected:
        res = self.check(packet, now_ms, candidates)
        if type(res) is Rejected:
            return res
        return self.consume(res, now_ms)

    def remember(self, key: bytes, until_ms: int) -> bool:
        """Restore a replay key accepted before a restart; False if the cache is full."""
        if len(key) != REPLAY_KEY_SIZE:
            raise ValueError(f"replay key must be {REPLAY_KEY_SIZE} bytes, got {len(key)}")
        return self.replay.remember(bytes(key), until_ms)
