"""Replay cache: remembers a nonce only while a packet carrying it could pass the time window.

A dict gives O(1) lookups; a min-heap of (until, nonce) gives amortised cheap expiry. The size
is bounded by packet rate x window and capped hard: when full of live nonces it refuses new
ones (the caller fails closed) and never evicts a live one.
"""

from __future__ import annotations

import heapq
from enum import Enum


class Added(Enum):
    """What ReplayCache.add() did with a nonce."""

    ADDED = "added"
    REPLAY = "replay"  # the nonce is live: a replay
    FULL = "full"  # capacity reached by live nonces: the caller fails closed


ADDED, REPLAY, FULL = Added.ADDED, Added.REPLAY, Added.FULL


class ReplayCache:
    __slots__ = ("_heap", "_until", "capacity")

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"replay capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._until: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._until

    def until(self, nonce: bytes) -> int | None:
        return self._until.get(nonce)

    def items(self) -> list[tuple[bytes, int]]:
        return list(self._until.items())

    def expire(self, now_ms: int) -> None:
        """Forget nonces whose until_ms is before now_ms."""
        heap, until = self._heap, self._until
        while heap and heap[0][0] < now_ms:
            t, nonce = heapq.heappop(heap)
            if until.get(nonce) == t:  # else superseded by a later remember()
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
        until[nonce] = until_ms
        heapq.heappush(self._heap, (until_ms, nonce))
        return ADDED

    def remember(self, nonce: bytes, until_ms: int) -> bool:
        """Restore a nonce (e.g. after a restart); False when the cache is full."""
        old = self._until.get(nonce)
        if old is not None:
            if until_ms > old:
                self._until[nonce] = until_ms
                heapq.heappush(self._heap, (until_ms, nonce))
                self._compact()
            return True
        if len(self._until) >= self.capacity:
            return False
        self._until[nonce] = until_ms
        heapq.heappush(self._heap, (until_ms, nonce))
        return True

    def _compact(self) -> None:
        # Superseded heap entries only come from remember(); drop them if they pile up.
        if len(self._heap) > 2 * len(self._until) + 64:
            self._heap = [(t, n) for n, t in self._until.items()]
            heapq.heapify(self._heap)
