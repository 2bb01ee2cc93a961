"""Typed outcomes of decoding and verifying a packet."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spagate.protocol.codec import Message


class Reason(StrEnum):
    """Why a packet was rejected (stable strings: used in logs and counters)."""

    SIZE = "size"
    MAC = "mac"
    PADDING = "padding"
    VERSION = "version"
    IP_LENGTH = "ip-length"
    STALE = "stale"
    FUTURE = "future"
    REPLAY = "replay"
    REPLAY_FULL = "replay-full"


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)


@dataclass(frozen=True, slots=True)
class Decoded:
    message: Message
    key_index: int


@dataclass(frozen=True, slots=True)
class Accepted:
    message: Message
    key_index: int
    replay_until_ms: int
