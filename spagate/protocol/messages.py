"""Typed outcomes of decoding and verifying a packet: a leaf module.

Rule: this module imports nothing from spagate. Codecs and the verifier import it, never the
other way round, so every type here resolves with typing.get_type_hints().
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

SPAROID_VERSION = 1


class Message(NamedTuple):
    """A sparoid SPA message: when it was sent, its nonce and the address it asks to open."""

    ts_ms: int
    nonce: bytes
    ip: IPv4Address | IPv6Address
    version: int = SPAROID_VERSION


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
    # fwknop (spagate.protocol.fwknop): the wire form, then the authenticated plaintext.
    FORMAT = "format"
    UNKNOWN_SOURCE = "unknown-source"  # no identity accepts packets from this address
    FIELD = "field"
    DIGEST = "digest"
    MESSAGE_TYPE = "message-type"
    COMMAND = "command"
    NAT = "nat"


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)


class Decoded(NamedTuple):
    message: Message
    key_index: int


class Accepted(NamedTuple):
    message: Message
    key_index: int
    replay_until_ms: int
