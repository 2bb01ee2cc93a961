"""The kernel's drop samples, for the worker: who sent what the XDP program dropped.

The XDP program counts every drop; for the SPA port's drops (bad MAC, replay duplicate,
bucket, budget) it also queues a rate-limited sample with the source. The kernel side (the
sample map or ring and its record decoder) lives in spagate.gate.kernel.drop_samples; this
adapter is all the worker sees of it:

    reader = drop_samples.open_samples(pin_dir)   # before the worker drops root; None when
                                                   # the loaded program has no sample ring
    reader.samples()  -> iterable of records, each with the attributes
                         reason  (KernelReason value or label)
                         src     (16-byte map address, or an IPv4Address/IPv6Address)
                         sport   (int)
                         identity or key (identity index = spa_keys slot, a name, -1/None)
                         ts_ns or ts (CLOCK_MONOTONIC ns)
                         what was queued since the last call, without blocking
    reader.close()

DropSamples.samples() turns those into spagate.gate.core.samples.Sample; a record that is
not one is counted (malformed) and skipped, never raised: the gate keeps guarding.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterable, Sequence
from typing import Protocol

from spagate.gate.core.samples import Sample, to_sample

KERNEL_MODULE = "spagate.gate.kernel.drop_samples"


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


def kernel_samples_available() -> bool:
    """Whether this spagate has the kernel side of the drop samples."""
    return importlib.util.find_spec(KERNEL_MODULE) is not None


def open_drop_samples(pin_dir: str | os.PathLike, identities: Sequence[str]) -> DropSamples | None:
    """The drop samples of the gate on pin_dir, or None (no kernel side, or no sample ring
    in the loaded program)."""
    if not kernel_samples_available():
        return None
    reader = importlib.import_module(KERNEL_MODULE).open_samples(pin_dir)
    return None if reader is None else DropSamples(reader, identities)
