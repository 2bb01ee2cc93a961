"""The monitor (root, small): what must stay privileged, done on the worker's typed requests.

It runs the open-cmd/close-cmd hooks (bounded queue, never skipping one) and re-attaches the
gate's pinned program when its link was removed, or re-pins a link whose pin vanished. It never
parses a packet: its only input is spagate.gate.core.privsep requests from the worker (over a
socketpair under `spagate attach`, over a unix socket under systemd, where only the spagate
user may connect), each checked before anything is done. An attacker who owns the worker can
make it run the operator's own hooks for addresses of its choosing and re-attach the gate on
the configured interfaces: nothing else.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from pathlib import Path

from spagate.gate.core import privsep
from spagate.gate.core.config import GateConfig
from spagate.gate.core.eventlog import EventLog
from spagate.gate.kernel import bpfsys, link, pins
from spagate.gate.service.account import Account
from spagate.gate.service.hooks import Hooks

MAX_FDS = 1  # a Repin carries one link fd
STATS_EVERY_S = 1.0  # HookStats to the worker (it exports them as metrics)


class Monitor:
    def __init__(
        self,
        config: GateConfig,
        pin_dir: str,
        interfaces: tuple[str, ...],
        mode: str,
        log: EventLog,
        account: Account,
    ):
        self.config, self.pin_dir, self.interfaces = config, pin_dir, interfaces
        self.mode, self.log, self.account = mode, log, account
        self.hooks = Hooks(config.open_cmd, config.close_cmd, log)
        self.refused = 0
        self.reattached = 0
        self._stats_at = 0.0

    # -- requests ------------------------------------------------------------------------------

    def handle(self, data: bytes, fds: list[int], reply=None) -> None:
        """One request; reply(answer, fd) sends an answer back (a new link after Reattach)."""
        req = privsep.decode(data)
        try:
            if isinstance(req, privsep.Malformed):
                self._refuse(req.reason)
            elif isinstance(req, privsep.Opened):
                self.hooks.opened(req.ip, req.seconds)
            elif req.ifname not in self.interfaces:
                self._refuse(f"{req.ifname} is not a guarded interface")
            elif isinstance(req, privsep.Reattach):
                fd = self.reattach(req.ifname)
                if fd is not None:
                    try:
                        if reply is not None:
                            reply(privsep.Linked(req.ifname), fd)
                    finally:
                        os.close(fd)
            elif isinstance(req, privsep.Repin):
                self.repin(req.ifname, fds[0] if fds else -1)
        finally:
            for fd in fds:
                os.close(fd)

    def _refuse(self, why: str) -> None:
        self.refused += 1
        self.log.warning(f"monitor: refused a request from the worker: {why}")

    def _prog_id(self) -> tuple[int, int]:
        fd = bpfsys.obj_get(Path(self.pin_dir) / pins.PROG_PIN)
        return fd, bpfsys.prog_info(fd).id

    def reattach(self, ifname: str) -> int | None:
        """Put the pinned program back on ifname (a new link, or the link's program back).
        Returns an fd of the link now guarding it (for the worker), or None."""
        try:
            prog_fd, _ = self._prog_id()
        except OSError as e:
            self.log.error(f"monitor: cannot re-attach {ifname}: no pinned program ({e})")
            return None
        try:
            mode = link.attach_link(self.pin_dir, ifname, prog_fd, self.mode, False, self.log.info)
            pins.share(self.pin_dir, self.account.gid)
            self.reattached += 1
            self.log.info(f"monitor: re-attached the gate to {ifname} ({mode})")
            return link.pinned_link(self.pin_dir, ifname)
        except Exception as e:  # reported; the worker asks again at its next check
            self.log.error(f"monitor: cannot re-attach {ifname}: {e}")
            return None
        finally:
            os.close(prog_fd)

    def repin(self, ifname: str, fd: int) -> None:
        """Pin a link the worker still holds, once it is shown to be the gate's on ifname."""
        try:
            info = bpfsys.link_info(fd)
            prog_fd, prog_id = self._prog_id()
            os.close(prog_fd)
        except OSError as e:
            self._refuse(f"repin {ifname}: not a link ({e})")
            return
        if info.type != bpfsys.BPF_LINK_TYPE_XDP or info.prog_id != prog_id:
            self._refuse(f"repin {ifname}: link {info.id} is not the gate's")
            return
        if info.ifindex != link.ifindex_of(ifname):
            self._refuse(f"repin {ifname}: link {info.id} is on another interface")
            return
        pins.pin(fd, pins.link_pin(self.pin_dir, ifname))
        pins.share(self.pin_dir, self.account.gid)
        self.log.info(f"monitor: re-pinned the gate's link on {ifname}")

    # -- serving ------------------------------------------------------------------------------

    def serve(self, socks: list[socket.socket], timeout: float) -> list[socket.socket]:
        """Wait up to timeout for requests on socks and handle them; returns the sockets that
        closed. Runs the hooks' bookkeeping too."""
        closed = []
        ready, _, _ = select.select(socks, [], [], timeout) if socks else ([], [], [])
        if not socks:
            time.sleep(timeout)
        for s in ready:
            while True:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(s, privsep.MAX_MESSAGE + 1, MAX_FDS)
                except BlockingIOError:
                    break
                except OSError:
                    closed.append(s)
                    break
                if not data and not fds:
                    closed.append(s)
                    break

                def reply(answer, fd, s=s):
                    with contextlib.suppress(OSError):
                        socket.send_fds(s, [privsep.encode(answer)], [fd])

                self.handle(data, fds, reply)
        self.hooks.poll()
        now = time.monotonic()
        if now - self._stats_at >= STATS_EVERY_S:
            self._stats_at = now
            stats = privsep.encode(self.stats())
            for s in socks:
                if s not in closed:
                    with contextlib.suppress(OSError):  # a full or closed socket: next time
                        s.send(stats)
        return closed

    def stats(self) -> privsep.HookStats:
        h = self.hooks
        return privsep.HookStats(h.depth, h.running, h.started, h.failed, self.reattached,
                                 self.refused)  # fmt: skip


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def listen(path: str, account: Account) -> socket.socket:
    """The systemd-mode socket: root:spagate 0660 in a directory only they can enter."""
    p = Path(path)
    p.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chown(p.parent, 0, account.gid)
    with contextlib.suppress(FileNotFoundError):
        p.unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    s.bind(path)
    os.chown(path, 0, account.gid)
    os.chmod(path, 0o660)
    s.listen(4)
    s.setblocking(False)
    return s


def serve_forever(monitor: Monitor, path: str, stopping) -> None:
    """`spagate monitor` under systemd: accept the worker's connections (the spagate user or
    root only) and serve them until stopping() is true."""
    server = listen(path, monitor.account)
    conns: list[socket.socket] = []
    try:
        while not stopping():
            ready, _, _ = select.select([server], [], [], 0)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    conn, _ = server.accept()
                    if peer_uid(conn) not in (0, monitor.account.uid):
                        monitor._refuse(f"a connection from uid {peer_uid(conn)}")
                        conn.close()
                    else:
                        conn.setblocking(False)
                        conns.append(conn)
            for c in monitor.serve(conns, 0.2):
                conns.remove(c)
                c.close()
    finally:
        monitor.hooks.shutdown()
        for c in conns:
            c.close()
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
