"""The SPA ring buffers: spa_events (records the XDP program queued) and spa_samples (drop
samples for the log), decoded.

Its one concern is the record formats (abi.SPA_EVENT, abi.SPA_SAMPLE) and reading the rings.
A ring is read straight from its memory mapping (the kernel's BPF ring buffer ABI, as libbpf
does it): the consumer position page (read-write), then the producer position page and the
data area mapped twice (read-only), so a record that wraps around is still contiguous. No
callback crosses from C into Python per record, no bcc, no libbpf: a map fd is all it needs.

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
from spagate.gate.kernel.abi import (
    FWKNOP_EVENT_HEADER,
    SPA_EVENT_HEADER,
    SPA_KEY_NONE,
    SPA_SAMPLE,
    KernelReason,
    SpaPath,
)
from spagate.net import IPAddress, addr_from16

_HEADER = SPA_EVENT_HEADER.size
_COPIED = SPA_EVENT_HEADER.offset("copied")
_U16 = struct.Struct("=H")
_U64 = struct.Struct("=Q")
_REC_HDR = struct.Struct("=II")  # struct bpf_ringbuf_hdr: len (with flags), pg_off
_BUSY, _DISCARD = 1 << 31, 1 << 30
_PAGE = mmap.PAGESIZE
_PATHS = frozenset(int(p) for p in SpaPath)


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
    path: SpaPath = SpaPath.UNTAGGED  # how the kernel found the key
    ts_ns: int = 0  # CLOCK_MONOTONIC when the kernel queued it (0: unknown)


def decode_spa_event(raw: bytes) -> SpaRecord:
    """Decode one spa_events record (header + copied payload)."""
    src, dst, sport, dport, ifindex, length, copied, key, path, ts = SPA_EVENT_HEADER.unpack_from(
        raw
    )
    payload = raw[_HEADER : _HEADER + copied]
    return SpaRecord(
        payload,
        addr_from16(src),
        addr_from16(dst),
        sport,
        dport,
        ifindex,
        length,
        key,
        SpaPath(path) if path in _PATHS else SpaPath.NONE,
        ts,
    )


class DropSample(NamedTuple):
    """One dropped SPA packet the kernel sampled (spa_samples, struct spa_sample): at most
    SPA_SAMPLE_RATE per second and CPU, for bad MAC or tag, replay, bucket and budget drops.
    The source is as on the wire: spoofable unless the packet's MAC was valid."""

    ns: int  # CLOCK_MONOTONIC (the program's clock)
    reason: str  # a kernel reason label (KernelReason.label), e.g. spa_bad_mac
    src: IPAddress
    sport: int
    dport: int
    key_index: int | None  # identity slot when the kernel knew it (a tag hint, a valid MAC)
    ifindex: int
    path: SpaPath


def decode_spa_sample(raw: bytes) -> DropSample:
    ns, src, sport, dport, reason, key, ifindex, path, _ = SPA_SAMPLE.unpack_from(raw)
    try:
        label = KernelReason(reason).label
    except ValueError:
        label = f"reason_{reason}"
    return DropSample(
        ns,
        label,
        addr_from16(src),
        sport,
        dport,
        None if key == SPA_KEY_NONE else key,
        ifindex,
        SpaPath(path) if path in _PATHS else SpaPath.NONE,
    )


_FW_HEADER = FWKNOP_EVENT_HEADER.size


class FwknopRecord(NamedTuple):
    """One fwknop packet the program queued (fwknop_events)."""

    payload: bytes  # the UDP payload as received (base64 text)
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    ifindex: int


def decode_fwknop_event(raw: bytes) -> FwknopRecord:
    src, dst, sport, dport, ifindex, length = FWKNOP_EVENT_HEADER.unpack_from(raw)
    payload = raw[_FW_HEADER : _FW_HEADER + length]
    return FwknopRecord(payload, addr_from16(src), addr_from16(dst), sport, dport, ifindex)


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

    def consume(self, limit: int = 0) -> int:
        """Read the records published so far, at most limit of them (0: every one); returns
        how many were delivered."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        data, mask, on_record, n = self._data, self._mask, self._on_record, 0
        limit = limit or -1
        try:
            while cons < prod and n != limit:
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

    def map_fd(self) -> int:
        """The ring's map fd, for a caller's own epoll (readable: records are waiting)."""
        return self._fd

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


class FwknopRing:
    """fwknop_events: poll()/consume() call on_record(FwknopRecord) for each record."""

    def __init__(self, map_fd: int, on_record: Callable[[FwknopRecord], None]):
        self._ring = RingReader(map_fd, lambda raw: on_record(decode_fwknop_event(raw)))

    def consume(self, limit: int = 0) -> int:
        return self._ring.consume(limit)

    def map_fd(self) -> int:
        return self._ring.map_fd()

    def close(self) -> None:
        self._ring.close()


class SpaRing:
    """spa_events: poll() calls on_record(SpaRecord) for each record; an exception of
    on_record propagates (after the records before it were delivered)."""

    def __init__(self, map_fd: int, on_record: Callable[[SpaRecord], None]):
        def deliver(raw: bytes) -> None:
            on_record(decode_spa_event(raw))

        self._ring = RingReader(map_fd, deliver)

    def poll(self, timeout_ms: int = -1) -> int:
        return self._ring.poll(timeout_ms)

    def consume(self, limit: int = 0) -> int:
        return self._ring.consume(limit)

    def map_fd(self) -> int:
        return self._ring.map_fd()

    def fileno(self) -> int:
        return self._ring.fileno()

    def close(self) -> None:
        self._ring.close()


class SampleRing:
    """spa_samples: drain() returns every drop sample queued so far (never blocks). The kernel
    submits samples without waking anyone: read it from a loop that runs anyway."""

    def __init__(self, map_fd: int):
        self._got: list[DropSample] = []
        self._ring = RingReader(map_fd, lambda raw: self._got.append(decode_spa_sample(raw)))

    def drain(self) -> list[DropSample]:
        self._ring.consume()
        got, self._got = self._got, []
        return got

    def close(self) -> None:
        self._ring.close()
