"""The SPA ring buffer (spa_events): records the XDP program queued, decoded.

Its one concern is the record format (abi.SPA_EVENT) and reading the ring. The ring is read
straight from its memory mapping (the kernel's BPF ring buffer ABI, as libbpf does it): the
consumer position page (read-write), then the producer position page and the data area mapped
twice (read-only), so a record that wraps around is still contiguous. No callback crosses from C
into Python per record, no bcc, no libbpf: an fd of the map is all it needs.

Memory ordering: the producer publishes a record by clearing its BUSY bit after writing it;
x86-64 keeps loads in order, so reading the header before the body is enough there.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
from collections.abc import Callable
from typing import NamedTuple

from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import SPA_EVENT_HEADER
from spagate.net import IPAddress, addr_from16

_HEADER = SPA_EVENT_HEADER.size
_COPIED = SPA_EVENT_HEADER.offset("copied")
_U16 = struct.Struct("=H")
_U64 = struct.Struct("=Q")
_REC_HDR = struct.Struct("=II")  # struct bpf_ringbuf_hdr: len (with flags), pg_off
_BUSY, _DISCARD = 1 << 31, 1 << 30
_PAGE = mmap.PAGESIZE


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
    ts_ns: int = 0  # CLOCK_MONOTONIC when the kernel queued it (0: unknown)
    tagged: bool = False  # the packet carried spagate's tag (sparoid packets without: False)


def decode_spa_event(raw: bytes) -> SpaRecord:
    """Decode one spa_events record (header + copied payload)."""
    src, dst, sport, dport, ifindex, length, copied, key, ts = SPA_EVENT_HEADER.unpack_from(raw)
    payload = raw[_HEADER : _HEADER + copied]
    return SpaRecord(
        payload, addr_from16(src), addr_from16(dst), sport, dport, ifindex, length, key, ts
    )


class RingReader:
    """A BPF ring buffer map read through its mappings. poll() hands each record's bytes
    (a copy) to on_record and returns how many it read."""

    def __init__(self, map_fd: int, on_record: Callable[[bytes], None]):
        info = bpfsys.map_info(map_fd)
        size = info.max_entries  # the data area, a power of two of pages
        self._fd = os.dup(map_fd)
        self._mask = size - 1
        self._cons = mmap.mmap(self._fd, _PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._prod = mmap.mmap(
            self._fd, _PAGE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=_PAGE
        )
        self._data = memoryview(self._prod)[_PAGE:]
        self._on_record = on_record
        self._epoll = select.epoll()
        self._epoll.register(self._fd, select.EPOLLIN)

    def consume(self) -> int:
        """Read every record published so far; returns how many were delivered."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        data, mask, on_record, n = self._data, self._mask, self._on_record, 0
        try:
            while cons < prod:
                off = cons & mask
                length, _ = _REC_HDR.unpack_from(data, off)
                if length & _BUSY:
                    break  # reserved, not yet submitted
                cons += ((length & ~(_BUSY | _DISCARD)) + 8 + 7) & ~7
                if not length & _DISCARD:
                    n += 1
                    on_record(bytes(data[off + 8 : off + 8 + (length & ~(_BUSY | _DISCARD))]))
                if cons >= prod:
                    prod = _U64.unpack_from(self._prod, 0)[0]
        finally:
            _U64.pack_into(self._cons, 0, cons)  # even when on_record raised: it was read
        return n

    def poll(self, timeout_ms: int = -1) -> int:
        """Wait up to timeout_ms (-1: forever) for records, then consume them."""
        n = self.consume()
        if n:
            return n
        self._epoll.poll(-1 if timeout_ms < 0 else timeout_ms / 1000)
        return self.consume()

    def fileno(self) -> int:
        return self._epoll.fileno()

    def close(self) -> None:
        if self._fd >= 0:
            self._epoll.close()
            self._data.release()
            self._prod.close()
            self._cons.close()
            os.close(self._fd)
            self._fd = -1


class SpaRing:
    """spa_events: poll() calls on_record(SpaRecord) for each record; an exception of
    on_record propagates (after the records before it were delivered)."""

    def __init__(self, map_fd: int, on_record: Callable[[SpaRecord], None]):
        def deliver(raw: bytes) -> None:
            on_record(decode_spa_event(raw))

        self._ring = RingReader(map_fd, deliver)

    def poll(self, timeout_ms: int = -1) -> int:
        return self._ring.poll(timeout_ms)

    def fileno(self) -> int:
        return self._ring.fileno()

    def close(self) -> None:
        self._ring.close()
