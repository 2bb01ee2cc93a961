"""The SPA ring buffer (spa_events): records the XDP program queued, decoded.

Its one concern is the record format (abi.SPA_EVENT) and its consumption through libbpf; what a
record means for the gate is the intake's business. Never imports bcc.
"""

from __future__ import annotations

import ctypes as ct
from collections.abc import Callable
from typing import NamedTuple

from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import SPA_EVENT_HEADER
from spagate.net import IPAddress, addr_from16

_HEADER = SPA_EVENT_HEADER.size
_COPIED = SPA_EVENT_HEADER.offset("copied")


class SpaRecord(NamedTuple):
    """One SPA packet the program queued."""

    payload: bytes  # the UDP payload (only MAC-valid SPA packets are queued)
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    ifindex: int
    length: int  # UDP payload length on the wire
    key_index: int = 0  # spa_keys slot whose MAC matched (the daemon writes identity order)


def decode_spa_event(raw: bytes) -> SpaRecord:
    """Decode one spa_events record (header + copied payload)."""
    src, dst, sport, dport, ifindex, length, copied, key = SPA_EVENT_HEADER.unpack_from(raw)
    payload = raw[_HEADER : _HEADER + copied]
    return SpaRecord(
        payload, addr_from16(src), addr_from16(dst), sport, dport, ifindex, length, key
    )


class SpaRing:
    """spa_events consumed with libbpf: poll() calls on_record(SpaRecord) for each record."""

    def __init__(self, map_fd: int, on_record: Callable[[SpaRecord], None]):
        string_at, u16 = ct.string_at, ct.c_uint16.from_address

        def sample(data: int, _size: int) -> None:
            # Copy the header and the copied payload only.
            on_record(decode_spa_event(string_at(data, _HEADER + u16(data + _COPIED).value)))

        self._ring = bpfsys.RingBuffer(map_fd, sample)

    def poll(self, timeout_ms: int = -1) -> int:
        """Wait up to timeout_ms for records, deliver them; returns how many. An exception of
        on_record propagates (after the records before it were delivered)."""
        return self._ring.poll(timeout_ms)

    def fileno(self) -> int:
        return self._ring.epoll_fd()

    def close(self) -> None:
        self._ring.close()
