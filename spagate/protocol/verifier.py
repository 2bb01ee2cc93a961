"""Verifier: decode + time window + replay cache. Pure: bytes and a clock in, a result out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from spagate.protocol.keys import KeyPair
from spagate.protocol.messages import Accepted, Decoded, Message, Reason, Rejected
from spagate.protocol.replay import ADDED, REPLAY, ReplayCache
from spagate.protocol.sparoid import decode


class Checked(NamedTuple):
    """A packet that decodes, is within the time window and is not a replay, its nonce NOT yet
    remembered: commit() does that, once the caller has decided to accept it."""

    message: Message
    key_index: int
    replay_until_ms: int


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

    def check(self, packet: bytes, now_ms: int) -> Checked | Rejected:
        """Decode, time window, replay lookup; remembers nothing."""
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
        if self.replay.live(msg.nonce, now_ms):
            return self._replay(msg)
        return Checked(msg, result.key_index, ts + skew)

    def commit(self, checked: Checked, now_ms: int) -> Accepted | Rejected:
        """Remember the nonce of a checked packet: from now on its copies are replays."""
        msg = checked.message
        status = self.replay.add(msg.nonce, checked.replay_until_ms, now_ms)
        if status == ADDED:
            return Accepted(msg, checked.key_index, checked.replay_until_ms)
        if status == REPLAY:
            return self._replay(msg)
        return Rejected(
            Reason.REPLAY_FULL,
            f"replay cache full ({self.replay.capacity} live nonces), failing closed",
        )

    def verify(self, packet: bytes, now_ms: int) -> Accepted | Rejected:
        """check() then commit(): every packet that checks is accepted."""
        result = self.check(packet, now_ms)
        if type(result) is not Checked:
            return result
        return self.commit(result, now_ms)

    @staticmethod
    def _replay(msg: Message) -> Rejected:
        return Rejected(Reason.REPLAY, f"nonce {msg.nonce.hex()} already seen")

    def remember(self, nonce: bytes, until_ms: int) -> bool:
        """Restore a nonce seen before a restart; False if the cache is full."""
        return self.replay.remember(bytes(nonce), until_ms)
