"""Pinned state: the BPF filesystem and the maps pinned under a pin directory.

Its one concern is what lives under /sys/fs/bpf/<pin dir>: mounting bpffs, checking pinned
maps against this version's layouts before bcc reuses them (bcc does not compare layouts),
migrating a changed capacity, removing the pins. Never compiles, never attaches.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from enum import StrEnum
from pathlib import Path

from spagate.errors import SpagateError
from spagate.gate.kernel import bpfsys
from spagate.gate.kernel.abi import MAP_SPECS, MapSpec

BPFFS = Path("/sys/fs/bpf")
DEFAULT_PIN_DIR = BPFFS / "spagate"


class PinAction(StrEnum):
    """What prepare_pins() did with a map's pin."""

    KEPT = "kept"  # same layout and capacity: reused as it is
    CREATED = "created"  # no pin yet: bcc creates the map
    REPLACED = "replaced"  # another layout: unpinned, bcc creates a fresh map
    MIGRATED = "migrated"  # another capacity: entries copied into a new map


def ensure_bpffs() -> None:
    """Mount the BPF filesystem on /sys/fs/bpf if it is not mounted yet."""
    with open("/proc/mounts") as f:
        if any(line.split()[1:3] == [str(BPFFS), "bpf"] for line in f):
            return
    r = subprocess.run(
        ["mount", "-t", "bpf", "bpf", str(BPFFS)], capture_output=True, text=True, check=False
    )
    if r.returncode:
        raise SpagateError(f"cannot mount bpffs on {BPFFS}: {r.stderr.strip() or r.returncode}")


def _copy_entries(old_fd: int, new_fd: int, spec: MapSpec, capacity: int) -> int:
    vsize = bpfsys.value_buffer_size(spec.type, spec.value_size)
    n = 0
    for key in list(bpfsys.keys(old_fd, spec.key_size)):
        if n >= capacity:
            break
        val = bpfsys.lookup(old_fd, key, vsize)
        if val is None:
            continue
        try:
            bpfsys.update(new_fd, key, val)
        except OSError as e:  # E2BIG: an array index beyond the new size
            if e.errno not in (errno.E2BIG, errno.ENOSPC):
                raise
            continue
        n += 1
    return n


def prepare_pins(pin_dir: Path, capacities: dict[str, int]) -> dict[str, PinAction]:
    """Check pinned maps before bcc reuses them (it does not compare layouts).

    Layout changed: unpin (bcc then creates a fresh map). Capacity changed: create a map of
    the new size, copy the entries, re-pin. Returns what was done, by map.
    """
    pin_dir.mkdir(parents=True, exist_ok=True)
    actions = {}
    for name, spec in MAP_SPECS.items():
        path = pin_dir / name
        try:
            fd = bpfsys.obj_get(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise SpagateError(f"cannot open pinned map {path}: {e.strerror}") from None
            actions[name] = PinAction.CREATED
            continue
        try:
            info = bpfsys.map_info(fd)
            same_layout = (info.type, info.key_size, info.value_size, info.flags) == (
                spec.type,
                spec.key_size,
                spec.value_size,
                spec.flags,
            )
            if not same_layout:
                path.unlink()
                actions[name] = PinAction.REPLACED
            elif info.max_entries != capacities[name]:
                new = bpfsys.map_create(
                    spec.type, name, spec.key_size, spec.value_size, capacities[name], spec.flags
                )
                try:
                    _copy_entries(fd, new, spec, capacities[name])
                    path.unlink()
                    bpfsys.obj_pin(new, path)
                finally:
                    os.close(new)
                actions[name] = PinAction.MIGRATED
            else:
                actions[name] = PinAction.KEPT
        finally:
            os.close(fd)
    return actions


def unpin(pin_dir: str | os.PathLike) -> None:
    """Remove the pinned maps and the pin directory (the gate's state is lost)."""
    pin_dir = Path(pin_dir)
    if pin_dir.is_dir():
        shutil.rmtree(pin_dir)
