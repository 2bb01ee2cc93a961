"""ssh ProxyCommand: connect to every address at once, then hand the socket to ssh
(SCM_RIGHTS, for ProxyUseFdpass) or relay bytes over stdin/stdout."""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import stat
import threading
import time

from spagate.client.send import Target
from spagate.errors import SpagateError

# When (seconds after the SPA packet) to start a fresh attempt per address: the gate needs a
# moment to open, and a dropped SYN is otherwise only retransmitted after a second.
RETRY_AT = (0.0, 0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 1.7)
RETRY_EVERY = 0.5
MAX_PENDING_PER_TARGET = 6


def _retry_times():
    yield from RETRY_AT
    t = RETRY_AT[-1]
    while True:
        t += RETRY_EVERY
        yield t


def open_connection(targets: list[Target], port: int, timeout: float, host: str) -> socket.socket:
    """The first TCP connection to succeed among all targets, retried until timeout."""
    start = time.monotonic()
    deadline = start + timeout
    sel = selectors.DefaultSelector()
    pending: dict[Target, list[socket.socket]] = {t: [] for t in targets}
    errors: dict[Target, str] = {}
    schedule = _retry_times()
    next_at = start + next(schedule)
    winner: socket.socket | None = None
    try:
        while winner is None:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_at:
                for target in targets:
                    s = socket.socket(target.family, socket.SOCK_STREAM)
                    s.setblocking(False)
                    err = s.connect_ex(target.sockaddr(port))
                    if err == 0:
                        winner = s
                        break
                    if err in (errno.EINPROGRESS, errno.EAGAIN):
                        sel.register(s, selectors.EVENT_WRITE, target)
                        queue = pending[target]
                        queue.append(s)
                        if len(queue) > MAX_PENDING_PER_TARGET:
                            old = queue.pop(0)
                            sel.unregister(old)
                            old.close()
                    else:
                        errors[target] = os.strerror(err)
                        s.close()
                if winner is not None:
                    break
                next_at = start + next(schedule)
            wait = max(0.0, min(next_at, deadline) - time.monotonic())
            for key, _ in sel.select(wait):
                s, target = key.fileobj, key.data
                sel.unregister(s)
                pending[target].remove(s)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    winner = s
                    break
                errors[target] = os.strerror(err)
                s.close()
    finally:
        for queue in pending.values():
            for s in queue:
                if s is not winner:
                    s.close()
        sel.close()
    if winner is None:
        why = "; ".join(f"{t}: {errors.get(t, 'no answer')}" for t in targets)
        raise SpagateError(f"could not connect to {host} port {port} within {timeout:g} s ({why})")
    winner.setblocking(True)
    return winner


def unix_socket_on(fd: int) -> socket.socket | None:
    """A socket object for fd (duplicated) if it is a Unix domain socket."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    if s.family != socket.AF_UNIX:
        s.close()
        return None
    return s


def pass_fd(channel: socket.socket, conn: socket.socket) -> None:
    """Hand conn to the process at the other end of channel (ssh's ProxyUseFdpass)."""
    try:
        socket.send_fds(channel, [b"\0"], [conn.fileno()])
    except OSError as e:
        raise SpagateError(f"cannot pass the connection to ssh: {e.strerror or e}") from None


def relay(conn: socket.socket, in_fd: int = 0, out_fd: int = 1) -> None:
    """Copy in_fd -> conn and conn -> out_fd until the connection closes."""

    def upstream() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(in_fd, 65536):
                conn.sendall(data)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    try:
        while data := conn.recv(65536):
            view = memoryview(data)
            while view:
                view = view[os.write(out_fd, view) :]
    except BrokenPipeError:
        pass
    except ConnectionResetError as e:
        raise SpagateError(f"connection reset by peer: {e.strerror}") from None
    finally:
        conn.close()
