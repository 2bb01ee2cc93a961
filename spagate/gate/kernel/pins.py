"""Pinned state: the BPF filesystem and what is pinned under a pin directory.

Its one concern is what lives under /sys/fs/bpf/<pin dir>: mounting bpffs (never a private
one), refusing pins someone else planted, sharing them with the worker's group, checking pinned
maps against this version's layouts before bcc reuses them (bcc does not compare layouts),
migrating a changed capacity, removing the pins. Never compiles, never attaches.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
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


# Pins the loader makes besides the maps bcc pins: the program array (tail calls keep working
# with no process attached), the ring buffers (the worker opens them), the program (the monitor
# re-attaches it without compiling) and one BPF link per guarded interface.
PROG_PIN = "prog_xdp_gate"
EXTRA_PINS = ("spa_progs", "spa_events", "fwknop_events", "spa_samples", PROG_PIN)
LINK_PREFIX = "link_"


def link_pin(pin_dir: str | os.PathLike, ifname: str) -> Path:
    """link_<ifname>, with '%' and '.' escaped: bpffs refuses names holding a dot (EPERM)."""
    escaped = ifname.replace("%", "%25").replace(".", "%2E")
    return Path(pin_dir) / f"{LINK_PREFIX}{escaped}"


def link_ifname(pin_name: str) -> str:
    return pin_name[len(LINK_PREFIX) :].replace("%2E", ".").replace("%25", "%")


def _bpffs_device(mountinfo: str) -> str | None:
    """The device (major:minor) of the bpffs mounted on /sys/fs/bpf in a mountinfo, or None."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if len(f) > 4 and f[4] == str(BPFFS) and " - bpf " in line:
            return f[2]
    return None


def bpffs_mounted() -> bool:
    return _bpffs_device("/proc/self/mountinfo") is not None


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def private_bpffs() -> bool:
    """True when /sys/fs/bpf here is not the bpffs of the mount namespace we were started
    from: `ip netns exec` mounts a fresh one for each command. Pins made there are seen by
    nobody else (not `spagate status`, not the next start). The nearest ancestor in another
    mount namespace is the reference (PID 1 may be out of sight); a sandbox that shares the
    host's bpffs (systemd's ProtectSystem=) has the same device and passes."""
    try:
        mine = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False
    pid = _parent(os.getpid())
    while pid > 0:
        try:
            theirs = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            return False  # out of sight: nothing to compare with
        if theirs != mine:
            # Differs, or none here while there is one there (we would mount a private one).
            theirs_dev = _bpffs_device(f"/proc/{pid}/mountinfo")
            return theirs_dev is not None and _bpffs_device("/proc/self/mountinfo") != theirs_dev
        pid = _parent(pid)
    return False


def ensure_bpffs() -> None:
    """Mount the BPF filesystem on /sys/fs/bpf (mode 0700) if it is not mounted yet. Refuses
    a bpffs private to this process (see private_bpffs)."""
    if private_bpffs():
        raise SpagateError(
            f"{BPFFS} here is private to this process (ip netns exec mounts a fresh one for "
            "each command): pins made here would be invisible to `spagate status` and to a "
            "restart; run it with `nsenter --net=/run/netns/NAME spagate ...` instead"
        )
    if bpffs_mounted():
        return
    r = subprocess.run(
        ["mount", "-t", "bpf", "-o", "mode=0700", "bpf", str(BPFFS)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode:
        raise SpagateError(f"cannot mount bpffs on {BPFFS}: {r.stderr.strip() or r.returncode}")


def _trusted(st: os.stat_result, uids: frozenset[int], gids: frozenset[int]) -> str | None:
    """Why this file is not safe to trust, or None."""
    mode = st.st_mode & 0o7777
    if st.st_uid not in uids:
        return f"is owned by uid {st.st_uid}"
    if mode & 0o002:
        return f"is writable by others (mode {mode:04o})"
    if mode & 0o020 and st.st_gid not in gids:
        return f"is writable by group {st.st_gid} (mode {mode:04o})"
    return None


def check_pin_dir(pin_dir: str | os.PathLike, uids: frozenset[int], gids: frozenset[int]) -> None:
    """Refuse a pin directory, or an entry in it, that someone else could have planted or can
    change: owned by a uid outside uids, writable by others, or group-writable for a group
    outside gids. A missing pin directory is fine (the loader creates it)."""
    pin_dir = Path(pin_dir)
    try:
        is_dir = stat.S_ISDIR(pin_dir.lstat().st_mode)  # a symlink is not a directory here
    except FileNotFoundError:
        return
    paths = [pin_dir, *sorted(pin_dir.iterdir())] if is_dir else [pin_dir]
    for path in paths:
        why = "is not a directory" if path == pin_dir and not is_dir else None
        why = why or _trusted(path.lstat(), uids, gids)
        if why:
            raise SpagateError(
                f"{path} {why}: spagate trusts only pins of root or its own user; if you did "
                f"not make it, remove it (rm -r {pin_dir}) and start again"
            )


def make_pin_dir(pin_dir: str | os.PathLike, gid: int | None) -> None:
    """Create the pin directory (0700 root, or 0750 root:gid so the worker can open pins)."""
    pin_dir = Path(pin_dir)
    pin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    share(pin_dir, gid)


def share(pin_dir: str | os.PathLike, gid: int | None) -> None:
    """Give the pin directory and every pin to group gid (read-write pins, a directory it may
    enter but not change): the unprivileged worker opens them, cannot rename or replace them."""
    pin_dir = Path(pin_dir)
    os.chown(pin_dir, 0, 0 if gid is None else gid)
    pin_dir.chmod(0o700 if gid is None else 0o750)
    for path in pin_dir.iterdir():
        os.chown(path, 0, 0 if gid is None else gid, follow_symlinks=False)
        path.chmod(0o600 if gid is None else 0o660)


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


def pin(fd: int, path: Path) -> None:
    """Pin fd at path, replacing what is pinned there."""
    path.unlink(missing_ok=True)
    bpfsys.obj_pin(fd, path)


def unpin(pin_dir: str | os.PathLike) -> None:
    """Remove the pinned maps and the pin directory (the gate's state is lost)."""
    pin_dir = Path(pin_dir)
    if pin_dir.is_dir():
        shutil.rmtree(pin_dir)
