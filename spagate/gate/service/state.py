"""The run directory: the one-gate lock and the state file the worker publishes for `status`.

/run/spagate/<pin dir name>.lock  flock()ed while a gate runs on that pin directory: the lock,
                                  not a PID, says who is alive (a stale file or a reused PID
                                  never blocks a restart; the kernel drops the lock of a dead
                                  process)
/run/spagate/<pin dir name>.json  what the worker attached, its verdict counts, its pid (for
                                  its network namespace): written atomically (temp file, rename)

The state file is never the truth about attachment: `status` asks the kernel.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from pathlib import Path

from spagate.errors import SpagateError

# SPAGATE_RUN_DIR moves it (a second gate setup on one host, the tests of a full /run).
STATE_DIR = Path(os.environ.get("SPAGATE_RUN_DIR", "/run/spagate"))


def gate_name(pin_dir: str | os.PathLike) -> str:
    """The name of the run files of the gate on pin_dir: its path under /sys/fs/bpf with "/"
    as "-" (the default pin dir /sys/fs/bpf/spagate is "spagate")."""
    p = Path(pin_dir)
    try:
        rel = p.relative_to("/sys/fs/bpf")
    except ValueError:
        return p.name
    return str(rel).replace("/", "-")


def _open_regular(path: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """An fd of path if it is a regular file (the run directory is the worker's: a FIFO or a
    link planted there must not hang or redirect root's `status`, loader or supervisor)."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


def _read_regular(path: str | os.PathLike) -> str:
    fd = _open_regular(path)
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20).decode()


def state_path(pin_dir: str | os.PathLike) -> Path:
    """Where a daemon using `pin_dir` says what it attached (read by `spagate status`)."""
    return STATE_DIR / (gate_name(pin_dir) + ".json")


def attached_path(pin_dir: str | os.PathLike) -> Path:
    return STATE_DIR / (gate_name(pin_dir) + ".attached.json")


def write_attached(pin_dir: str | os.PathLike, modes: dict[str, str]) -> None:
    """What the loader attached, in which mode (the worker shows it; netlink it has not).
    The loader is root and the run directory is writable by the worker's group (systemd's
    RuntimeDirectory, root:spagate 0770): the file is written into a fresh temp file
    (O_EXCL, which never follows a link the worker may have planted), then renamed."""
    path = attached_path(pin_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(json.dumps(modes))
        tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_attached(pin_dir: str | os.PathLike) -> dict[str, str]:
    try:
        modes = json.loads(_read_regular(attached_path(pin_dir)))
    except (OSError, ValueError):
        return {}
    return modes if isinstance(modes, dict) else {}


def lock_path(pin_dir: str | os.PathLike) -> Path:
    return STATE_DIR / (gate_name(pin_dir) + ".lock")


def lock_holder(pin_dir: str | os.PathLike) -> int | None:
    """The pid that holds the gate's lock (/proc/locks), or None."""
    try:
        ino = os.stat(lock_path(pin_dir)).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[5].split(":")[-1] == str(ino):
            return int(f[4])
    return None


def stop_gate(pin_dir: str | os.PathLike, timeout: float = 20.0) -> bool:
    """SIGTERM the gate holding pin_dir's lock and wait for the lock to go; True if it did."""
    import signal
    import time

    pid = lock_holder(pin_dir)
    if pid is None:
        return not lock_held(pin_dir)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while lock_held(pin_dir):
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def make_run_dir(uid: int | None = None, gid: int | None = None) -> None:
    """/run/spagate, 0750, owned by the worker's user (it writes the state file there)."""
    STATE_DIR.mkdir(mode=0o750, parents=True, exist_ok=True)
    if uid is not None:
        os.chown(STATE_DIR, uid, gid if gid is not None else -1)
    STATE_DIR.chmod(0o750)


def take_lock(pin_dir: str | os.PathLike) -> int:
    """Take the gate's lock for pin_dir (exclusive, not waiting); returns its fd (keep it open,
    pass it on to a child to share it). SpagateError when another gate holds it."""
    path = lock_path(pin_dir)
    fd = _open_regular(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        other = read_state(pin_dir) or {}
        ifaces = ", ".join(other.get("interfaces") or ())
        who = f" (pid {other['pid']}, {ifaces})" if other.get("pid") else ""
        raise SpagateError(
            f"a gate is already running{who} with pin dir {pin_dir}: stop it first"
        ) from None
    return fd


def lock_held(pin_dir: str | os.PathLike) -> bool:
    """True while some process holds the gate's lock for pin_dir (the worker is alive)."""
    try:
        fd = _open_regular(lock_path(pin_dir))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def write_state(pin_dir: str | os.PathLike, state: dict) -> None:
    """Replace the state file atomically; raises OSError (the caller decides what that means)."""
    path = state_path(pin_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(state))
        tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def remove_state(pin_dir: str | os.PathLike) -> None:
    with contextlib.suppress(OSError):
        state_path(pin_dir).unlink()


def state_age(pin_dir: str | os.PathLike) -> float | None:
    """Seconds since the worker last published (the state file's mtime: it rewrites the
    file once a second and, when it cannot, touches it), or None without a state file."""
    try:
        return max(0.0, time.time() - os.stat(state_path(pin_dir)).st_mtime)
    except OSError:
        return None


def touch_state(pin_dir: str | os.PathLike) -> None:
    """The heartbeat alone (a full /run takes no new state file, but still a new mtime)."""
    with contextlib.suppress(OSError):
        os.utime(state_path(pin_dir))


def read_state(pin_dir: str | os.PathLike) -> dict | None:
    """The state file, with "stale": True when no gate holds the lock."""
    try:
        state = json.loads(_read_regular(state_path(pin_dir)))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    if not lock_held(pin_dir):
        state["stale"] = True
    return state
