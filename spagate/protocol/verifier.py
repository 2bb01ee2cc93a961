"""Verifier: decode + time window + replay cache. Pure: bytes and a clock in, a result out."""

from __future__ import annotations

from collections.abc import Sequence

from spagate.protocol.keys import KeyPair
from spagate.protocol.messages import Accepted, Decoded, Reason, Rejected
from spagate.protocol.replay import ADDED, REPLAY, ReplayCache
from spagate.protocol.sparoid import decode


class Verifier:
    """Accepts each valid packet once, within +-max_skew_ms of now_ms. Not thread-safe."""

    def __init__(
        self,
        keyring: Sequence[KeyPair],
        max_skew_ms: int = 5000,
        replay_capacity: int = 1_000_000,
    ):
        if max_skew_ms < 0:
            raise ValueError(f"max_skew_ms must be >= 0, got {max_skew_ms}")
        self.keyring = tuple(keyring)
        if not self.keyring:
            raise ValueError("a Verifier needs at least one KeyPair")
        self.max_skew_ms = max_skew_ms
        self.replay = ReplayCache(replay_capacity)

    def verify(self, packet: bytes, now_ms: int) -> Accepted | Rejected:
        result = decode(packet, self.keyring)
        if type(result) is not Decoded:
            return result
        msg = result.message
        ts = msg.ts_ms
        skew = self.max_skew_ms
        if ts < now_ms - skew:
            return Rejected(Reason.STALE, f"sent {now_ms - ts} ms ago, window is {skew} ms")
        if ts > now_ms + skew:
            return Rejected(Reason.FUTURE, f"sent {ts - now_ms} ms ahead, window is {skew} ms")
        until = ts + skew
        status = self.replay.add(msg.nonce, until, now_ms)
        if status == ADDED:
            return Accepted(msg, result.key_index, until)
        if status == REPLAY:
            return Rejected(Reason.REPLAY, f"nonce {msg.nonce.hex()} already seen")
        return Rejected(
            Reason.REPLAY_FULL,
            f"replay cache full ({self.replay.capacity} live nonces), failing closed",
        )

    def remember(self, nonce: bytes, until_ms: int) -> bool:
        """Restore a nonce seen before a restart; False if the cache is full."""
        return self.replay.remember(bytes(nonce), until_ms)
