"""The kernel's drop samples, for the worker: who sent what the XDP program dropped.

The XDP program counts every drop; for the SPA port's drops (bad MAC or tag, replay
duplicate, bucket, budget) it also queues a rate-limited sample with the source in the pinned
ring spa_samples (spagate.gate.kernel.ringbuf.SampleRing decodes it). This adapter is all the
worker sees of it: open_drop_samples() before the worker drops root, then samples() from its
loop (never blocks), close() at the end. DropSamples.samples() turns the kernel's records into
spagate.gate.core.samples.Sample; a record that is not one is counted (malformed) and
skipped, never raised: the gate keeps guarding.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from spagate.gate.core.samples import Sample, to_sample


class Reader(Protocol):
    def samples(self) -> Iterable[object]: ...
    def close(self) -> None: ...


class DropSamples:
    def __init__(self, reader: Reader, identities: Sequence[str]):
        self._reader, self._identities = reader, tuple(identities)
        self.read = 0
        self.malformed = 0

    def samples(self) -> list[Sample]:
        out = []
        for raw in self._reader.samples():
            try:
                out.append(to_sample(raw, self._identities))
            except (ValueError, TypeError, AttributeError):
                self.malformed += 1
        self.read += len(out)
        return out

    def close(self) -> None:
        self._reader.close()


class _RingReader:
    def __init__(self, ring):
        self._ring = ring

    def samples(self):
        return self._ring.drain()

    def close(self) -> None:
        self._ring.close()


def open_drop_samples(pin_dir: str | os.PathLike, identities: Sequence[str]) -> DropSamples | None:
    """The drop samples of the gate on pin_dir (its pinned spa_samples ring), or None when
    the loaded program pinned none."""
    from spagate.gate.kernel import bpfsys
    from spagate.gate.kernel.ringbuf import SampleRing

    path = Path(pin_dir) / "spa_samples"
    if not path.exists():
        return None
    fd = bpfsys.obj_get(path)
    try:
        ring = SampleRing(fd)
    finally:
        os.close(fd)
    return DropSamples(_RingReader(ring), identities)
