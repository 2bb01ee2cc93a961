"""Replay cache: remembers a nonce only while a packet carrying it could pass the time window.

A dict gives O(1) lookups; an ExpiryWheel files each nonce under its expiry rounded up to a
step (STEP_MS), so expiring is popping whole steps. A nonce is remembered up to one step
longer than asked, never shorter: a packet that old is refused as stale anyway. Memory per
live nonce is its 16 bytes object, one dict slot and one list slot (the expiry is one int per
step, shared); the size is bounded by packet rate x window and capped hard: when full of live
nonces it refuses new ones (the caller fails closed) and never evicts a live one.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from enum import Enum

STEP_MS = 250  # expiry granularity (ms): a key lives until its until_ms rounded up to a step


class Added(Enum):
    """What ReplayCache.add() did with a nonce."""

    ADDED = "added"
    REPLAY = "replay"  # the nonce is live: a replay
    FULL = "full"  # capacity reached by live nonces: the caller fails closed


ADDED, REPLAY, FULL = Added.ADDED, Added.REPLAY, Added.FULL


class ExpiryWheel:
    """Keys filed by expiry in steps of STEP_MS. add() files a key under its until_ms rounded
    up to the end of its step (and returns that end: one int object per step, shared by all
    its keys); expired(now_ms) returns, once each, the keys of every step that ended before
    now_ms. One list slot per key: the keys themselves are the caller's objects."""

    __slots__ = ("_order", "_size", "_steps")

    def __init__(self) -> None:
        self._steps: dict[int, tuple[int, list]] = {}  # step end -> (that end, its keys)
        self._order: list[int] = []  # a min-heap of the step ends
        self._size = 0

    def __len__(self) -> int:
        """Keys filed (a key filed twice counts twice)."""
        return self._size

    def add(self, key: Hashable, until_ms: int) -> int:
        end = -(-int(until_ms) // STEP_MS) * STEP_MS
        step = self._steps.get(end)
        if step is None:
            step = self._steps[end] = (end, [])
            heapq.heappush(self._order, end)
        step[1].append(key)
        self._size += 1
        return step[0]

    def expired(self, now_ms: int) -> list:
        order = self._order
        if not order or order[0] >= now_ms:
            return []
        out: list = []
        while order and order[0] < now_ms:
            out.extend(self._steps.pop(heapq.heappop(order))[1])
        self._size -= len(out)
        return out


class ReplayCache:
    __slots__ = ("_until", "_wheel", "capacity")

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"replay capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._until: dict[bytes, int] = {}  # nonce -> the end of its expiry step
        self._wheel = ExpiryWheel()

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._until

    def until(self, nonce: bytes) -> int | None:
        """Until when nonce is remembered (its until_ms rounded up to a step), None: not."""
        return self._until.get(nonce)

    def items(self) -> list[tuple[bytes, int]]:
        return list(self._until.items())

    def expire(self, now_ms: int) -> None:
        """Forget nonces remembered until before now_ms."""
        gone = self._wheel.expired(now_ms)
        if gone:
            until = self._until
            for nonce in gone:
                t = until.get(nonce)
                if t is not None and t < now_ms:  # else filed again, later (remember())
                    del until[nonce]

    def live(self, nonce: bytes, now_ms: int) -> bool:
        """True when nonce is remembered and still live at now_ms (a replay)."""
        self.expire(now_ms)
        return nonce in self._until

    def add(self, nonce: bytes, until_ms: int, now_ms: int) -> Added:
        """ADDED, REPLAY (nonce is live) or FULL (capacity reached by live nonces)."""
        self.expire(now_ms)
        until = self._until
        if nonce in until:
            return REPLAY
        if len(until) >= self.capacity:
            return FULL
        until[nonce] = self._wheel.add(nonce, until_ms)
        return ADDED

    def remember(self, nonce: bytes, until_ms: int) -> bool:
        """Restore a nonce (e.g. after a restart); False when the cache is full. A later
        until_ms extends a remembered nonce, an earlier one leaves it as it is."""
        until = self._until
        old = until.get(nonce)
        if old is not None:
            if until_ms > old:  # a later step: filed again (the earlier filing is skipped)
                until[nonce] = self._wheel.add(nonce, until_ms)
            return True
        if len(until) >= self.capacity:
            return False
        until[nonce] = self._wheel.add(nonce, until_ms)
        return True
